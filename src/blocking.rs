//! Locks for synchronous code: the same locks, waited for by blocking the calling thread.
//!
//! [`FileLock`] here wraps [`crate::FileLock`] and drives the very same waiting loop on the
//! calling thread, so it needs no async runtime, and it excludes (and is excluded by) async
//! users of the same path in the same or other processes.
//!
//! Like Python filelock's default, it is **re-entrant per thread**: a thread that holds the
//! lock through a `FileLock` (or a clone of it) may acquire it again; each acquisition returns
//! a guard, and the OS lock is released when the thread's last guard is dropped. A thread that
//! holds it shared and asks for exclusive gets a [`Deadlock`](crate::ErrorKind::Deadlock)
//! error rather than waiting for itself, and so does a thread that asks, without a time
//! limit, for a path it already holds through *another* `FileLock`.
//!
//! [`SoftFileLock`], [`SoftFileLease`] and [`StrictSoftFileLock`] are the blocking twins of
//! the soft locks. They wrap the async locks the same way (build one with options through
//! `From`, e.g. `blocking::SoftFileLock::from(async_filelock::SoftFileLock::builder(p)...)`),
//! and their guards dereference to the async guards, so a lease's `fence()` is at hand.
//! Soft locks are not re-entrant: asking again from the thread that holds one, without a time
//! limit, is a [`Deadlock`](crate::ErrorKind::Deadlock) error rather than a hang.
//!
//! [`RwFileLock`] and [`SoftRwLock`] are the blocking twins of the reader/writer locks. A
//! thread that holds one may ask again in the same mode (it joins its own hold); asking for
//! the other mode (an upgrade or a downgrade) is a [`Deadlock`](crate::ErrorKind::Deadlock)
//! error, as is asking without a time limit through another lock object for a path the
//! thread holds.
//!
//! Do not call these methods from an async task: they block the thread. Use
//! [`crate::FileLock`] there.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, Instant};
//! use async_filelock::blocking::FileLock;
//!
//! let lock = FileLock::new(std::env::temp_dir().join("doc-blocking.lock"));
//! let outer = lock.acquire()?;
//! let inner = lock.acquire()?; // re-entrant in this thread
//! assert_eq!(lock.lock_counter(), 2);
//! drop(inner);
//! drop(outer);
//! assert!(!lock.is_locked());
//!
//! let guard = lock.acquire_timeout(Duration::from_secs(5))?;
//! # drop(guard);
//! # Ok::<(), async_filelock::Error>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::acquire::{Limit, LockKind};
use crate::{Backoff, Error};

/// A cross-process file lock for synchronous code, re-entrant per thread.
///
/// See the [module documentation](self) for the semantics; the options are those of
/// [`crate::FileLock`].
#[derive(Clone)]
pub struct FileLock {
    lock: crate::FileLock,
    holds: Arc<Mutex<Holds>>,
}

/// The threads holding one lock, each with its OS lock and how many guards share it. Almost
/// always zero or one entry, so a vector searched in place beats hashing.
#[derive(Default)]
struct Holds(Vec<Hold>);

struct Hold {
    thread: ThreadId,
    guard: crate::FileLockGuard,
    count: usize,
}

impl Holds {
    fn get(&mut self, thread: ThreadId) -> Option<&mut Hold> {
        self.0.iter_mut().find(|h| h.thread == thread)
    }

    fn take(&mut self, thread: ThreadId) -> Option<Hold> {
        let i = self.0.iter().position(|h| h.thread == thread)?;
        Some(self.0.swap_remove(i))
    }
}

