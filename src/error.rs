//! The error type shared by every lock in the crate.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::holder::HeldBy;
use crate::Holder;

/// What went wrong, in a form a program can match on.
///
/// Obtained from [`Error::kind`]. The list may grow in later releases, so a `match` needs a
/// wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The lock was still held elsewhere when the acquisition's time limit ran out.
    ///
    /// Converts to [`io::ErrorKind::TimedOut`].
    Timeout,
    /// The lock is held elsewhere and the call was a single attempt
    /// ([`FileLock::try_acquire`](crate::FileLock::try_acquire)).
    ///
    /// Converts to [`io::ErrorKind::WouldBlock`].
    WouldBlock,
    /// The operating system refused access to the lock file or its directory.
    PermissionDenied,
    /// A component of the path does not exist and could not be created.
    NotFound,
    /// The path names something other than a regular file: a directory, a symbolic link, a
    /// FIFO, a device or a socket.
    NotAFile,
    /// An argument was rejected before any I/O: an empty path, a NUL byte, an invalid option.
    InvalidInput,
    /// Taking this lock in this thread would wait for a lock the same thread already holds.
    Deadlock,
    /// The platform or file system cannot lock files (for example `flock` returned `ENOSYS`).
    Unsupported,
    /// A soft lock found state on disk it will not interpret: a strict lock's claim
    /// directory in a state no writer produces, or a file system that lacks what the
    /// protocol needs (no-replace hard links). Waiting would not help.
    Protocol,
    /// A [`SoftFileLease`](crate::SoftFileLease) found a live lease on its path published
    /// with a different duration; every contender for a path must agree on it.
    LeaseMismatch,
    /// An [`EtcdLock`](crate::EtcdLock) waiter's own lease ended before it got the lock:
    /// etcd could not be reached for the lease's TTL, or the lease was revoked. (A hold that
    /// is lost is reported by the guard instead.)
    ///
    /// Converts to [`io::ErrorKind::ConnectionAborted`].
    LeaseLost,
    /// Any other I/O error; [`Error::source`](std::error::Error::source) has the details.
    Io,
}

impl ErrorKind {
    fn io_kind(self) -> io::ErrorKind {
        match self {
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::WouldBlock => io::ErrorKind::WouldBlock,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::NotAFile | ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::Deadlock => io::ErrorKind::Deadlock,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::LeaseMismatch => io::ErrorKind::InvalidInput,
            ErrorKind::LeaseLost => io::ErrorKind::ConnectionAborted,
            ErrorKind::Io => io::ErrorKind::Other,
        }
    }
}

/// An error from acquiring or releasing a lock.
///
/// Every error names the lock's path, and printing it gives a sentence a person can act on:
///
/// ```text
/// timed out after 2.0s waiting for the lock on "/tmp/build.lock"
/// cannot lock "/tmp/build.lock": permission denied (os error 13)
/// cannot lock "/tmp/cache": it is a directory
/// ```
///
/// The underlying I/O error, when there is one, is returned by
/// [`source`](std::error::Error::source). An `Error` converts into [`std::io::Error`], so `?`
/// works in functions that return `io::Result`.
///
/// # Examples
///
/// ```
/// use async_filelock::{ErrorKind, FileLock};
///
/// let dir = std::env::temp_dir().join("async-filelock-doc-error");
/// let lock = FileLock::new(dir.join("demo.lock"));
/// let guard = lock.try_acquire()?;
///
/// // A second attempt on the same path while the guard lives is told the lock is taken.
/// let err = FileLock::new(dir.join("demo.lock")).try_acquire().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::WouldBlock);
/// assert_eq!(err.path(), Some(dir.join("demo.lock").as_path()));
/// drop(guard);
/// # Ok::<(), async_filelock::Error>(())
/// ```
pub struct Error {
    repr: Box<Repr>,
}

/// What the crate was doing when the error happened; it opens the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Lock,
    Release,
    Configure,
}

struct Repr {
    kind: ErrorKind,
    action: Action,
    path: Option<PathBuf>,
    detail: Option<Cow<'static, str>>,
    waited: Option<Duration>,
    /// For a timeout or a refused attempt: who holds the lock, where known.
    holder: Option<HeldBy>,
    source: Option<io::Error>,
}

