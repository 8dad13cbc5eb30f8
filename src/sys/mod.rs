//! Platform code behind one small interface.
//!
//! Each platform module provides:
//!
//! - `ATTEMPT_BLOCKS`: whether an attempt may block the calling thread (then async callers run
//!   it on the `blocking` crate's thread pool);
//! - `try_lock(path, shared, mode) -> Result<Attempt, Error>`: one attempt that never waits
//!   for another holder;
//! - `Held`: the open, locked file; `Held::release(self, path, delete)` unlocks and closes it,
//!   and dropping a `Held` releases it too (closing the file releases the OS lock).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{try_lock, Held, ATTEMPT_BLOCKS};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{try_lock, Held, ATTEMPT_BLOCKS};

#[cfg(not(any(unix, windows)))]
mod unsupported;
#[cfg(not(any(unix, windows)))]
pub(crate) use unsupported::{try_lock, Held, ATTEMPT_BLOCKS};

/// The outcome of one attempt that did not fail.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The OS lock is ours.
    Locked(Held),
    /// Someone else holds it.
    Contended,
}
