//! Cross-process file locks whose acquisition is a runtime-agnostic, cancel-safe `Future`.
//!
//! A [`FileLock`] names a file; holding its lock keeps every other process (and every other
//! task and thread in this one) that uses the same path out until the guard is dropped. It is
//! the lock Python's `filelock` gives scripts, built for async Rust:
//!
//! - `lock.acquire().await` works under tokio, smol, `futures_lite::future::block_on` or any
//!   other executor; the crate depends on no runtime and needs no feature flag per runtime.
//! - Waiting never blocks a runtime thread: each attempt is a non-blocking OS lock request,
//!   and between attempts the task sleeps until a release wakes it (on Linux, inotify tells
//!   it when a holder in another process closes the lock file; see
//!   [Wake-ups](#wake-ups)) or, at the latest, until its [`Backoff`] timer fires.
//! - Dropping the future at any point leaves nothing behind (see [Cancellation](#cancellation)).
//! - Inside one process, waiters queue in order, only the first touches the file, and a
//!   release wakes the next waiter at once.
//! - [`blocking::FileLock`] offers the same lock to synchronous code.
//! - Soft locks for network file systems, on-disk compatible with Python filelock:
//!   [`SoftFileLock`], [`SoftFileLease`] and [`StrictSoftFileLock`] (see
//!   [Soft locks](#soft-locks)).
//! - Reader/writer locks with writer preference: [`RwFileLock`] on the OS locks, and
//!   [`SoftRwLock`] for network file systems (see [Reader/writer locks](#readerwriter-locks)).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use async_filelock::FileLock;
//!
//! # futures_lite::future::block_on(async {
//! let lock = FileLock::new(std::env::temp_dir().join("async-filelock-crate-doc.lock"));
//!
//! // Wait as long as it takes.
//! let guard = lock.acquire().await?;
//! // ... only one process at a time runs here ...
//! drop(guard);
//!
//! // Or give up after a while: the error says which path and how long it waited.
//! match lock.acquire().timeout(Duration::from_secs(5)).await {
//!     Ok(_guard) => { /* ... */ }
//!     Err(e) => eprintln!("{e}"),
//! }
//! # Ok::<(), async_filelock::Error>(())
//! # }).unwrap();
//! ```
//!
//! # When to use it, and when not
//!
//! Use it to keep processes (or tasks) from stepping on a shared file or directory: a cache,
//! a build output, a single-instance program, a job queue on disk.
//!
//! Do not use it:
//!
//! - to exclude tasks that never leave one process: `async_lock::Mutex` is far cheaper;
//! - on network file systems (NFS, SMB, Lustre), where `flock` is unreliable or local to one
//!   client; use the [soft locks](#soft-locks) there;
//! - against processes that do not lock: OS file locks are advisory on Unix.
//!
//! # Soft locks
//!
//! A soft lock is a marker file whose existence is the lock. It needs nothing from the file
//! system but exclusive creation, so it works where `flock` does not travel, and its records
//! are byte-compatible with Python filelock 4.2, so Python and Rust processes can share one
//! lock path. All three kinds use the same waiting loop, options, futures, guards, errors and
//! [`blocking`] twins as [`FileLock`].
//!
//! | | Broken when | Use it for |
//! |---|---|---|
//! | [`SoftFileLock`] | its owner is provably dead (same host; pid gone or recycled) | NFS/SMB locks between cooperating programs |
//! | [`SoftFileLease`] | its owner is dead, or it went unrefreshed for its duration | work that must progress even if a holder hangs; comes with a fencing token |
//! | [`StrictSoftFileLock`] | never, only by an explicit [`force_break`](StrictSoftFileLock::force_break) | fail-closed exclusion |
//!
//! A marker from another host is never broken automatically: this host cannot tell whether
//! its owner lives. A timeout then names it (`"pid 7 on build-host"`, see [`Error::holder`]).
//!
//! [`FileLock`] itself falls back to a soft lock when the file system has no `flock`
//! (`ENOSYS`), as Python filelock does; [`SoftFallback`] makes that, and `ENOTSUP`/`ENOLCK`,
//! a choice.
//!
//! On Windows files are told apart by volume serial number and file index (read from a
//! handle), and a same-host owner is dead once its process has exited (a handle another
//! process keeps to it does not keep it alive) or its pid now names a process created at
//! another time. Windows refuses to rename or remove a marker while its holder has it open,
//! so a marker is only taken over once its owner has exited, and neither
//! [`break_lock`](SoftFileLock::break_lock) nor [`force_break`](SoftFileLease::force_break)
//! can remove a live holder's marker there.
//!
//! Trust boundary (as Python filelock states it): soft locks guard against other accounts
//! only when the lock's directory and its parents are not writable by them, and not against
//! hostile processes of the same user.
//!
//! # Reader/writer locks
//!
//! Readers share, a writer excludes everyone, and once a writer waits, new readers wait
//! behind it, in every process, so a stream of readers cannot starve a writer.
//!
//! - [`RwFileLock`] takes `flock` shared and exclusive locks on the data file, and adds a
//!   gate file (`<path>.gate`) that a waiting writer holds: readers pass only while no
//!   writer waits.
//! - [`SoftRwLock`] needs no OS locks: it runs Python filelock's `SoftReadWriteLock`
//!   protocol (a log of generations under `<path>.rw/`, one heartbeat-refreshed record per
//!   member, eviction of members whose record stopped changing), byte for byte, so Python
//!   and Rust members share one lock. Each guard carries the generation it was granted at,
//!   a fencing token.
//!
//! Both have [`blocking`] twins, which nest in the mode a thread holds and refuse to
//! upgrade or downgrade ([`ErrorKind::Deadlock`]) instead of waiting for themselves.
//!
//! # Cancellation
//!
//! Dropping an [`Acquire`] future (a `select!` that chose another branch, a timeout wrapper,
//! an aborted task) at any point leaves no OS lock held, no file descriptor open, no place in
//! the in-process queue and no thread that acquires the lock later. This holds because an
//! attempt never waits for another holder: it either takes the lock, and hands it to the
//! future at once, or leaves nothing. Where an attempt runs on a thread pool (Windows), the
//! attempt owns the file it opens, and a success that arrives after the future was dropped is
//! released as soon as it completes.
//!
//! A guard releases the lock synchronously in `Drop` (an unlock and a close, which do not
//! block on local file systems), so a guard in an aborted task is released too.
//!
//! # Fairness
//!
//! Inside one process, waiters are served in arrival order, and with a thousand tasks
//! waiting only the first makes OS attempts.
//!
//! Between processes there is no queue, as with the kernel's own `flock`: a process that
//! releases and at once asks again often keeps the lock, because it asks before the waiter
//! elsewhere has woken up. How often the lock changes hands then depends on how fast that
//! waiter wakes. Measured with `scripts/lockbench.sh` (2 and 4 processes incrementing a
//! counter back to back, on a 2-core Linux machine), the lock went to another process in:
//!
//! | waiters | acquisitions handed over | longest run by one process (of 2,000–4,000) |
//! |---|---|---|
//! | threads blocked in raw `flock` | 12–38% | 160–453 |
//! | [`blocking`] wrappers (they wait in the kernel for the release event) | 23–84% | 114–783 |
//! | async tasks under `futures_lite::future::block_on` | 4–10% | 263–599 |
//!
//! An async waiter's wake-up reaches it through async-io's reactor thread (0.13–0.18 ms
//! after the release, against 0.1 ms for a blocking waiter and 0.05 ms for a thread blocked
//! in `flock`), so a releaser that re-acquires at once wins more often against async
//! waiters. To give other processes a turn, do some work between holds. Where no release
//! event exists (other platforms, network file systems), a waiter notices a release at its
//! next attempt, at most one [`Backoff`] pause later.
//!
//! # Re-entrancy
//!
//! The async lock is not re-entrant: a task that holds it and acquires it again waits for
//! itself. The [`blocking::FileLock`] wrapper is re-entrant per thread, like Python filelock.
//! Soft locks are not re-entrant (a marker names a process, not a thread); their blocking
//! twins refuse a same-thread second acquisition without a time limit with
//! [`ErrorKind::Deadlock`] rather than hang.
//!
//! # Platforms
//!
//! - **Unix**: `flock(2)` on the lock file. The file is opened without following a symbolic
//!   link, close-on-exec, non-blocking and never truncated; anything but a regular file at the
//!   path is an error. After locking, the path is checked to still name the locked file, so
//!   a file deleted or replaced under a waiter is detected and the attempt starts over.
//! - **Windows**: `LockFileEx` on the lock file, opened without following reparse points and
//!   without `FILE_SHARE_DELETE` (so nobody can delete or replace it while anyone holds it
//!   open). Opening can block, so async attempts run on the [`blocking`](https://docs.rs/blocking)
//!   crate's thread pool. Closing a handle releases its lock, though Windows documents that
//!   the release of a killed process's lock may lag.
//! - **Elsewhere**: acquisition fails with [`ErrorKind::Unsupported`].
//!
//! # Wake-ups
//!
//! A waiter whose attempt found the lock held in another process sleeps until one of:
//!
//! - a release in this process (the in-process queue wakes the next waiter at once);
//! - on Linux, an inotify event on the lock: the lock file closed (hard locks and the gate
//!   of [`RwFileLock`]), the marker removed (soft locks), a new generation (for
//!   [`SoftRwLock`]). One inotify instance serves the process and one watch each path,
//!   whatever the number of waiters;
//! - its [`Backoff`] timer, the upper bound, for what raises no event: a holder that unlocks
//!   without closing, a change made on another host of a network file system, an expired
//!   lease.
//!
//! A waiting acquisition keeps its lock file open between attempts, so its failed attempts
//! close nothing and waiters in different processes do not wake each other. Elsewhere than
//! Linux, waiters sleep on the timer alone.
//!
//! # Implementation
//!
//! The timers and the inotify instance come from [`async-io`](https://docs.rs/async-io),
//! which runs its own reactor thread when no `async-io` executor drives it. That is why the
//! same future works under tokio (even a current-thread runtime without the time driver)
//! and under smol, and why the blocking wrappers get the same wake-ups.
//!
//! # Logging
//!
//! With the `tracing` feature, the crate emits `debug` events for each attempt, each wait
//! (with its delay), acquisition, timeout and release, each with the lock's path.

