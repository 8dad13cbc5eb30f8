//! [`FileLock`], its options, and the [`Acquire`] future.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::acquire::{Limit, LockKind, WaitLoop};
use crate::error::Action;
use crate::holder::HeldBy;
use crate::local::Local;
use crate::trace::warning;
use crate::wait_hook::{WaitHook, WaitInfo};
use crate::{soft, sys, Backoff, Error, FileLockGuard};

/// A cross-process lock on a file, acquired without blocking the async runtime.
///
/// The lock is an OS file lock (`flock` on Unix, `LockFileEx` on Windows) on the file at the
/// given path, which is created (with its parent directories) on first use. It excludes
/// other processes, and inside one process it excludes other tasks and threads, whether they
/// use this `FileLock`, a clone of it, or another `FileLock` for the same path.
///
/// `FileLock::new` does no I/O. The lock is cheap to clone (clones share their options) and is
/// `Send + Sync`, so one value can be shared by many tasks.
///
/// # Examples
///
/// ```
/// use async_filelock::FileLock;
///
/// # futures_lite::future::block_on(async {
/// let lock = FileLock::new(std::env::temp_dir().join("async-filelock-doc-lock.lock"));
/// {
///     let _guard = lock.acquire().await?;
///     // Only one process (and one task) at a time runs here.
/// } // The guard is dropped: the lock is released.
///
/// // Readers can share it.
/// let a = lock.acquire_shared().await?;
/// let b = lock.acquire_shared().await?;
/// assert!(a.is_shared() && b.is_shared());
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct FileLock {
    pub(crate) hard: Arc<Hard>,
}

/// The lock kind behind [`FileLock`]: an OS lock on a file.
pub(crate) struct Hard {
    /// The path as the user gave it, and once resolved, the absolute path and in-process
    /// queue, fixed at the first acquisition.
    place: Place,
    options: Options,
    /// The file system could not `flock` and the lock fell back to a soft lock: later
    /// attempts skip the OS lock.
    soft: AtomicBool,
    /// Watches a soft marker for change (used after a fallback).
    watch: soft::Watch,
    /// The lock file kept open between holds (see [`FileLockBuilder::keep_open`]); `None`
    /// when that is off, or with delete-on-release (a deleted file is not worth keeping).
    cache: Option<sys::Cache>,
}

impl Hard {
    fn with_options(path: &Path, options: Options) -> Hard {
        let cache = (options.keep_open && !options.delete_on_release).then(sys::Cache::default);
        Hard {
            place: Place::new(path),
            options,
            soft: AtomicBool::new(false),
            watch: soft::Watch::default(),
            cache,
        }
    }

    /// An OS lock that never falls back to a marker (a marker cannot be shared), for the
    /// files of a [`RwFileLock`](crate::RwFileLock).
    pub(crate) fn os_only(
        path: &Path,
        timeout: Option<Duration>,
        backoff: Backoff,
        mode: Option<u32>,
    ) -> Hard {
        Hard::with_options(
            path,
            Options {
                timeout,
                backoff,
                mode,
                delete_on_release: false,
                fallback: SoftFallback::Never,
                // The reader/writer lock calls its own.
                wait_hook: None,
                keep_open: true,
            },
        )
    }
}

/// What a held [`FileLock`] holds: the OS lock, or (after a fallback) a soft marker.
#[derive(Debug)]
pub(crate) enum HardHeld {
    Os(sys::Held),
    Soft(soft::marker::Marker),
}

impl HardHeld {
    /// Gives the lock up but keeps an OS lock's file open in `keep` for the next attempt.
    pub(crate) fn unlock_into(self, keep: &mut sys::Keep) {
        match self {
            HardHeld::Os(held) => held.unlock_into(keep),
            HardHeld::Soft(marker) => drop(marker),
        }
    }

