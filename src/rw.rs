//! [`RwFileLock`]: shared readers, one writer, and writer preference across processes, built
//! on the OS locks of a data file and a gate file (see the type's documentation).

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::acquire::{acquire_future, Limit, LockKind, WaitLoop};
use crate::error::Action;
use crate::holder::HeldBy;
use crate::local::Local;
use crate::lock::{check_mode, Hard, HardHeld};
use crate::wait_hook::{WaitHook, WaitInfo};
use crate::{sys, Backoff, Error, FileLockGuard, Holder};

/// A cross-process reader/writer lock on a file, with writer preference.
///
/// Readers share the lock with each other; a writer excludes everyone. Once a writer waits,
/// new readers wait behind it, in this process and in every other process that uses an
/// `RwFileLock` on the same path, so a stream of readers cannot starve a writer; [the
/// gate](#the-gate) below says how.
///
/// The lock is built on the OS locks (`flock` on Unix, `LockFileEx` on Windows) of two
/// files: the data file at `path`, and a gate at `<path>.gate`. Both are created on first
/// use and kept. Acquisition is a cancel-safe future on the same waiting loop as
/// [`FileLock`](crate::FileLock), with the same time limits and backoff.
///
/// # The gate
///
/// A reader attempt locks the gate shared, then the data file shared, and unlocks the gate.
/// A writer locks the gate exclusively and keeps it while it waits for the readers inside to
/// leave, then takes the data file exclusively and unlocks the gate. Dropping a waiting
/// writer's future unlocks the gate at once; a process that dies unlocks it with its other
/// files. The protocol binds only `RwFileLock` users: a plain `FileLock` on the same path
/// shares and excludes through the data file alone, without preference.
///
/// # Fairness and deadlocks
///
/// Writer preference has the usual cost: writers that keep arriving can starve readers.
/// And a task that holds a read guard and asks for a second one can wait for a writer that
/// waits for the first one: take one read guard per task and pass it down.
/// [`blocking::RwFileLock`](crate::blocking::RwFileLock) detects this (and upgrades and
/// downgrades) within a thread; async tasks have no identity to check, so the async lock
/// cannot.
///
/// # Examples
///
/// ```
/// use async_filelock::RwFileLock;
///
/// # futures_lite::future::block_on(async {
/// let lock = RwFileLock::new(std::env::temp_dir().join("doc-rw.db"));
/// {
///     let a = lock.read().await?;
///     let b = lock.read().await?; // readers overlap
///     assert!(lock.try_write().is_err());
/// }
/// let w = lock.write().await?;
/// assert!(lock.try_read().is_err());
/// w.release()?;
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RwFileLock {
    kind: Arc<RwHard>,
}

/// The lock kind behind [`RwFileLock`].
pub(crate) struct RwHard {
    data: Arc<Hard>,
    gate: Hard,
    gate_path: PathBuf,
    wait_hook: Option<WaitHook>,
}

/// What a waiting acquisition of an [`RwFileLock`] keeps between attempts.
#[derive(Debug, Default)]
pub(crate) struct RwClaim {
    /// A waiting writer's exclusive hold on the gate.
    gate: Option<HardHeld>,
    /// The gate and data files, kept open so that failed attempts close nothing (a close
    /// is what waiters in other processes wake on).
    keep_gate: sys::Keep,
    keep_data: sys::Keep,
}

impl LockKind for RwHard {
    type Held = HardHeld;
    type Claim = RwClaim;
    const ATTEMPT_BLOCKS: bool = sys::ATTEMPT_BLOCKS;

    fn prepare(&self) -> Result<Arc<Local>, Error> {
        self.gate.prepare()?;
        self.data.prepare()
    }

    fn path(&self) -> &Path {
        self.data.path()
    }