thread_local! {
    /// Paths (by the address of their in-process state) this thread holds through a blocking
    /// `FileLock`, once per lock holding it: a second lock asking for one of them would wait
    /// for this very thread.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl FileLock {
    /// Creates a lock for the file at `path` with default options. No I/O happens here.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::blocking::FileLock::new("/tmp/script.lock");
    /// # let _ = lock;
    /// ```
    pub fn new(path: impl AsRef<Path>) -> FileLock {
        FileLock::from(crate::FileLock::new(path))
    }

    /// Starts building a lock with options; see [`crate::FileLockBuilder`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let lock = async_filelock::blocking::FileLock::builder("/tmp/script.lock")
    ///     .timeout(Duration::from_secs(3))
    ///     .build()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> FileLockBuilder {
        FileLockBuilder(crate::FileLock::builder(path))
    }

    /// The path of the lock file, as given.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// The async lock this one wraps.
    pub fn as_async(&self) -> &crate::FileLock {
        &self.lock
    }

    /// The processes that hold the OS lock on this file now; `None` where the platform
    /// cannot tell. See [`crate::FileLock::holders`].
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::blocking::FileLock::new(std::env::temp_dir().join("doc-b-holders.lock"));
    /// let guard = lock.acquire()?;
    /// if let Some(holders) = lock.holders() {
    ///     assert_eq!(holders[0].pid(), std::process::id());
    /// }
    /// # drop(guard);
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn holders(&self) -> Option<Vec<crate::Holder>> {
        self.lock.holders()
    }

    /// Blocks until the lock is held exclusively (or the lock's timeout passes).
    ///
    /// # Errors
    ///
    /// As [`crate::FileLock::acquire`], plus [`Deadlock`](crate::ErrorKind::Deadlock) when
    /// this thread holds the lock shared, or holds the path through another lock and no time
    /// limit is set.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::blocking::FileLock::new(std::env::temp_dir().join("doc-b1.lock"));
    /// let guard = lock.acquire()?;
    /// assert!(lock.is_locked());
    /// # drop(guard);
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<FileLockGuard, Error> {
        self.acquire_with(false, Limit::Default)
    }

    /// Blocks until the lock is held shared (or the lock's timeout passes).
    ///
    /// # Errors
    ///
    /// As [`acquire`](FileLock::acquire).
    pub fn acquire_shared(&self) -> Result<FileLockGuard, Error> {
        self.acquire_with(true, Limit::Default)
    }

    /// Blocks until the lock is held exclusively or `timeout` passes; `Duration::ZERO` means
    /// one attempt.
    ///
    /// # Errors
    ///
    /// [`Timeout`](crate::ErrorKind::Timeout) when the time runs out; otherwise as
    /// [`acquire`](FileLock::acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<FileLockGuard, Error> {
        self.acquire_with(false, Limit::After(Some(timeout)))
    }

    /// Blocks until the lock is held shared or `timeout` passes.
    ///
    /// # Errors
    ///
    /// As [`acquire_timeout`](FileLock::acquire_timeout).
    pub fn acquire_shared_timeout(&self, timeout: Duration) -> Result<FileLockGuard, Error> {
        self.acquire_with(true, Limit::After(Some(timeout)))
    }

    /// Makes one attempt to take the lock exclusively, without waiting. Succeeds at once if
    /// this thread already holds it exclusively through this lock.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when the lock is held elsewhere; otherwise
    /// as [`acquire`](FileLock::acquire).
    pub fn try_acquire(&self) -> Result<FileLockGuard, Error> {
        self.acquire_with(false, Limit::Once)
    }

    /// Makes one attempt to take the lock shared, without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](FileLock::try_acquire).
    pub fn try_acquire_shared(&self) -> Result<FileLockGuard, Error> {
        self.acquire_with(true, Limit::Once)
    }

    /// How many guards the calling thread holds through this lock (and its clones).
    pub fn lock_counter(&self) -> usize {
        self.holds()
            .get(thread::current().id())
            .map_or(0, |h| h.count)
    }

    /// Whether the calling thread holds this lock.
    pub fn is_locked(&self) -> bool {
        self.lock_counter() > 0
    }

    fn holds(&self) -> MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire_with(&self, shared: bool, limit: Limit) -> Result<FileLockGuard, Error> {
        let thread = thread::current().id();
        if let Some(hold) = self.holds().get(thread) {
            if hold.guard.is_shared() && !shared {
                return Err(Error::deadlock(
                    hold.guard.path(),
                    "this thread holds it shared, and asking for it exclusively would wait \
                     for itself (release the shared guards first)",
                ));
            }
            hold.count += 1;
            return Ok(self.guard(thread));
        }
        let key = Arc::as_ptr(&self.lock.hard.prepare()?) as usize;
        let limit = limit.or(self.lock.timeout());
        let forever = limit.deadline(Instant::now()).is_none();
        if forever && HELD.try_with(|h| h.borrow().contains(&key)) == Ok(true) {
            return Err(Error::deadlock(
                self.lock.hard.path(),
                "this thread already holds it through another lock object, so waiting would \
                 never end",
            ));
        }
        let guard = self.lock.acquire_inline(shared, limit)?;
        self.holds().0.push(Hold {
            thread,
            guard,
            count: 1,
        });
        // Unavailable only while this thread's locals are being destroyed.
        let _ = HELD.try_with(|h| h.borrow_mut().push(key));
        Ok(self.guard(thread))
    }

    fn guard(&self, thread: ThreadId) -> FileLockGuard {
        FileLockGuard {
            lock: self.clone(),
            thread,
            done: false,
            _not_send: PhantomData,
        }
    }

    /// Ends one level of the thread's hold; the last level releases the OS lock.
    fn leave(&self, thread: ThreadId) -> Result<(), Error> {
        let last = {
            let mut holds = self.holds();
            let Some(hold) = holds.get(thread) else {
                return Ok(());
            };
            hold.count -= 1;
            if hold.count > 0 {
                return Ok(());
            }
            holds.take(thread).expect("present above")
        };
        let key = Arc::as_ptr(last.guard.lock_local()) as usize;
        // A guard dropped while this thread's locals are destroyed finds `HELD` gone; there is
        // nothing left to update then.
        let _ = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().position(|&k| k == key) {
                h.swap_remove(i);
            }
        });
        last.guard.release()
    }
}