impl Error {
    fn new(kind: ErrorKind) -> Error {
        Error {
            repr: Box::new(Repr {
                kind,
                action: Action::Lock,
                path: None,
                detail: None,
                waited: None,
                holder: None,
                source: None,
            }),
        }
    }

    pub(crate) fn during(mut self, action: Action) -> Error {
        self.repr.action = action;
        self
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Error {
        self.repr.path = Some(path.to_path_buf());
        self
    }

    pub(crate) fn timeout(path: &Path, waited: Duration) -> Error {
        let mut e = Error::new(ErrorKind::Timeout).with_path(path);
        e.repr.waited = Some(waited);
        e
    }

    /// Names who holds the lock (for a timeout or a refused single attempt).
    pub(crate) fn with_holder(mut self, holder: Option<HeldBy>) -> Error {
        self.repr.holder = holder;
        self
    }

    pub(crate) fn protocol(path: &Path, detail: impl Into<Cow<'static, str>>) -> Error {
        let mut e = Error::new(ErrorKind::Protocol).with_path(path);
        e.repr.detail = Some(detail.into());
        e
    }

    pub(crate) fn lease_mismatch(path: &Path, theirs: f64, ours: f64) -> Error {
        use crate::soft::record::py_float_repr as repr;
        let mut e = Error::new(ErrorKind::LeaseMismatch).with_path(path);
        e.repr.detail = Some(Cow::Owned(format!(
            "it holds a lease of {}s but this contender configured {}s; every contender for a \
             path must agree on the lease duration",
            repr(theirs),
            repr(ours)
        )));
        e
    }

    /// An etcd waiter's lease ended before it got the lock.
    #[cfg(feature = "etcd")]
    pub(crate) fn lease_lost(path: &Path, detail: String, source: Option<io::Error>) -> Error {
        let mut e = Error::new(ErrorKind::LeaseLost).with_path(path);
        e.repr.detail = Some(Cow::Owned(detail));
        e.repr.source = source;
        e
    }

    /// Adds words to an error (an I/O error's context, say).
    pub(crate) fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Error {
        self.repr.detail = Some(detail.into());
        self
    }

    /// `here`: the blocker is a holder or an earlier waiter in this process.
    pub(crate) fn would_block(path: &Path, here: bool) -> Error {
        let mut e = Error::new(ErrorKind::WouldBlock).with_path(path);
        if here {
            e.repr.detail = Some(Cow::Borrowed(
                "another task or thread in this process holds it or is waiting for it",
            ));
        }
        e
    }

    pub(crate) fn invalid(detail: impl Into<Cow<'static, str>>) -> Error {
        let mut e = Error::new(ErrorKind::InvalidInput);
        e.repr.detail = Some(detail.into());
        e
    }

    pub(crate) fn not_a_file(path: &Path, what: &'static str) -> Error {
        let mut e = Error::new(ErrorKind::NotAFile).with_path(path);
        e.repr.detail = Some(Cow::Borrowed(what));
        e
    }

    pub(crate) fn deadlock(path: &Path, why: &'static str) -> Error {
        let mut e = Error::new(ErrorKind::Deadlock).with_path(path);
        e.repr.detail = Some(Cow::Borrowed(why));
        e
    }

    /// Wraps an I/O error from an operation on `path`, choosing the kind from the error.
    pub(crate) fn io(path: &Path, source: io::Error) -> Error {
        let kind = match source.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                ErrorKind::PermissionDenied
            }
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidFilename
            | io::ErrorKind::NotADirectory => ErrorKind::InvalidInput,
            io::ErrorKind::IsADirectory => ErrorKind::NotAFile,
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        let mut e = Error::new(kind).with_path(path);
        e.repr.source = Some(source);
        e
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.repr.kind
    }

    /// The path of the lock this error is about.
    ///
    /// Every error the crate returns today names its lock's path; the `Option` leaves room
    /// for errors that concern no single lock.
    pub fn path(&self) -> Option<&Path> {
        self.repr.path.as_deref()
    }

    /// For a [`Timeout`](ErrorKind::Timeout), how long the acquisition waited.
    pub fn waited(&self) -> Option<Duration> {
        self.repr.waited
    }