    fn attempt(&self, shared: bool, claim: &mut RwClaim) -> Result<Option<HardHeld>, Error> {
        if shared {
            // Readers pass through the gate only while no writer waits in it.
            let Some(pass) = self.gate.attempt(true, &mut claim.keep_gate)? else {
                return Ok(None);
            };
            let held = self.data.attempt(true, &mut claim.keep_data);
            // Out of the gate either way; kept open while still waiting.
            pass.unlock_into(&mut claim.keep_gate);
            return held;
        }
        if claim.gate.is_none() {
            match self.gate.attempt(false, &mut claim.keep_gate)? {
                Some(held) => claim.gate = Some(held),
                None => return Ok(None),
            }
        }
        let held = self.data.attempt(false, &mut claim.keep_data)?;
        if held.is_some() {
            // In: the next writer may queue its claim while this one writes.
            claim.gate = None;
        }
        Ok(held)
    }

    fn watch(&self, local: &Arc<Local>) -> bool {
        // A writer leaves the gate when it gets the data file, or when it gives up; holders
        // leave the data file when they release.
        local.watch(&[
            sys::watch::Target::Closed(self.gate.path()),
            sys::watch::Target::Closed(self.data.path()),
        ])
    }

    fn timeout(&self) -> Option<Duration> {
        self.data.timeout()
    }

    fn holder(&self) -> Option<HeldBy> {
        HeldBy::processes(self.holders()?)
    }

    fn wait_hook(&self) -> Option<&WaitHook> {
        self.wait_hook.as_ref()
    }

    fn backoff(&self) -> Backoff {
        self.data.backoff()
    }
}

impl RwHard {
    /// The data file's holders, or if it has none, the gate's (a writer waiting).
    fn holders(&self) -> Option<Vec<Holder>> {
        let data = sys::holders(self.data.resolved_path())?;
        if !data.is_empty() {
            return Some(data);
        }
        sys::holders(self.gate.resolved_path())
    }
}

impl RwFileLock {
    /// Creates a reader/writer lock on the file at `path` with default options: wait
    /// without limit, the default [`Backoff`], and permissions `0o666` less the umask. No
    /// I/O happens here.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::RwFileLock::new("/tmp/cache.db");
    /// assert_eq!(lock.gate_path(), std::path::Path::new("/tmp/cache.db.gate"));
    /// ```
    pub fn new(path: impl AsRef<Path>) -> RwFileLock {
        RwFileLock::from_options(path.as_ref(), None, Backoff::default(), None, None)
    }

    /// Starts building a lock with options.
    pub fn builder(path: impl AsRef<Path>) -> RwFileLockBuilder {
        RwFileLockBuilder {
            path: path.as_ref().to_path_buf(),
            timeout: None,
            backoff: Backoff::default(),
            mode: None,
            wait_hook: None,
        }
    }

    fn from_options(
        path: &Path,
        timeout: Option<Duration>,
        backoff: Backoff,
        mode: Option<u32>,
        wait_hook: Option<WaitHook>,
    ) -> RwFileLock {
        let mut gate_path = path.as_os_str().to_owned();
        gate_path.push(".gate");
        let gate_path = PathBuf::from(gate_path);
        RwFileLock {
            kind: Arc::new(RwHard {
                data: Arc::new(Hard::os_only(path, timeout, backoff, mode)),
                gate: Hard::os_only(&gate_path, timeout, backoff, mode),
                gate_path,
                wait_hook,
            }),
        }
    }

    /// The path of the data file, as given.
    pub fn path(&self) -> &Path {
        self.kind.data.given_path()
    }

    /// The path of the gate file (`<path>.gate`), as given.
    pub fn gate_path(&self) -> &Path {
        &self.kind.gate_path
    }

    /// The default time limit of an acquisition (`None`: wait until acquired).
    pub fn timeout(&self) -> Option<Duration> {
        self.kind.data.timeout()
    }