impl From<crate::FileLock> for FileLock {
    /// Wraps an async lock (sharing its options) for use from synchronous code.
    fn from(lock: crate::FileLock) -> FileLock {
        FileLock {
            lock,
            holds: Arc::default(),
        }
    }
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::FileLock")
            .field("lock", &self.lock)
            .field("lock_counter", &self.lock_counter())
            .finish()
    }
}

/// One level of a thread's hold on a [`blocking::FileLock`](FileLock).
///
/// Dropping it ends that level; dropping the thread's last guard releases the lock. It is
/// not `Send`: the hold belongs to the thread that took it, as re-entrancy is counted per
/// thread.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FileLockGuard {
    lock: FileLock,
    thread: ThreadId,
    done: bool,
    _not_send: PhantomData<*const ()>,
}

impl FileLockGuard {
    /// Whether the thread's hold is shared. A shared request made while the thread holds the
    /// lock exclusively joins the exclusive hold, so this can be `false` for it.
    pub fn is_shared(&self) -> bool {
        self.lock
            .holds()
            .get(self.thread)
            .is_some_and(|h| h.guard.is_shared())
    }

    /// The path of the locked file, resolved as for [`crate::FileLockGuard::path`].
    pub fn path(&self) -> &Path {
        self.lock.lock.hard.resolved_path()
    }

    /// Ends this level of the hold, reporting an error from releasing the OS lock if this was
    /// the last level.
    ///
    /// # Errors
    ///
    /// As [`crate::FileLockGuard::release`].
    pub fn release(mut self) -> Result<(), Error> {
        self.done = true;
        self.lock.leave(self.thread)
    }
}

impl Drop for FileLockGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.lock.leave(self.thread);
        }
    }
}

impl fmt::Debug for FileLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::FileLockGuard")
            .field("path", &self.path())
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// Options for a [`blocking::FileLock`](FileLock); the same as [`crate::FileLockBuilder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct FileLockBuilder(crate::FileLockBuilder);

impl FileLockBuilder {
    /// See [`crate::FileLockBuilder::timeout`].
    pub fn timeout(self, timeout: Duration) -> FileLockBuilder {
        FileLockBuilder(self.0.timeout(timeout))
    }

    /// See [`crate::FileLockBuilder::backoff`].
    pub fn backoff(self, backoff: Backoff) -> FileLockBuilder {
        FileLockBuilder(self.0.backoff(backoff))
    }

    /// See [`crate::FileLockBuilder::mode`].
    pub fn mode(self, mode: u32) -> FileLockBuilder {
        FileLockBuilder(self.0.mode(mode))
    }

    /// See [`crate::FileLockBuilder::delete_on_release`].
    pub fn delete_on_release(self, delete: bool) -> FileLockBuilder {
        FileLockBuilder(self.0.delete_on_release(delete))
    }