// `deny`, not `forbid`: src/sys/windows_api.rs (compiled on Windows only) is the one module
// allowed `unsafe`, for the file-index and process calls std does not wrap.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod acquire;
mod backoff;
pub mod blocking;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod fault;
mod guard;
mod holder;
mod local;
mod lock;
mod rw;
mod soft;
mod sys;
mod trace;
mod wait_hook;

pub use backoff::Backoff;
pub use error::{Error, ErrorKind};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConnection, EtcdHolder, EtcdLock, EtcdLockBuilder, EtcdLockGuard};
pub use guard::FileLockGuard;
pub use holder::Holder;
pub use lock::{Acquire, FileLock, FileLockBuilder, SoftFallback};
pub use rw::{RwFileLock, RwFileLockBuilder, RwReadGuard, RwWriteGuard};
pub use soft::record::OwnerMode;
pub use soft::{
    ClaimState, CompromiseReason, LeaseCompromise, Owner, SoftFileLease, SoftFileLeaseBuilder,
    SoftFileLeaseGuard, SoftFileLock, SoftFileLockBuilder, SoftFileLockGuard, SoftRwLock,
    SoftRwLockBuilder, SoftRwReadGuard, SoftRwWriteGuard, StrictClaim, StrictSoftFileLock,
    StrictSoftFileLockBuilder, StrictSoftFileLockGuard,
};
pub use wait_hook::WaitInfo;