    /// The processes that hold the lock now, as the operating system reports them: the
    /// readers or the writer in the data file, or when it has none, a writer waiting in the
    /// gate (which keeps new readers out). Empty when nobody holds either; `None` where the
    /// platform cannot tell (all but Linux). See [`Holder`] for what the list can and cannot
    /// tell, and [`FileLock::holders`](crate::FileLock::holders).
    ///
    /// It reads `/proc/locks` (and each holder's `/proc/<pid>/cmdline`) and does not wait.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::RwFileLock::new(std::env::temp_dir().join("doc-rw-holders.db"));
    /// let reader = lock.try_read()?;
    /// if let Some(holders) = lock.holders() {
    ///     assert!(holders.iter().all(|h| h.is_shared()));
    /// }
    /// # drop(reader);
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn holders(&self) -> Option<Vec<Holder>> {
        self.kind.prepare().ok()?;
        self.kind.holders()
    }

    /// Waits until the lock is held for reading, alongside other readers.
    ///
    /// The future waits while a writer holds the lock or waits for it. Dropping it at any
    /// point leaves nothing held.
    pub fn read(&self) -> ReadAcquire {
        ReadAcquire {
            wait: WaitLoop::new(self.kind.clone(), true, Limit::Default),
        }
    }

    /// Waits until the lock is held for writing, by this acquisition alone.
    ///
    /// From its first attempt the future holds the gate, so readers that arrive after it
    /// wait behind it. Dropping it before it completes unlocks the gate and lets them in.
    pub fn write(&self) -> WriteAcquire {
        WriteAcquire {
            wait: WaitLoop::new(self.kind.clone(), false, Limit::Default),
        }
    }

    /// One attempt to read, without waiting.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when a writer holds the lock or waits
    /// for it; the I/O errors of [`FileLock::try_acquire`](crate::FileLock::try_acquire).
    pub fn try_read(&self) -> Result<RwReadGuard, Error> {
        self.read_inline(Limit::Once)
    }

    /// One attempt to write, without waiting.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when anyone holds the lock or a writer
    /// waits for it; otherwise as [`try_read`](RwFileLock::try_read).
    pub fn try_write(&self) -> Result<RwWriteGuard, Error> {
        self.write_inline(Limit::Once)
    }

    /// Reads, waiting on the calling thread (the blocking wrapper uses this).
    pub(crate) fn read_inline(&self, limit: Limit) -> Result<RwReadGuard, Error> {
        self.acquire_inline(true, limit).map(RwReadGuard)
    }

    /// Writes, waiting on the calling thread.
    pub(crate) fn write_inline(&self, limit: Limit) -> Result<RwWriteGuard, Error> {
        self.acquire_inline(false, limit).map(RwWriteGuard)
    }

    fn acquire_inline(&self, shared: bool, limit: Limit) -> Result<FileLockGuard, Error> {
        let held = WaitLoop::new(self.kind.clone(), shared, limit).block()?;
        Ok(FileLockGuard::new(self.kind.data.clone(), held, shared))
    }

    /// The in-process queue of the data file's path, shared with `FileLock`s on it.
    pub(crate) fn queue(&self) -> Result<Arc<Local>, Error> {
        self.kind.prepare()
    }
}

impl fmt::Debug for RwFileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwFileLock")
            .field("path", &self.path())
            .field("gate_path", &self.gate_path())
            .field("timeout", &self.timeout())
            .finish()
    }
}

/// Options for an [`RwFileLock`], from [`RwFileLock::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let lock = async_filelock::RwFileLock::builder("/tmp/index.db")
///     .timeout(Duration::from_secs(30))
///     .mode(0o640)
///     .build()?;
/// # Ok::<(), async_filelock::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct RwFileLockBuilder {
    path: PathBuf,
    timeout: Option<Duration>,
    backoff: Backoff,
    mode: Option<u32>,
    wait_hook: Option<WaitHook>,
}