    /// Calls `f` once when an acquisition first has to wait, on the waiting thread; see
    /// [`crate::FileLockBuilder::on_wait`].
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = async_filelock::blocking::FileLock::builder("/tmp/script.lock")
    ///     .on_wait(|info| eprintln!("Blocking waiting for file lock on {}", info.path().display()))
    ///     .build()?;
    /// # drop(lock);
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    pub fn on_wait(
        self,
        f: impl Fn(&crate::WaitInfo<'_>) + Send + Sync + 'static,
    ) -> FileLockBuilder {
        FileLockBuilder(self.0.on_wait(f))
    }

    /// Calls `f` when an acquisition first has to wait and every `interval` after; see
    /// [`crate::FileLockBuilder::on_wait_every`].
    pub fn on_wait_every(
        self,
        interval: Duration,
        f: impl Fn(&crate::WaitInfo<'_>) + Send + Sync + 'static,
    ) -> FileLockBuilder {
        FileLockBuilder(self.0.on_wait_every(interval, f))
    }

    /// Checks the options and builds the lock.
    ///
    /// # Errors
    ///
    /// As [`crate::FileLockBuilder::build`].
    pub fn build(self) -> Result<FileLock, Error> {
        self.0.build().map(FileLock::from)
    }
}

/// Blocking twins of the soft locks: each waits on the calling thread and returns a guard
/// that dereferences to the async lock's guard.
///
/// Soft locks are not re-entrant: a marker names a process, not a thread, so a thread that
/// holds one cannot tell its own nested use from another thread's. A thread that asks again,
/// without a time limit, for a path it holds through a blocking lock gets a
/// [`Deadlock`](crate::ErrorKind::Deadlock) error instead of waiting for itself.
macro_rules! blocking_soft {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $(#[$gdoc:meta])* $guard:ident, $inner_guard:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            lock: $inner,
        }

        impl $name {
            /// Creates the lock on `path` with default options. No I/O happens here.
            pub fn new(path: impl AsRef<Path>) -> $name {
                $name { lock: <$inner>::new(path) }
            }

            /// The path of the marker, as given.
            pub fn path(&self) -> &Path {
                self.lock.path()
            }

            /// The async lock this one wraps.
            pub fn as_async(&self) -> &$inner {
                &self.lock
            }

            /// Blocks until the lock is held (or the lock's timeout passes).
            ///
            /// # Errors
            ///
            /// As the async lock's `acquire`, plus [`Deadlock`](crate::ErrorKind::Deadlock)
            /// when this thread already holds the path through a blocking lock and no time
            /// limit is set.
            pub fn acquire(&self) -> Result<$guard, Error> {
                self.acquire_with(Limit::Default)
            }

            /// Blocks until the lock is held or `timeout` passes; `Duration::ZERO` means one
            /// attempt.
            ///
            /// # Errors
            ///
            /// [`Timeout`](crate::ErrorKind::Timeout) when the time runs out; otherwise as
            /// [`acquire`](Self::acquire).
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<$guard, Error> {
                self.acquire_with(Limit::After(Some(timeout)))
            }

            /// Makes one attempt, without waiting.
            ///
            /// # Errors
            ///
            /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when the lock is held elsewhere.
            pub fn try_acquire(&self) -> Result<$guard, Error> {
                self.acquire_with(Limit::Once)
            }

            fn acquire_with(&self, limit: Limit) -> Result<$guard, Error> {
                let key = Arc::as_ptr(&self.lock.queue()?) as usize;
                let forever = limit.or(self.lock.timeout()).deadline(Instant::now()).is_none();
                if forever && HELD.try_with(|h| h.borrow().contains(&key)) == Ok(true) {
                    return Err(Error::deadlock(
                        self.lock.path(),
                        "this thread already holds it, and soft locks are not re-entrant, so \
                         waiting would never end",
                    ));
                }
                let inner = self.lock.acquire_blocking(limit)?;
                let _ = HELD.try_with(|h| h.borrow_mut().push(key));
                Ok($guard { inner: Some(inner), key, _not_send: PhantomData })
            }
        }

        impl From<$inner> for $name {
            /// Wraps an async lock (sharing its options) for use from synchronous code.
            fn from(lock: $inner) -> $name {
                $name { lock }
            }
        }

        $(#[$gdoc])*
        ///
        /// It dereferences to the async guard. It is not `Send`: the thread that took it
        /// releases it.
        #[must_use = "the lock is released as soon as the guard is dropped"]
        pub struct $guard {
            inner: Option<$inner_guard>,
            key: usize,
            _not_send: PhantomData<*const ()>,
        }

        impl $guard {
            /// Releases the lock now.
            ///
            /// # Errors
            ///
            /// As the async guard's `release`.
            pub fn release(mut self) -> Result<(), Error> {
                self.forget_hold();
                self.inner.take().map_or(Ok(()), |g| g.release())
            }

            fn forget_hold(&self) {
                let key = self.key;
                let _ = HELD.try_with(|h| {
                    let mut h = h.borrow_mut();
                    if let Some(i) = h.iter().position(|&k| k == key) {
                        h.swap_remove(i);
                    }
                });
            }
        }

        impl std::ops::Deref for $guard {
            type Target = $inner_guard;

            fn deref(&self) -> &$inner_guard {
                self.inner.as_ref().expect("a live guard holds its lock")
            }
        }

        impl Drop for $guard {
            fn drop(&mut self) {
                if self.inner.is_some() {
                    self.forget_hold();
                }
            }
        }

        impl fmt::Debug for $guard {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($guard)).field(&self.inner).finish()
            }
        }
    };
}