    /// For a [`Timeout`](ErrorKind::Timeout) or [`WouldBlock`](ErrorKind::WouldBlock): who
    /// holds the lock, in words, where that is known.
    ///
    /// - A hard lock ([`FileLock`](crate::FileLock), [`RwFileLock`](crate::RwFileLock)) on
    ///   Linux: the processes the OS names, as [`holders`](Error::holders) lists them, such as
    ///   `"pid 4242: cargo build"`.
    /// - A soft lock: a holder this host cannot probe, such as `"pid 7 on build-host"` (a
    ///   marker from another host, which is never broken automatically). A same-host holder
    ///   is not named: it is alive, or its marker would have been broken.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::FileLock;
    ///
    /// let path = std::env::temp_dir().join("async-filelock-doc-error-holder.lock");
    /// // An OS lock outside this crate: to the crate it looks like another process's.
    /// let file = std::fs::File::create(&path)?;
    /// file.lock()?;
    /// let err = FileLock::new(&path).try_acquire().unwrap_err();
    /// if cfg!(target_os = "linux") {
    ///     let pid = std::process::id();
    ///     assert!(err.holder().unwrap().starts_with(&format!("pid {pid}")), "{err}");
    ///     assert_eq!(err.holders()[0].pid(), pid);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn holder(&self) -> Option<&str> {
        self.repr.holder.as_ref().map(HeldBy::text)
    }

    /// For a [`Timeout`](ErrorKind::Timeout) or [`WouldBlock`](ErrorKind::WouldBlock) on a
    /// hard lock: the processes the operating system says held the lock when the acquisition
    /// gave up (see [`Holder`] for what that list can and cannot tell). Empty when that is
    /// not known: on platforms other than Linux, for soft locks, when the holder is another
    /// task or thread of this process that has not reached the OS lock, or when the holder
    /// let go in the meantime.
    pub fn holders(&self) -> &[Holder] {
        self.repr.holder.as_ref().map_or(&[], HeldBy::list)
    }

    /// The operating-system error code behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.repr.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &*self.repr;
        let path = r.path.as_deref().unwrap_or(Path::new(""));
        match r.kind {
            ErrorKind::Timeout => {
                let waited = r.waited.unwrap_or_default();
                write!(
                    f,
                    "timed out after {:.1?} waiting for the lock on {:?}",
                    waited, path
                )?;
                if let Some(HeldBy::Processes { text, .. }) = &r.holder {
                    write!(f, " (held by {text})")?;
                }
            }
            ErrorKind::WouldBlock => {
                write!(f, "the lock on {path:?} is held elsewhere")?;
                if let Some(HeldBy::Processes { text, .. }) = &r.holder {
                    write!(f, ", by {text}")?;
                }
            }
            ErrorKind::LeaseMismatch => write!(f, "cannot take the lease on {path:?}")?,
            ErrorKind::Protocol => write!(f, "invalid soft-lock state at {path:?}")?,
            _ => match r.action {
                Action::Lock => write!(f, "cannot lock {path:?}")?,
                Action::Release => write!(f, "cannot release the lock on {path:?}")?,
                Action::Configure => write!(f, "invalid options for the lock on {path:?}")?,
            },
        }
        if let Some(detail) = &r.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(HeldBy::Unprobeable(holder)) = &r.holder {
            write!(f, "; it is held by {holder}, which this host cannot probe")?;
        }
        if let Some(source) = &r.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &*self.repr;
        let mut d = f.debug_struct("Error");
        d.field("kind", &r.kind);
        if let Some(path) = &r.path {
            d.field("path", path);
        }
        if let Some(detail) = &r.detail {
            d.field("detail", detail);
        }
        if let Some(waited) = &r.waited {
            d.field("waited", waited);
        }
        if let Some(holder) = &r.holder {
            d.field("holder", &holder.text());
        }
        if let Some(source) = &r.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.repr
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    /// Keeps the kind: a [`Timeout`](ErrorKind::Timeout) becomes
    /// [`TimedOut`](io::ErrorKind::TimedOut), [`WouldBlock`](ErrorKind::WouldBlock) stays
    /// [`WouldBlock`](io::ErrorKind::WouldBlock), and so on. The original error is kept as the
    /// payload, so its message and path survive.
    fn from(err: Error) -> io::Error {
        io::Error::new(err.kind().io_kind(), err)
    }
}