    pub(crate) fn release(
        self,
        path: &Path,
        delete: bool,
        cache: Option<&sys::Cache>,
    ) -> Result<(), Error> {
        match self {
            HardHeld::Os(held) => held.release(path, delete, cache),
            HardHeld::Soft(marker) => marker.release(),
        }
    }
}

/// When a [`FileLock`] falls back to a soft lock (a marker file, see
/// [`SoftFileLock`](crate::SoftFileLock)) because the file system cannot take OS locks.
///
/// A soft lock is always exclusive: shared acquisitions of a lock that fell back exclude each
/// other. A marker is removed on release, and a stale one (its owner provably dead) is
/// broken, as [`SoftFileLock`](crate::SoftFileLock) describes. A `tracing` warning marks the
/// moment of the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SoftFallback {
    /// Never: the OS error is returned.
    Never,
    /// When `flock` fails with `ENOSYS` (the file system has no lock operation at all, as some
    /// FUSE file systems), as Python filelock does. The default.
    #[default]
    OnNoSys,
    /// Also on `ENOTSUP`/`EOPNOTSUPP` and `ENOLCK` (an NFS mount without a lock manager
    /// reports `ENOLCK`). Python filelock returns those errors; this is a deliberate choice
    /// for file systems known to lack working locks.
    OnUnsupported,
}

#[derive(Debug, Clone)]
struct Options {
    timeout: Option<Duration>,
    backoff: Backoff,
    mode: Option<u32>,
    delete_on_release: bool,
    fallback: SoftFallback,
    wait_hook: Option<WaitHook>,
    keep_open: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: None,
            backoff: Backoff::default(),
            mode: None,
            delete_on_release: false,
            fallback: SoftFallback::default(),
            wait_hook: None,
            keep_open: true,
        }
    }
}

impl FileLock {
    /// Creates a lock for the file at `path`, with default options: wait without limit, the
    /// default [`Backoff`], permissions `0o666` less the umask, and the file kept after
    /// release.
    ///
    /// No I/O happens here. A relative path is resolved against the current directory at
    /// the first acquisition, and the lock stays on that file even if the process later
    /// changes directory. Locks whose paths lead to the same file through the same directory
    /// (however it is spelled: `..`, symbolic links to the directory) share one in-process
    /// queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::FileLock::new("/tmp/my-app.lock");
    /// assert_eq!(lock.path(), std::path::Path::new("/tmp/my-app.lock"));
    /// ```
    pub fn new(path: impl AsRef<Path>) -> FileLock {
        FileLock::from_options(path.as_ref(), Options::default())
    }