/// Entry points for the crate's fuzz targets (`fuzz/`), with the internal `fault-injection`
/// feature only: each takes untrusted bytes, runs them through the parsers of one kind of
/// on-disk record, and panics if a parse breaks one of the invariants the property tests
/// check. Not part of the API.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod __fuzz {
    /// The size over which a marker's content is unreadable.
    pub const MAX_RECORD: usize = crate::soft::record::MAX_RECORD;

    /// A soft-lock marker's content: protocol 1 (`SoftFileLock`) and protocol 2 (owner
    /// records), read as the soft locks and as the strict lock read them.
    pub fn marker_record(data: &[u8]) {
        crate::soft::record::check::marker(data);
    }

    /// A `SoftRwLock` generation-log entry: a `gen/<N>` snapshot, a `gen/HEAD` record, and a
    /// `gen/` entry name.
    pub fn rw_generation(data: &[u8]) {
        crate::soft::rw::protocol::check::generation(data);
    }

    /// A `SoftRwLock` `holders/<token>` record's lease.
    pub fn rw_holder(data: &[u8]) {
        crate::soft::rw::protocol::check::holder(data);
    }

    /// A strict lock's claim record and claim directory entry names.
    pub fn strict_claim(data: &[u8]) {
        crate::soft::strict::check::claim(data);
    }

    /// A lease fencing counter's entry name.
    pub fn fence_value(data: &[u8]) {
        crate::soft::lease::check::fence(data);
    }
}

/// The named futures returned by this crate's async methods.
pub mod futures {
    #[cfg(feature = "etcd")]
    pub use crate::etcd::{EtcdAcquire, EtcdLost};
    pub use crate::lock::Acquire;
    pub use crate::rw::{ReadAcquire, WriteAcquire};
    pub use crate::soft::{AcquireLease, AcquireSoft, AcquireStrict};
    pub use crate::soft::{SoftReadAcquire, SoftWriteAcquire};
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
