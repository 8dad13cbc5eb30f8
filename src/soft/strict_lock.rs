//! [`StrictSoftFileLock`]: the public face of the strict protocol in [`strict`](super::strict).

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::acquire::{Limit, LockKind, WaitLoop};
use crate::error::Action;
use crate::holder::HeldBy;
use crate::local::Local;
use crate::lock::Place;
use crate::soft::strict::{Strict, StrictClaim, StrictHeld};
use crate::trace::debug;
use crate::wait_hook::{wait_hook_methods, WaitHook};
use crate::{sys, Backoff, Error};

use super::{check_mode, Options};
use crate::acquire::acquire_future;

/// The strict lock as the waiting loop sees it.
pub(crate) struct StrictKind {
    place: Place,
    options: Options,
    core: OnceLock<Strict>,
}

impl StrictKind {
    /// The protocol core, built on the resolved path.
    fn core(&self) -> Result<&Strict, Error> {
        if let Some(core) = self.core.get() {
            return Ok(core);
        }
        self.place.prepare()?;
        let path = self.place.resolved_path().to_path_buf();
        Ok(self
            .core
            .get_or_init(|| Strict::new(path, self.options.mode)))
    }
}

impl LockKind for StrictKind {
    type Held = StrictHeld;
    type Claim = ();
    const ATTEMPT_BLOCKS: bool = sys::ATTEMPT_BLOCKS;

    fn prepare(&self) -> Result<Arc<Local>, Error> {
        let local = self.place.prepare()?;
        self.core()?;
        // The protocol creates its files beside the lock; the directory must exist.
        let path = self.place.resolved_path();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(path, e))?;
        }
        Ok(local)
    }

    fn path(&self) -> &Path {
        self.place.resolved_path()
    }

    fn attempt(&self, _shared: bool, _claim: &mut ()) -> Result<Option<StrictHeld>, Error> {
        self.core()?.attempt()
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

    fn holder(&self) -> Option<HeldBy> {
        self.core
            .get()
            .and_then(Strict::holder)
            .map(HeldBy::Unprobeable)
    }
}

/// A fail-closed soft lock, on-disk compatible with Python filelock's `StrictSoftFileLock`:
/// never broken by age or by its owner's death, only by an explicit
/// [`force_break`](StrictSoftFileLock::force_break).
///
/// The lock path holds a sentinel (which other soft locks read as a holder they can never
/// probe, so they wait), and holders publish claim files in `<lock>.filelock/claims/`
/// through no-replace hard links: a claim either appears whole under its public name or not
/// at all, and two contenders can never both see themselves first. A holder that crashes
/// leaves its claims behind, and the lock stays taken until an operator inspects
/// [`claims`](StrictSoftFileLock::claims) and breaks the dead one.
///
/// File systems without no-replace hard links get a [`Protocol`](crate::ErrorKind::Protocol)
/// error, as does any state on disk the protocol cannot interpret (a symbolic link or
/// directory at the lock path, an unknown claim): waiting would not help there.
///
/// # Windows
///
/// Files are told apart by volume serial number and file index, which hard links share, so
/// a publication recognises its own link as on Unix. A claim's owner is judged by its
/// process's exit status and creation time.
///
/// # Examples
///
/// ```
/// use async_filelock::StrictSoftFileLock;
///
/// # futures_lite::future::block_on(async {
/// let lock = StrictSoftFileLock::new(std::env::temp_dir().join("doc-strict.lock"));
/// let guard = lock.acquire().await?;
/// let claims = lock.claims()?;
/// assert!(claims.iter().all(|c| c.pid() == std::process::id()));
/// guard.release()?;
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct StrictSoftFileLock {
    kind: Arc<StrictKind>,
}

impl StrictSoftFileLock {
    /// Creates a strict lock on `path` with default options. No I/O happens here.
    pub fn new(path: impl AsRef<Path>) -> StrictSoftFileLock {
        StrictSoftFileLock::from_options(path.as_ref(), Options::default())
    }

    fn from_options(path: &Path, options: Options) -> StrictSoftFileLock {
        StrictSoftFileLock {
            kind: Arc::new(StrictKind {
                place: Place::new(path),
                options,
                core: OnceLock::new(),
            }),
        }
    }

    /// Starts building a strict lock with options.
    pub fn builder(path: impl AsRef<Path>) -> StrictSoftFileLockBuilder {
        StrictSoftFileLockBuilder {
            path: path.as_ref().to_path_buf(),
            options: Options::default(),
        }
    }

    /// The lock path, as given.
    pub fn path(&self) -> &Path {
        &self.kind.place.path
    }

    /// The default time limit of an acquisition (`None`: wait until acquired).
    pub fn timeout(&self) -> Option<Duration> {
        self.kind.options.timeout
    }

    /// Waits until the lock is ours.
    ///
    /// # Errors
    ///
    /// [`Timeout`](crate::ErrorKind::Timeout), [`Protocol`](crate::ErrorKind::Protocol) for
    /// state it will not interpret, or an I/O error about the path.
    pub fn acquire(&self) -> AcquireStrict {
        AcquireStrict {
            wait: WaitLoop::new(self.kind.clone(), false, Limit::Default),
        }
    }