blocking_soft!(
    /// A [`crate::SoftFileLock`] for synchronous code.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::blocking::SoftFileLock;
    ///
    /// let lock = SoftFileLock::new(std::env::temp_dir().join("doc-blocking-soft.lock"));
    /// let guard = lock.acquire()?;
    /// assert!(lock.as_async().is_held_by_us());
    /// // Not re-entrant: asking again without a time limit is refused, not a hang.
    /// assert_eq!(lock.acquire().unwrap_err().kind(), async_filelock::ErrorKind::Deadlock);
    /// guard.release()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    SoftFileLock,
    crate::SoftFileLock,
    /// A held [`blocking::SoftFileLock`](SoftFileLock); dropping it removes the marker.
    SoftFileLockGuard,
    crate::SoftFileLockGuard
);

blocking_soft!(
    /// A [`crate::SoftFileLease`] for synchronous code. The heartbeat runs on its own
    /// thread, as with the async lease.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::blocking::SoftFileLease;
    ///
    /// let lease = SoftFileLease::new(std::env::temp_dir().join("doc-blocking-lease.lock"));
    /// let guard = lease.acquire()?;
    /// println!("holding with fencing token {}", guard.fence());
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    SoftFileLease,
    crate::SoftFileLease,
    /// A held [`blocking::SoftFileLease`](SoftFileLease); dropping it stops the heartbeat and
    /// removes the marker.
    SoftFileLeaseGuard,
    crate::SoftFileLeaseGuard
);

blocking_soft!(
    /// A [`crate::StrictSoftFileLock`] for synchronous code.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::blocking::StrictSoftFileLock;
    ///
    /// let lock = StrictSoftFileLock::new(std::env::temp_dir().join("doc-blocking-strict.lock"));
    /// let guard = lock.acquire()?;
    /// assert_eq!(lock.as_async().claims()?.len(), 2); // our intent and held claims
    /// guard.release()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    StrictSoftFileLock,
    crate::StrictSoftFileLock,
    /// A held [`blocking::StrictSoftFileLock`](StrictSoftFileLock); dropping it removes this
    /// holder's claims.
    StrictSoftFileLockGuard,
    crate::StrictSoftFileLockGuard
);

/// What a blocking reader/writer wrapper needs from the async lock it wraps.
pub(crate) trait RwAsync: Clone {
    /// The async read guard.
    type Read: Send + 'static;
    /// The async write guard.
    type Write: Send + 'static;

    /// The lock's path, as given.
    fn path(&self) -> &Path;
    /// The lock's default time limit.
    fn timeout(&self) -> Option<Duration>;
    /// The in-process state of the lock's path: its address identifies the path.
    fn queue(&self) -> Result<Arc<crate::local::Local>, Error>;
    /// Reads, waiting on the calling thread.
    fn read_inline(&self, limit: Limit) -> Result<Self::Read, Error>;
    /// Writes, waiting on the calling thread.
    fn write_inline(&self, limit: Limit) -> Result<Self::Write, Error>;
    /// Releases a read guard, reporting errors.
    fn release_read(guard: Self::Read) -> Result<(), Error>;
    /// Releases a write guard, reporting errors.
    fn release_write(guard: Self::Write) -> Result<(), Error>;
}

/// One thread's hold on a blocking reader/writer lock.
enum RwHeld<L: RwAsync> {
    Read(L::Read),
    Write(L::Write),
}

/// A blocking reader/writer lock's holds: per thread, one async guard and how many blocking
/// guards share it.
pub(crate) struct RwNest<L: RwAsync> {
    lock: L,
    holds: Arc<Mutex<RwHolds<L>>>,
}

/// Per thread: its hold, and how many blocking guards share it.
type RwHolds<L> = Vec<(ThreadId, RwHeld<L>, usize)>;

impl<L: RwAsync> Clone for RwNest<L> {
    fn clone(&self) -> Self {
        RwNest {
            lock: self.lock.clone(),
            holds: self.holds.clone(),
        }
    }
}

impl<L: RwAsync> RwNest<L> {
    fn new(lock: L) -> RwNest<L> {
        RwNest {
            lock,
            holds: Arc::default(),
        }
    }

    fn holds(&self) -> MutexGuard<'_, RwHolds<L>> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The calling thread's hold: `Some(write)` when it holds the lock.
    fn mode(&self, thread: ThreadId) -> Option<bool> {
        self.holds()
            .iter()
            .find(|h| h.0 == thread)
            .map(|h| matches!(h.1, RwHeld::Write(_)))
    }