    /// Starts building a lock with options.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lock = async_filelock::FileLock::builder("/tmp/my-app.lock")
    ///     .timeout(Duration::from_secs(10))
    ///     .mode(0o600)
    ///     .build()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> FileLockBuilder {
        FileLockBuilder {
            path: path.as_ref().to_path_buf(),
            options: Options::default(),
        }
    }

    fn from_options(path: &Path, options: Options) -> FileLock {
        FileLock {
            hard: Arc::new(Hard::with_options(path, options)),
        }
    }

    /// The path of the lock file, as given to [`new`](FileLock::new) or
    /// [`builder`](FileLock::builder).
    pub fn path(&self) -> &Path {
        &self.hard.place.path
    }

    /// The default time limit of an acquisition (`None`: no limit).
    pub fn timeout(&self) -> Option<Duration> {
        self.hard.options.timeout
    }

    /// The pause between attempts while another process holds the lock.
    pub fn backoff(&self) -> Backoff {
        self.hard.options.backoff
    }

    /// The processes that hold the OS lock on this file now, as the operating system reports
    /// them; empty when nobody holds it (or there is no file yet); `None` where the platform
    /// cannot tell (all but Linux) or the lock fell back to a soft lock (see
    /// [`SoftFileLock::owner`](crate::SoftFileLock::owner) for those).
    ///
    /// On Linux it reads `/proc/locks`, matched by the file's device and inode, and each
    /// holder's `/proc/<pid>/cmdline`. It does not wait and takes no lock. A guard of this
    /// process counts: it lists this process. See [`Holder`](crate::Holder) for what the list
    /// can and cannot tell (forked descriptors, PID namespaces).
    ///
    /// Timeouts and refused attempts name the holders too
    /// ([`Error::holders`](crate::Error::holders)): there is no need to ask after an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::FileLock;
    ///
    /// let lock = FileLock::new(std::env::temp_dir().join("doc-holders.lock"));
    /// let guard = lock.try_acquire()?;
    /// match lock.holders() {
    ///     Some(holders) => {
    ///         assert_eq!(holders.len(), 1);
    ///         assert_eq!(holders[0].pid(), std::process::id());
    ///         assert!(!holders[0].is_shared());
    ///     }
    ///     None => println!("this platform cannot say who holds a lock"),
    /// }
    /// drop(guard);
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn holders(&self) -> Option<Vec<crate::Holder>> {
        if self.hard.soft.load(Ordering::Relaxed) {
            return None;
        }
        // Resolves the path as the first acquisition would (no I/O but the current directory).
        self.hard.place.prepare().ok()?;
        sys::holders(self.hard.resolved_path())
    }

    /// Waits for the lock in exclusive mode: nobody else, in any process, holds it while the
    /// guard lives.
    ///
    /// The returned future waits up to the lock's timeout (by default, without limit); call
    /// [`Acquire::timeout`] on it to choose another limit for this call.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when the time limit passes while
    ///   the lock is held elsewhere;
    /// - [`NotAFile`](crate::ErrorKind::NotAFile), [`PermissionDenied`](crate::ErrorKind::PermissionDenied),
    ///   [`NotFound`](crate::ErrorKind::NotFound), [`InvalidInput`](crate::ErrorKind::InvalidInput)
    ///   and other kinds at once, without retrying, when the lock file cannot be opened or
    ///   locked for a reason other than another holder.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future at any point (before its first poll,
    /// while it waits in the queue, while it backs off, or while an attempt runs on the
    /// blocking pool) leaves no lock held, no file open and no place in the queue; nothing
    /// acquires the lock later on its behalf. Only its place in the in-process queue is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let lock = async_filelock::FileLock::new(std::env::temp_dir().join("doc-acquire.lock"));
    /// let guard = lock.acquire().await?;
    /// assert!(!guard.is_shared());
    /// # Ok::<(), async_filelock::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn acquire(&self) -> Acquire {
        Acquire::new(self.hard.clone(), false)
    }

    /// Waits for the lock in shared mode: other shared holders may hold it too, exclusive
    /// ones may not.
    ///
    /// # Errors
    ///
    /// As [`acquire`](FileLock::acquire).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`acquire`](FileLock::acquire) is.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let lock = async_filelock::FileLock::new(std::env::temp_dir().join("doc-shared.lock"));
    /// let reader = lock.acquire_shared().await?;
    /// assert!(reader.is_shared());
    /// # Ok::<(), async_filelock::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn acquire_shared(&self) -> Acquire {
        Acquire::new(self.hard.clone(), true)
    }

    /// Makes one attempt to take the lock in exclusive mode, without waiting.
    ///
    /// On Unix the attempt never blocks. On Windows opening the file may take as long as the
    /// file system needs (network shares, antivirus filters), though it never waits for
    /// another holder.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`](crate::ErrorKind::WouldBlock) when the lock is held
    /// elsewhere (or another task in this process is already waiting for it); otherwise as
    /// [`acquire`](FileLock::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::{ErrorKind, FileLock};
    ///
    /// let lock = FileLock::new(std::env::temp_dir().join("doc-try.lock"));
    /// let guard = lock.try_acquire()?;
    /// assert_eq!(lock.try_acquire().unwrap_err().kind(), ErrorKind::WouldBlock);
    /// drop(guard);
    /// assert!(lock.try_acquire().is_ok());
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<FileLockGuard, Error> {
        self.acquire_inline(false, Limit::Once)
    }

    /// Makes one attempt to take the lock in shared mode, without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](FileLock::try_acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::FileLock::new(std::env::temp_dir().join("doc-try-shared.lock"));
    /// let a = lock.try_acquire_shared()?;
    /// let b = lock.try_acquire_shared()?;
    /// assert!(lock.try_acquire().is_err());
    /// # drop((a, b));
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn try_acquire_shared(&self) -> Result<FileLockGuard, Error> {
        self.acquire_inline(true, Limit::Once)
    }

    /// Runs the waiting loop on this thread, attempts included.
    pub(crate) fn acquire_inline(
        &self,
        shared: bool,
        limit: Limit,
    ) -> Result<FileLockGuard, Error> {
        let held = WaitLoop::new(self.hard.clone(), shared, limit).block()?;
        Ok(FileLockGuard::new(self.hard.clone(), held, shared))
    }
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.hard.options;
        f.debug_struct("FileLock")
            .field("path", &self.hard.place.path)
            .field("timeout", &o.timeout)
            .field("backoff", &o.backoff)
            .field("mode", &o.mode.map(|m| format!("{m:#o}")))
            .field("delete_on_release", &o.delete_on_release)
            .field("fallback", &o.fallback)
            .field("wait_hook", &o.wait_hook)
            .field("keep_open", &o.keep_open)
            .finish()
    }
}