    /// Makes one attempt, without waiting.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when the lock is held; otherwise as
    /// [`acquire`](StrictSoftFileLock::acquire).
    pub fn try_acquire(&self) -> Result<StrictSoftFileLockGuard, Error> {
        self.acquire_blocking(Limit::Once)
    }

    pub(crate) fn acquire_blocking(&self, limit: Limit) -> Result<StrictSoftFileLockGuard, Error> {
        WaitLoop::new(self.kind.clone(), false, limit)
            .block()
            .map(|held| StrictSoftFileLockGuard::new(self.kind.clone(), held))
    }

    pub(crate) fn queue(&self) -> Result<Arc<Local>, Error> {
        self.kind.prepare()
    }

    /// The public claims in the lock's claim directory, sorted by name. Inspection creates no
    /// files.
    ///
    /// # Errors
    ///
    /// [`Protocol`](crate::ErrorKind::Protocol) for a claim it cannot interpret, or an I/O
    /// error.
    pub fn claims(&self) -> Result<Vec<StrictClaim>, Error> {
        self.kind.core()?.claims()
    }

    /// Describes what occupies the lock path if it is not the strict sentinel (a soft-lock
    /// marker, a directory, a symbolic link, ...); `None` for the sentinel or nothing.
    ///
    /// # Errors
    ///
    /// When the path cannot be inspected.
    pub fn lock_path_occupant(&self) -> Result<Option<String>, Error> {
        self.kind.core()?.occupant()
    }

    /// Removes the claim named `claim_name` (one public basename from
    /// [`claims`](StrictSoftFileLock::claims)), whoever holds it. This is how a crashed
    /// holder's lock is freed; it voids exclusion if the holder still runs.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for anything but one public claim
    /// basename, [`NotFound`](crate::ErrorKind::NotFound) when there is no such claim.
    pub fn force_break(&self, claim_name: &str) -> Result<(), Error> {
        self.kind.core()?.force_break(claim_name)
    }
}

impl fmt::Debug for StrictSoftFileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrictSoftFileLock")
            .field("path", &self.kind.place.path)
            .field("timeout", &self.kind.options.timeout)
            .field("backoff", &self.kind.options.backoff)
            .finish()
    }
}

/// Options for a [`StrictSoftFileLock`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct StrictSoftFileLockBuilder {
    path: PathBuf,
    options: Options,
}

impl StrictSoftFileLockBuilder {
    /// The default time limit of an acquisition.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The pause between attempts while another process holds the lock.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.options.backoff = backoff;
        self
    }

    /// The permissions of the sentinel, claims and claim directories (group and other write
    /// are never granted to records).
    pub fn mode(mut self, mode: u32) -> Self {
        self.options.mode = Some(mode);
        self
    }

    wait_hook_methods!(options.wait_hook);

    /// Checks the options and builds the lock.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an invalid mode or backoff.
    pub fn build(self) -> Result<StrictSoftFileLock, Error> {
        self.options
            .backoff
            .validate()
            .map_err(|e| e.with_path(&self.path).during(Action::Configure))?;
        WaitHook::validate(self.options.wait_hook.as_ref())
            .map_err(|e| e.with_path(&self.path).during(Action::Configure))?;
        check_mode(&self.path, self.options.mode)?;
        Ok(StrictSoftFileLock::from_options(&self.path, self.options))
    }
}

acquire_future!(
    /// The future returned by [`StrictSoftFileLock::acquire`]; resolves to the guard.
    AcquireStrict,
    StrictKind,
    StrictSoftFileLockGuard,
    StrictSoftFileLockGuard::new
);

/// Proof that a [`StrictSoftFileLock`] is held; dropping it removes this holder's claims
/// (the sentinel and the claim directory stay).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct StrictSoftFileLockGuard {
    kind: Arc<StrictKind>,
    held: Option<StrictHeld>,
}

impl StrictSoftFileLockGuard {
    fn new(kind: Arc<StrictKind>, held: StrictHeld) -> StrictSoftFileLockGuard {
        StrictSoftFileLockGuard {
            kind,
            held: Some(held),
        }
    }

    /// The lock's absolute path.
    pub fn path(&self) -> &Path {
        self.kind.place.resolved_path()
    }

    /// The token of this holder's claims (32 hex digits).
    pub fn token(&self) -> &str {
        self.held.as_ref().map_or("", StrictHeld::token)
    }

    /// Releases the lock now: removes this holder's claims.
    ///
    /// # Errors
    ///
    /// When a claim could not be removed.
    pub fn release(mut self) -> Result<(), Error> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), Error> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let result = held.release().map_err(|e| e.during(Action::Release));
        self.kind.place.local().released(false);
        debug!(path = ?self.path(), ok = result.is_ok(), "strict lock released");
        result
    }
}

impl Drop for StrictSoftFileLockGuard {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

impl fmt::Debug for StrictSoftFileLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrictSoftFileLockGuard")
            .field("path", &self.path())
            .field("token", &self.token())
            .finish()
    }
}