    /// Runs `f` on the calling thread's async guard.
    fn with_held<T>(
        &self,
        thread: ThreadId,
        f: impl FnOnce(Result<&L::Read, &L::Write>) -> T,
    ) -> T {
        let holds = self.holds();
        let held = &holds
            .iter()
            .find(|h| h.0 == thread)
            .expect("a live blocking guard has a hold")
            .1;
        f(match held {
            RwHeld::Read(g) => Ok(g),
            RwHeld::Write(g) => Err(g),
        })
    }

    /// Joins the thread's hold in the same mode, or takes the lock; returns the thread.
    fn acquire(&self, write: bool, limit: Limit) -> Result<ThreadId, Error> {
        let thread = thread::current().id();
        {
            let mut holds = self.holds();
            if let Some(hold) = holds.iter_mut().find(|h| h.0 == thread) {
                return match (&hold.1, write) {
                    (RwHeld::Read(_), false) | (RwHeld::Write(_), true) => {
                        hold.2 += 1;
                        Ok(thread)
                    }
                    (RwHeld::Read(_), true) => Err(Error::deadlock(
                        self.lock.path(),
                        "this thread holds it for reading: upgrading to write is not allowed \
                         (release the read guards, then ask for write)",
                    )),
                    (RwHeld::Write(_), false) => Err(Error::deadlock(
                        self.lock.path(),
                        "this thread holds it for writing: downgrading to read is not allowed \
                         (release the write guards, then ask for read)",
                    )),
                };
            }
        }
        let key = Arc::as_ptr(&self.lock.queue()?) as usize;
        let forever = limit
            .or(self.lock.timeout())
            .deadline(Instant::now())
            .is_none();
        if forever && HELD.try_with(|h| h.borrow().contains(&key)) == Ok(true) {
            return Err(Error::deadlock(
                self.lock.path(),
                "this thread already holds it through another lock object, so waiting would \
                 never end",
            ));
        }
        let held = if write {
            RwHeld::Write(self.lock.write_inline(limit)?)
        } else {
            RwHeld::Read(self.lock.read_inline(limit)?)
        };
        self.holds().push((thread, held, 1));
        let _ = HELD.try_with(|h| h.borrow_mut().push(key));
        Ok(thread)
    }

    /// Ends one level of the thread's hold; the last level releases the lock.
    fn leave(&self, thread: ThreadId) -> Result<(), Error> {
        let last = {
            let mut holds = self.holds();
            let Some(i) = holds.iter().position(|h| h.0 == thread) else {
                return Ok(());
            };
            holds[i].2 -= 1;
            if holds[i].2 > 0 {
                return Ok(());
            }
            holds.swap_remove(i).1
        };
        if let Ok(queue) = self.lock.queue() {
            let key = Arc::as_ptr(&queue) as usize;
            let _ = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().position(|&k| k == key) {
                    h.swap_remove(i);
                }
            });
        }
        match last {
            RwHeld::Read(g) => L::release_read(g),
            RwHeld::Write(g) => L::release_write(g),
        }
    }
}