impl Hard {
    pub(crate) fn resolved_path(&self) -> &Path {
        self.place.resolved_path()
    }

    /// The path as the user gave it.
    pub(crate) fn given_path(&self) -> &Path {
        &self.place.path
    }

    pub(crate) fn local(&self) -> &Arc<Local> {
        self.place.local()
    }

    pub(crate) fn delete_on_release(&self) -> bool {
        self.options.delete_on_release
    }

    /// Where a release leaves the lock file open for the next hold, if anywhere.
    pub(crate) fn cache(&self) -> Option<&sys::Cache> {
        self.cache.as_ref()
    }
}

/// A lock's path as given, and once first used, as resolved: absolute, with the in-process
/// queue of the file it names. Every lock kind resolves its path through this.
pub(crate) struct Place {
    pub(crate) path: PathBuf,
    resolved: OnceLock<Resolved>,
}

struct Resolved {
    path: PathBuf,
    local: Arc<Local>,
}

impl Place {
    pub(crate) fn new(path: &Path) -> Place {
        Place {
            path: path.to_path_buf(),
            resolved: OnceLock::new(),
        }
    }

    /// The absolute path once resolved; the path as given before.
    pub(crate) fn resolved_path(&self) -> &Path {
        self.resolved.get().map_or(&self.path, |r| &r.path)
    }

    pub(crate) fn local(&self) -> &Arc<Local> {
        &self
            .resolved
            .get()
            .expect("a held lock has been resolved")
            .local
    }

    /// Checks and resolves the path (once) and returns its in-process queue.
    pub(crate) fn prepare(&self) -> Result<Arc<Local>, Error> {
        if let Some(r) = self.resolved.get() {
            return Ok(r.local.clone());
        }
        check_path(&self.path)?;
        let path = std::path::absolute(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let local = Local::for_path(&sys::queue_key(&path));
        Ok(self
            .resolved
            .get_or_init(|| Resolved { path, local })
            .local
            .clone())
    }
}

impl LockKind for Hard {
    type Held = HardHeld;
    /// The lock file, kept open while the acquisition waits (see `sys::Keep`).
    type Claim = sys::Keep;
    const ATTEMPT_BLOCKS: bool = sys::ATTEMPT_BLOCKS;

    fn prepare(&self) -> Result<Arc<Local>, Error> {
        self.place.prepare()
    }

    fn path(&self) -> &Path {
        self.resolved_path()
    }