impl RwFileLockBuilder {
    /// The default time limit of each acquisition; see
    /// [`FileLockBuilder::timeout`](crate::FileLockBuilder::timeout).
    pub fn timeout(mut self, timeout: Duration) -> RwFileLockBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// The pause between attempts against holders in other processes.
    pub fn backoff(mut self, backoff: Backoff) -> RwFileLockBuilder {
        self.backoff = backoff;
        self
    }

    /// The permissions of the data and gate files when this lock creates them; see
    /// [`FileLockBuilder::mode`](crate::FileLockBuilder::mode).
    pub fn mode(mut self, mode: u32) -> RwFileLockBuilder {
        self.mode = Some(mode);
        self
    }

    /// Calls `f` once when an acquisition first has to wait; see
    /// [`FileLockBuilder::on_wait`](crate::FileLockBuilder::on_wait).
    pub fn on_wait(mut self, f: impl Fn(&WaitInfo<'_>) + Send + Sync + 'static) -> Self {
        self.wait_hook = Some(WaitHook::once(f));
        self
    }

    /// Calls `f` when an acquisition first has to wait and every `interval` after; see
    /// [`FileLockBuilder::on_wait_every`](crate::FileLockBuilder::on_wait_every).
    pub fn on_wait_every(
        mut self,
        interval: Duration,
        f: impl Fn(&WaitInfo<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.wait_hook = Some(WaitHook::every(interval, f));
        self
    }

    /// Checks the options and builds the lock.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an invalid backoff or mode, as
    /// [`FileLockBuilder::build`](crate::FileLockBuilder::build).
    pub fn build(self) -> Result<RwFileLock, Error> {
        let with_path = |e: Error| e.with_path(&self.path).during(Action::Configure);
        self.backoff.validate().map_err(with_path)?;
        WaitHook::validate(self.wait_hook.as_ref()).map_err(with_path)?;
        if let Some(mode) = self.mode {
            check_mode(mode).map_err(with_path)?;
        }
        Ok(RwFileLock::from_options(
            &self.path,
            self.timeout,
            self.backoff,
            self.mode,
            self.wait_hook,
        ))
    }
}

macro_rules! rw_guard {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// The guard is `'static` and `Send`: it can be moved into a spawned task or another
        /// thread and released there. `Drop` releases the lock and cannot report errors; call
        /// `release` to see them.
        #[must_use = "the lock is released as soon as the guard is dropped"]
        pub struct $name(FileLockGuard);

        impl $name {
            /// The path of the data file, resolved as for
            /// [`FileLockGuard::path`](crate::FileLockGuard::path).
            pub fn path(&self) -> &Path {
                self.0.path()
            }

            /// Releases the lock and reports any error.
            ///
            /// # Errors
            ///
            /// As [`FileLockGuard::release`](crate::FileLockGuard::release).
            pub fn release(self) -> Result<(), Error> {
                self.0.release()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("path", &self.path()).finish()
            }
        }
    };
}

rw_guard!(
    /// A read hold on an [`RwFileLock`], shared with other readers.
    RwReadGuard
);

rw_guard!(
    /// A write hold on an [`RwFileLock`], exclusive.
    RwWriteGuard
);

acquire_future!(
    /// The future returned by [`RwFileLock::read`].
    ///
    /// It is `Send` and `Unpin`. Dropping it before it completes leaves nothing held.
    ReadAcquire,
    RwHard,
    RwReadGuard,
    |kind: Arc<RwHard>, held| RwReadGuard(FileLockGuard::new(kind.data.clone(), held, true))
);

acquire_future!(
    /// The future returned by [`RwFileLock::write`].
    ///
    /// It is `Send` and `Unpin`. Dropping it before it completes leaves nothing held and
    /// unlocks the gate, letting readers in.
    WriteAcquire,
    RwHard,
    RwWriteGuard,
    |kind: Arc<RwHard>, held| RwWriteGuard(FileLockGuard::new(kind.data.clone(), held, false))
);
