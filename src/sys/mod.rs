//! Platform code behind one small interface.
//!
//! Each platform module provides:
//!
//! - `ATTEMPT_BLOCKS`: whether an attempt may block the calling thread (then async callers run
//!   it on the `blocking` crate's thread pool);
//! - `try_lock(path, shared, mode) -> Result<Attempt, Error>`: one attempt that never waits
//!   for another holder;
//! - `queue_key(path) -> PathBuf`: the name under which locks on an absolute `path` share
//!   one in-process queue (spellings of one file should map to one key where that is cheap);
//! - `Held`: the open, locked file; `Held::release(self, path, delete)` unlocks and closes it,
//!   and dropping a `Held` releases it too (closing the file releases the OS lock).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{queue_key, try_lock, Held, ATTEMPT_BLOCKS};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{queue_key, try_lock, Held, ATTEMPT_BLOCKS};

#[cfg(not(any(unix, windows)))]
mod unsupported;
#[cfg(not(any(unix, windows)))]
pub(crate) use unsupported::{queue_key, try_lock, Held, ATTEMPT_BLOCKS};

/// The outcome of one attempt that did not fail.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The OS lock is ours.
    Locked(Held),
    /// Someone else holds it.
    Contended,
}