    fn attempt(&self, shared: bool, keep: &mut sys::Keep) -> Result<Option<HardHeld>, Error> {
        let path = self.resolved_path();
        if !self.soft.load(Ordering::Relaxed) {
            match sys::try_lock(path, shared, self.options.mode, keep, self.cache()) {
                Ok(sys::Attempt::Locked(held)) => return Ok(Some(HardHeld::Os(held))),
                Ok(sys::Attempt::Contended) => return Ok(None),
                Err(e) if sys::lacks_flock(&e, self.options.fallback) => {
                    warning!(
                        path = ?path,
                        error = %e,
                        "the file system cannot lock files; falling back to a soft lock"
                    );
                    self.soft.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let marker = soft::attempt(
            path,
            self.options.mode,
            &soft::Flavor::Plain,
            &self.watch,
            None,
        )?;
        Ok(marker.map(HardHeld::Soft))
    }
    fn timeout(&self) -> Option<Duration> {
        self.options.timeout
    }

    fn backoff(&self) -> Backoff {
        self.options.backoff
    }

    fn wait_hook(&self) -> Option<&WaitHook> {
        self.options.wait_hook.as_ref()
    }

    fn watch(&self, local: &Arc<Local>) -> bool {
        let path = self.resolved_path();
        let target = if self.soft.load(Ordering::Relaxed) {
            sys::watch::Target::Removed(path)
        } else {
            sys::watch::Target::Closed(path)
        };
        local.watch(&[target])
    }

    fn holder(&self) -> Option<HeldBy> {
        // A lock that fell back to a marker has a record naming its holder.
        if self.soft.load(Ordering::Relaxed) {
            soft::unprobeable_holder(self.resolved_path()).map(HeldBy::Unprobeable)
        } else {
            HeldBy::processes(sys::holders(self.resolved_path())?)
        }
    }
}

/// Rejects a file mode a lock file cannot have.
pub(crate) fn check_mode(mode: u32) -> Result<(), Error> {
    if mode & !0o777 != 0 {
        return Err(Error::invalid(format!(
            "mode {mode:#o} has bits outside 0o777"
        )));
    }
    if mode & 0o600 != 0o600 {
        return Err(Error::invalid(format!(
            "mode {mode:#o} does not let the owner read and write the lock file"
        )));
    }
    Ok(())
}

/// Rejects paths no file system would accept, before any I/O.
fn check_path(path: &Path) -> Result<(), Error> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let fail = |why: &'static str| Err(Error::invalid(why).with_path(path));
    if bytes.is_empty() {
        return fail("the path is empty");
    }
    if bytes.contains(&0) {
        return fail("the path contains a NUL byte");
    }
    if bytes
        .last()
        .is_some_and(|&b| std::path::is_separator(b as char))
    {
        return fail("the path ends with a separator; it must name a file");
    }
    Ok(())
}

/// Options for a [`FileLock`], from [`FileLock::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use async_filelock::{Backoff, FileLock};
///
/// let lock = FileLock::builder("/tmp/jobs/queue.lock")
///     .timeout(Duration::from_secs(30))
///     .backoff(Backoff::fixed(Duration::from_millis(50)))
///     .mode(0o640)
///     .build()?;
/// # Ok::<(), async_filelock::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct FileLockBuilder {
    path: PathBuf,
    options: Options,
}

impl FileLockBuilder {
    /// The default time limit of an acquisition. Without it, acquisitions wait until they
    /// get the lock. `Duration::ZERO` means exactly one attempt.
    pub fn timeout(mut self, timeout: Duration) -> FileLockBuilder {
        self.options.timeout = Some(timeout);
        self
    }

    /// The pause between attempts while another process holds the lock. See [`Backoff`] for
    /// the default.
    pub fn backoff(mut self, backoff: Backoff) -> FileLockBuilder {
        self.options.backoff = backoff;
        self
    }

