//! Platform code behind one small interface.
//!
//! Each platform module provides:
//!
//! - `ATTEMPT_BLOCKS`: whether an attempt may block the calling thread (then async callers run
//!   it on the `blocking` crate's thread pool);
//! - `try_lock(path, shared, mode, keep, cache) -> Result<Attempt, Error>`: one attempt that
//!   never waits for another holder; `Keep` is what a waiting acquisition keeps between
//!   attempts (on Unix, the open lock file), `Cache` what a lock keeps between holds (on
//!   Unix, the lock file left open by the last release);
//! - `queue_key(path) -> PathBuf`: the name under which locks on an absolute `path` share
//!   one in-process queue (spellings of one file should map to one key where that is cheap);
//! - `Held`: the open, locked file; `Held::release(self, path, delete, cache)` unlocks and
//!   closes it (or leaves it open in `cache`),
//!   and dropping a `Held` releases it too (closing the file releases the OS lock);
//! - `host_name_raw()` and `process_alive(pid)`, which soft locks record and probe;
//! - off Unix, `identify_path(path, follow)` and `identify_file(file)`: metadata with the
//!   file's identity (Windows: volume serial number and file index), for `marker` and `dir`.
//!
//! Beside them: `marker` (the file operations of soft-lock markers), `exchange` (swapping two
//! names in one step, where the platform can), `process` (process start tokens and PID
//! namespaces), `dir` (directory handles for the soft protocols that work relative to a
//! directory they opened) and `watch` (wake-ups when a lock file is closed or a marker
//! removed, where the platform can tell); `holders(path)`, the processes the OS says hold a
//! lock on a file (Linux: `/proc/locks`; elsewhere `None`).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{
    host_name_raw, lacks_flock, process_alive, queue_key, try_lock, Cache, Held, Keep,
    ATTEMPT_BLOCKS,
};

#[cfg(windows)]
mod windows;
// The crate's only unsafe code: the Windows calls std does not wrap.
#[cfg(windows)]
#[allow(unsafe_code)]
mod windows_api;
#[cfg(windows)]
use windows::{harden, identify_file, identify_path};
#[cfg(windows)]
pub(crate) use windows::{
    host_name_raw, lacks_flock, process_alive, queue_key, try_lock, Cache, Held, Keep,
    ATTEMPT_BLOCKS,
};

#[cfg(not(any(unix, windows)))]
mod unsupported;
#[cfg(not(any(unix, windows)))]
use unsupported::{harden, identify_file, identify_path};
#[cfg(not(any(unix, windows)))]
pub(crate) use unsupported::{
    host_name_raw, lacks_flock, process_alive, queue_key, try_lock, Cache, Held, Keep,
    ATTEMPT_BLOCKS,
};

#[cfg(all(unix, test))]
pub(crate) use unix::test_hook;

#[cfg(unix)]
#[path = "marker_unix.rs"]
pub(crate) mod marker;
#[cfg(not(unix))]
#[path = "marker_other.rs"]
pub(crate) mod marker;

#[cfg(unix)]
#[path = "dir_unix.rs"]
pub(crate) mod dir;
#[cfg(not(unix))]
#[path = "dir_other.rs"]
pub(crate) mod dir;

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
mod exchange_rename;
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
pub(crate) use exchange_rename::exchange;
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
mod exchange_none;
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
pub(crate) use exchange_none::exchange;

#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "process_linux.rs"]
pub(crate) mod process;

#[cfg(windows)]
#[path = "process_windows.rs"]
pub(crate) mod process;

#[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
#[path = "process_fallback.rs"]
pub(crate) mod process;
#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "watch_linux.rs"]
pub(crate) mod watch;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "watch_none.rs"]
pub(crate) mod watch;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod holders_linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use holders_linux::holders;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod holders_none;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) use holders_none::holders;

/// The outcome of one attempt that did not fail.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The OS lock is ours.
    Locked(Held),
    /// Someone else holds it.
    Contended,
}
