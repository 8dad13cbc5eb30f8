//! [`FileLockGuard`]: proof that a [`FileLock`](crate::FileLock) is held.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::Action;
use crate::lock::{Hard, HardHeld};
use crate::trace::debug;
use crate::Error;

/// A held [`FileLock`](crate::FileLock), exclusive or shared. Dropping it releases the lock.
///
/// The guard owns its lock file descriptor and a reference to the lock, so it is `'static`
/// and `Send`: it can be moved into a spawned task or another thread, and released there.
/// Each guard releases only its own hold: dropping one shared guard never ends another's.
///
/// `Drop` never panics and cannot report errors; call [`release`](FileLockGuard::release)
/// to see them.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let lock = async_filelock::FileLock::new(std::env::temp_dir().join("doc-guard.lock"));
/// let guard = lock.acquire().await?;
/// assert!(!guard.is_shared());
/// guard.release()?;
/// # Ok::<(), async_filelock::Error>(())
/// # }).unwrap();
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FileLockGuard {
    lock: Arc<Hard>,
    held: Option<HardHeld>,
    shared: bool,
}

impl FileLockGuard {
    pub(crate) fn new(lock: Arc<Hard>, held: HardHeld, shared: bool) -> FileLockGuard {
        FileLockGuard {
            lock,
            held: Some(held),
            shared,
        }
    }

    /// Whether this is a shared hold (from `acquire_shared`) rather than an exclusive one.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The path of the locked file. A relative path given to the lock appears here resolved
    /// against the directory that was current at the lock's first acquisition.
    pub fn path(&self) -> &Path {
        self.lock.resolved_path()
    }

    pub(crate) fn lock_local(&self) -> &Arc<crate::local::Local> {
        self.lock.local()
    }

    /// Releases the lock and reports any error, which dropping the guard would discard.
    ///
    /// The lock is released even when this returns an error: the file is closed in every
    /// case, and closing it ends the OS lock.
    ///
    /// # Errors
    ///
    /// On Unix, an I/O error from unlocking, or from deleting the lock file when the lock was
    /// built with [`delete_on_release`](crate::FileLockBuilder::delete_on_release). On
    /// Windows it never fails: closing the handle releases the lock in every case, and a
    /// deletion that fails means someone else has the file open, which is as it should be.
    pub fn release(mut self) -> Result<(), Error> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), Error> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let path = self.lock.resolved_path();
        let result = held
            .release(path, self.lock.delete_on_release(), self.lock.cache())
            .map_err(|e| e.during(Action::Release));
        // The OS lock is gone: let the next waiter in this process try at once.
        self.lock.local().released(self.shared);
        debug!(path = ?path, shared = self.shared, ok = result.is_ok(), "lock released");
        result
    }
}

impl Drop for FileLockGuard {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

impl fmt::Debug for FileLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLockGuard")
            .field("path", &self.path())
            .field("shared", &self.shared)
            .finish()
    }
}