    /// Unix permissions for the lock file, applied (exactly, ignoring the umask) only when
    /// this process creates the file; an existing file's permissions are never changed.
    /// Without it, the file is created with `0o666` less the umask. Ignored on Windows.
    ///
    /// The mode must be within `0o777` and keep the owner's read and write bits (`0o600`),
    /// or the owner could not open the file again.
    pub fn mode(mut self, mode: u32) -> FileLockBuilder {
        self.options.mode = Some(mode);
        self
    }

    /// Delete the lock file when the lock is released (default: keep it).
    ///
    /// This is safe. On Unix, the last holder unlinks the file while it still holds the lock
    /// (a shared holder deletes it only if no other shared holder remains), and every
    /// acquirer, after locking, checks that the path still names the file it locked and
    /// starts over if not, so two holders never hold locks on different files at one path.
    /// On Windows, the file is deleted after it is closed, which succeeds only if nobody else
    /// has it open (lock files are opened without delete sharing).
    ///
    /// The default keeps the file because deleting it gains nothing but tidiness, and costs
    /// every acquisition a file creation. It also matters for peers that do not make that
    /// check: a process using plain `flock(1)` or an older library may lock a deleted file
    /// and believe it holds the lock. Python filelock keeps the file on Unix for the same
    /// reason. Turn deletion on when every user of the path is this crate (or Python
    /// filelock 3.0.2 or later, which checks the link count), and the directory should stay
    /// clean.
    pub fn delete_on_release(mut self, delete: bool) -> FileLockBuilder {
        self.options.delete_on_release = delete;
        self
    }

    /// Keep the lock file open between holds (default: on), so that an acquisition after a
    /// release needs no `open`, and a release no `close`.
    ///
    /// With it, an uncontended acquire + release is `flock` + `lstat` + `flock(LOCK_UN)` (and
    /// two `getpid`), where reopening costs `open` + `fstat` + `flock` + `lstat` +
    /// `flock(LOCK_UN)` + `close`; no guarantee changes:
    ///
    /// - every hold still checks, after locking, that the path names the locked file (a
    ///   file deleted or replaced while the lock was idle is noticed, and the new one
    ///   opened);
    /// - a forked child never locks through a descriptor it inherited (it would share the
    ///   parent's hold): it opens its own;
    /// - a waiter in another process is still woken at a release: on Linux a waiter marks
    ///   itself with a shared POSIX record lock on the file, and a releaser that finds such a
    ///   mark closes the file as without the cache (its close is the wake-up). Programs
    ///   that take POSIX record locks (`fcntl`, `lockf`) on the lock file itself would see
    ///   those marks; `flock(1)` and Python filelock use `flock` and do not. Because NFS and
    ///   SMB build `flock` on record locks, the file is only kept open on local file
    ///   systems known to keep the two apart (ext2/3/4, XFS, Btrfs, tmpfs, F2FS, bcachefs,
    ///   overlayfs); elsewhere it is closed at each release as before.
    ///
    /// The cost is one open descriptor per idle lock (per `FileLock` and its clones, held
    /// until the last of them is dropped) and the file's inode kept alive while it is
    /// open. It never applies with [`delete_on_release`](FileLockBuilder::delete_on_release)
    /// (the file is gone after each release), nor on Windows, where an open handle would
    /// keep other processes from deleting the file, and a `FileLock` closes the file at
    /// every release whatever this says.
    pub fn keep_open(mut self, keep: bool) -> FileLockBuilder {
        self.options.keep_open = keep;
        self
    }

    /// When to fall back to a soft lock because the file system cannot take OS locks
    /// (default [`SoftFallback::OnNoSys`], as Python filelock). See [`SoftFallback`].
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::{FileLock, SoftFallback};
    ///
    /// // On an NFS mount without a lock manager, use marker files rather than fail.
    /// let lock = FileLock::builder("/mnt/shared/job.lock")
    ///     .soft_fallback(SoftFallback::OnUnsupported)
    ///     .build()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn soft_fallback(mut self, fallback: SoftFallback) -> FileLockBuilder {
        self.options.fallback = fallback;
        self
    }