/// Blocking twins of the reader/writer locks. Per thread, a lock is re-entrant in the mode
/// the thread holds it in; asking for the other mode is a [`Deadlock`](crate::ErrorKind::Deadlock)
/// error (no silent upgrade or downgrade).
macro_rules! blocking_rw {
    (
        $(#[$doc:meta])* $name:ident, $inner:ty,
        $(#[$rdoc:meta])* $read:ident,
        $(#[$wdoc:meta])* $write:ident
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            nest: RwNest<$inner>,
        }

        impl $name {
            /// Creates the lock on `path` with default options. No I/O happens here.
            pub fn new(path: impl AsRef<Path>) -> $name {
                $name::from(<$inner>::new(path))
            }

            /// The path of the lock, as given.
            pub fn path(&self) -> &Path {
                self.nest.lock.path()
            }

            /// The async lock this one wraps.
            pub fn as_async(&self) -> &$inner {
                &self.nest.lock
            }

            /// Blocks until the lock is held for reading (or the lock's timeout passes). A
            /// thread that already reads through this lock joins its own hold.
            ///
            /// # Errors
            ///
            /// As the async lock's `read`, plus [`Deadlock`](crate::ErrorKind::Deadlock)
            /// when this thread holds the lock for writing, or holds the path through
            /// another lock object and no time limit is set.
            pub fn read(&self) -> Result<$read, Error> {
                self.read_with(Limit::Default)
            }

            /// Blocks until the lock is held for reading or `timeout` passes.
            ///
            /// # Errors
            ///
            /// [`Timeout`](crate::ErrorKind::Timeout) when the time runs out; otherwise as
            /// [`read`](Self::read).
            pub fn read_timeout(&self, timeout: Duration) -> Result<$read, Error> {
                self.read_with(Limit::After(Some(timeout)))
            }

            /// One attempt to read, without waiting.
            ///
            /// # Errors
            ///
            /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when a writer holds or awaits
            /// the lock; otherwise as [`read`](Self::read).
            pub fn try_read(&self) -> Result<$read, Error> {
                self.read_with(Limit::Once)
            }

            /// Blocks until the lock is held for writing (or the lock's timeout passes). A
            /// thread that already writes through this lock joins its own hold.
            ///
            /// # Errors
            ///
            /// As the async lock's `write`, plus [`Deadlock`](crate::ErrorKind::Deadlock)
            /// when this thread holds the lock for reading (upgrading is not allowed), or
            /// holds the path through another lock object and no time limit is set.
            pub fn write(&self) -> Result<$write, Error> {
                self.write_with(Limit::Default)
            }

            /// Blocks until the lock is held for writing or `timeout` passes.
            ///
            /// # Errors
            ///
            /// [`Timeout`](crate::ErrorKind::Timeout) when the time runs out; otherwise as
            /// [`write`](Self::write).
            pub fn write_timeout(&self, timeout: Duration) -> Result<$write, Error> {
                self.write_with(Limit::After(Some(timeout)))
            }

            /// One attempt to write, without waiting.
            ///
            /// # Errors
            ///
            /// [`WouldBlock`](crate::ErrorKind::WouldBlock) when anyone holds the lock or a
            /// writer awaits it; otherwise as [`write`](Self::write).
            pub fn try_write(&self) -> Result<$write, Error> {
                self.write_with(Limit::Once)
            }

            /// Whether the calling thread holds the lock (`Some(true)`: for writing).
            pub fn held_by_this_thread(&self) -> Option<bool> {
                self.nest.mode(thread::current().id())
            }

            fn read_with(&self, limit: Limit) -> Result<$read, Error> {
                let thread = self.nest.acquire(false, limit)?;
                Ok($read { nest: self.nest.clone(), thread, done: false, _not_send: PhantomData })
            }

            fn write_with(&self, limit: Limit) -> Result<$write, Error> {
                let thread = self.nest.acquire(true, limit)?;
                Ok($write { nest: self.nest.clone(), thread, done: false, _not_send: PhantomData })
            }
        }

        impl From<$inner> for $name {
            /// Wraps an async lock (sharing its options) for use from synchronous code.
            fn from(lock: $inner) -> $name {
                $name { nest: RwNest::new(lock) }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(concat!("blocking::", stringify!($name)))
                    .field("lock", &self.nest.lock)
                    .field("held_by_this_thread", &self.held_by_this_thread())
                    .finish()
            }
        }

        blocking_rw!(@guard $(#[$rdoc])* $read, $inner);
        blocking_rw!(@guard $(#[$wdoc])* $write, $inner);
    };
    (@guard $(#[$doc:meta])* $guard:ident, $inner:ty) => {
        $(#[$doc])*
        ///
        /// Dropping it ends one level of the thread's hold; the last level releases the lock.
        /// It is not `Send`: the hold belongs to the thread that took it.
        #[must_use = "the lock is released as soon as the guard is dropped"]
        pub struct $guard {
            nest: RwNest<$inner>,
            thread: ThreadId,
            done: bool,
            _not_send: PhantomData<*const ()>,
        }

        impl $guard {
            /// The lock's path, as given.
            pub fn path(&self) -> &Path {
                self.nest.lock.path()
            }

            /// Ends this level of the hold, reporting an error from releasing the lock if
            /// this was the last level.
            ///
            /// # Errors
            ///
            /// As the async guard's `release`.
            pub fn release(mut self) -> Result<(), Error> {
                self.done = true;
                self.nest.leave(self.thread)
            }
        }

        impl Drop for $guard {
            fn drop(&mut self) {
                if !self.done {
                    let _ = self.nest.leave(self.thread);
                }
            }
        }

        impl fmt::Debug for $guard {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard)).field("path", &self.path()).finish()
            }
        }
    };
}

impl RwAsync for crate::RwFileLock {
    type Read = crate::RwReadGuard;
    type Write = crate::RwWriteGuard;

    fn path(&self) -> &Path {
        crate::RwFileLock::path(self)
    }

    fn timeout(&self) -> Option<Duration> {
        crate::RwFileLock::timeout(self)
    }

    fn queue(&self) -> Result<Arc<crate::local::Local>, Error> {
        crate::RwFileLock::queue(self)
    }

    fn read_inline(&self, limit: Limit) -> Result<Self::Read, Error> {
        crate::RwFileLock::read_inline(self, limit)
    }

    fn write_inline(&self, limit: Limit) -> Result<Self::Write, Error> {
        crate::RwFileLock::write_inline(self, limit)
    }

    fn release_read(guard: Self::Read) -> Result<(), Error> {
        guard.release()
    }

    fn release_write(guard: Self::Write) -> Result<(), Error> {
        guard.release()
    }
}

blocking_rw!(
    /// A [`crate::RwFileLock`] for synchronous code: readers share, a writer excludes, and
    /// a waiting writer goes ahead of new readers.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::{blocking::RwFileLock, ErrorKind};
    ///
    /// let lock = RwFileLock::new(std::env::temp_dir().join("doc-blocking-rw.db"));
    /// let outer = lock.read()?;
    /// let inner = lock.read()?; // joins this thread's read hold
    /// // No silent upgrade: release the read guards first.
    /// assert_eq!(lock.write().unwrap_err().kind(), ErrorKind::Deadlock);
    /// drop((inner, outer));
    /// let w = lock.write()?;
    /// w.release()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    RwFileLock,
    crate::RwFileLock,
    /// One level of a thread's read hold on a [`blocking::RwFileLock`](RwFileLock).
    RwReadGuard,
    /// One level of a thread's write hold on a [`blocking::RwFileLock`](RwFileLock).
    RwWriteGuard
);

impl RwFileLock {
    /// The processes that hold the lock now (the data file's, or a writer waiting in the
    /// gate); `None` where the platform cannot tell. See [`crate::RwFileLock::holders`].
    pub fn holders(&self) -> Option<Vec<crate::Holder>> {
        self.nest.lock.holders()
    }
}

impl RwAsync for crate::SoftRwLock {
    type Read = crate::SoftRwReadGuard;
    type Write = crate::SoftRwWriteGuard;

    fn path(&self) -> &Path {
        crate::SoftRwLock::path(self)
    }

    fn timeout(&self) -> Option<Duration> {
        crate::SoftRwLock::timeout(self)
    }

    fn queue(&self) -> Result<Arc<crate::local::Local>, Error> {
        crate::SoftRwLock::queue(self)
    }

    fn read_inline(&self, limit: Limit) -> Result<Self::Read, Error> {
        crate::SoftRwLock::read_inline(self, limit)
    }

    fn write_inline(&self, limit: Limit) -> Result<Self::Write, Error> {
        crate::SoftRwLock::write_inline(self, limit)
    }

    fn release_read(guard: Self::Read) -> Result<(), Error> {
        guard.release()
    }

    fn release_write(guard: Self::Write) -> Result<(), Error> {
        guard.release()
    }
}

blocking_rw!(
    /// A [`crate::SoftRwLock`] for synchronous code. Each thread's hold is one member of
    /// the lock, with its own heartbeat thread, whatever the nesting.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_filelock::blocking::SoftRwLock;
    ///
    /// let lock = SoftRwLock::new(std::env::temp_dir().join("doc-blocking-soft-rw.lock"));
    /// let w = lock.write()?;
    /// println!("writing at generation {}", w.generation());
    /// w.release()?;
    /// # Ok::<(), async_filelock::Error>(())
    /// ```
    SoftRwLock,
    crate::SoftRwLock,
    /// One level of a thread's read hold on a [`blocking::SoftRwLock`](SoftRwLock).
    SoftRwReadGuard,
    /// One level of a thread's write hold on a [`blocking::SoftRwLock`](SoftRwLock).
    SoftRwWriteGuard
);

macro_rules! soft_rw_blocking_guard {
    ($guard:ident) => {
        impl $guard {
            /// The generation the thread's hold was granted at (its fencing token).
            pub fn generation(&self) -> u64 {
                self.nest.with_held(self.thread, |held| match held {
                    Ok(read) => read.generation(),
                    Err(write) => write.generation(),
                })
            }

            /// The loss of the thread's hold, once its heartbeat has seen one.
            pub fn compromise(&self) -> Option<crate::LeaseCompromise> {
                self.nest.with_held(self.thread, |held| match held {
                    Ok(read) => read.compromise(),
                    Err(write) => write.compromise(),
                })
            }
        }
    };
}

soft_rw_blocking_guard!(SoftRwReadGuard);
soft_rw_blocking_guard!(SoftRwWriteGuard);