    /// Calls `f` once when an acquisition first has to wait: its first attempt found the
    /// lock held in another process, or another task or thread of this process holds it or
    /// waits for it ahead of this acquisition. An acquisition that gets the lock at once, or
    /// a [`try_acquire`](FileLock::try_acquire), never calls it.
    ///
    /// `f` is told the path, how long the acquisition has run, and who holds the lock where
    /// that is known (see [`WaitInfo`]); looking that up reads `/proc/locks` on Linux, which
    /// only happens when a hook is set. Use it to tell a user why a program does not proceed,
    /// as cargo prints `Blocking waiting for file lock on build directory`.
    ///
    /// The hook runs inside the acquisition's `poll` (or, for the
    /// [`blocking`](crate::blocking) twin, on the waiting thread), so it must be quick and
    /// must not block: print, log, or send on a channel. It is called only while the
    /// acquisition is polled: a dropped (cancelled) acquisition never calls it again. A panic
    /// in it propagates out of `poll`, and the acquisition is abandoned as if dropped. This
    /// replaces any hook set before, as does [`on_wait_every`](FileLockBuilder::on_wait_every).
    ///
    /// With the `tracing` feature the same moment is a debug event, with or without a hook.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use async_filelock::FileLock;
    ///
    /// # futures_lite::future::block_on(async {
    /// let waits = Arc::new(AtomicUsize::new(0));
    /// let counter = waits.clone();
    /// let lock = FileLock::builder(std::env::temp_dir().join("doc-on-wait.lock"))
    ///     .on_wait(move |info| {
    ///         eprintln!("Blocking waiting for file lock on {}", info.path().display());
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build()?;
    ///
    /// let held = lock.acquire().await?; // no wait: no call
    /// assert_eq!(waits.load(Ordering::Relaxed), 0);
    /// // Another task of this process holds it: this acquisition waits, then times out.
    /// let err = lock.acquire().timeout(Duration::from_millis(20)).await.unwrap_err();
    /// assert_eq!(waits.load(Ordering::Relaxed), 1);
    /// # drop(held);
    /// # Ok::<(), async_filelock::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn on_wait(mut self, f: impl Fn(&WaitInfo<'_>) + Send + Sync + 'static) -> FileLockBuilder {
        self.options.wait_hook = Some(WaitHook::once(f));
        self
    }

    /// Calls `f` when an acquisition first has to wait, as
    /// [`on_wait`](FileLockBuilder::on_wait), and again every `interval` while it keeps
    /// waiting ([`WaitInfo::is_first`] tells the first call apart). Calls missed while the
    /// waiting thread was busy are skipped, not made up for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lock = async_filelock::FileLock::builder("/tmp/build.lock")
    ///     .on_wait_every(Duration::from_secs(10), |info| {
    ///         eprintln!("still waiting for {} after {:.0?}", info.path().display(), info.elapsed());
    ///     })
    ///     .build()?;
    /// # drop(lock);
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn on_wait_every(
        mut self,
        interval: Duration,
        f: impl Fn(&WaitInfo<'_>) + Send + Sync + 'static,
    ) -> FileLockBuilder {
        self.options.wait_hook = Some(WaitHook::every(interval, f));
        self
    }

    /// Checks the options and builds the lock. No I/O happens here.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a backoff with a zero
    /// interval or a first pause longer than its cap, a mode outside `0o777` or without
    /// the owner's read and write bits, or a waiting hook repeating at a zero interval.
    pub fn build(self) -> Result<FileLock, Error> {
        let with_path = |e: Error| e.with_path(&self.path).during(Action::Configure);
        self.options.backoff.validate().map_err(with_path)?;
        WaitHook::validate(self.options.wait_hook.as_ref()).map_err(with_path)?;
        if let Some(mode) = self.options.mode {
            check_mode(mode).map_err(with_path)?;
        }
        Ok(FileLock::from_options(&self.path, self.options))
    }
}

/// The future returned by [`FileLock::acquire`] and [`FileLock::acquire_shared`].
///
/// It resolves to a [`FileLockGuard`] once the lock is held. It is `Send` and `Unpin`, so it
/// can be stored, boxed, or raced in `select!`.
///
/// # Cancel safety
///
/// Dropping it before it completes releases everything it holds; see
/// [`FileLock::acquire`].
///
/// # Panics
///
/// Polling it again after it completed panics, as for most futures.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Acquire {
    wait: WaitLoop<Hard>,
}

impl Acquire {
    fn new(hard: Arc<Hard>, shared: bool) -> Acquire {
        Acquire {
            wait: WaitLoop::new(hard, shared, Limit::Default),
        }
    }

    /// Overrides the lock's default time limit for this acquisition.
    ///
    /// The time counts from the first poll, also when this is called after it.
    /// `Duration::ZERO` means exactly one attempt. Once
    /// the limit passes while the lock is held elsewhere, the future resolves to an
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error. Pauses between attempts are
    /// clipped to the time left, and the last attempt happens when the limit is reached.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_filelock::{ErrorKind, FileLock};
    ///
    /// # futures_lite::future::block_on(async {
    /// let lock = FileLock::new(std::env::temp_dir().join("doc-timeout.lock"));
    /// let held = lock.acquire().await?;
    /// let err = lock.acquire().timeout(Duration::from_millis(20)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// # drop(held);
    /// # Ok::<(), async_filelock::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Acquire {
        self.wait.set_limit(Limit::After(Some(timeout)));
        self
    }
}

impl Future for Acquire {
    type Output = Result<FileLockGuard, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let wait = &mut self.wait;
        Pin::new(&mut *wait).poll(cx).map(|held| {
            let held = held?;
            Ok(FileLockGuard::new(
                wait.kind().clone(),
                held,
                wait.is_shared(),
            ))
        })
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wait.fmt(f)
    }
}

#[cfg(all(test, unix))]
mod fallback_tests {
    use super::*;
    use crate::soft::identity::{own_pid, owner_is_current};
    use crate::soft::record::Holder;
    use crate::ErrorKind;

    fn forced(errno: i32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nolocks.lock");
        sys::test_hook::force(&path, errno);
        (dir, path)
    }

    #[test]
    fn enosys_falls_back_to_a_soft_marker() {
        let (_dir, path) = forced(rustix::io::Errno::NOSYS.raw_os_error());
        let lock = FileLock::new(&path);
        let guard = lock.try_acquire().expect("falls back to a soft lock");
        let content = std::fs::read_to_string(&path).unwrap();
        let holder = Holder::parse(&content).expect("a protocol 1 record");
        assert_eq!(holder.pid, own_pid());
        assert!(owner_is_current(holder.pid, &holder.host, holder.start));
        // Shared requests are exclusive once soft: a second holder in this process waits.
        assert_eq!(
            lock.try_acquire_shared().unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        guard.release().unwrap();
        assert!(!path.exists(), "the marker is removed on release");
        // Later acquisitions go straight to the marker.
        drop(lock.try_acquire().unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn other_errors_are_a_choice() {
        let enolck = rustix::io::Errno::NOLCK.raw_os_error();
        let (_dir, path) = forced(enolck);
        let err = FileLock::new(&path).try_acquire().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(enolck), "{err}");
        assert!(
            !path.exists(),
            "the file this attempt created is not left behind"
        );
        let wide = FileLock::builder(&path)
            .soft_fallback(SoftFallback::OnUnsupported)
            .build()
            .unwrap();
        drop(wide.try_acquire().expect("ENOLCK falls back when asked to"));

        let (_dir, path) = forced(rustix::io::Errno::NOSYS.raw_os_error());
        let never = FileLock::builder(&path)
            .soft_fallback(SoftFallback::Never)
            .build()
            .unwrap();
        let err = never.try_acquire().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    }
}
