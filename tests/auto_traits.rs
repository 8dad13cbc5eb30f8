//! Compile-time checks of the auto traits (and `'static`, `Debug`) of every public type, and of
//! the signatures of the methods that return them, in the style of tokio's
//! `tests/async_send_sync.rs`. A change that loses (or gains) `Send`, `Sync` or `Unpin` fails
//! to compile here.
//!
//! Negative checks use the "ambiguous impl" trick: `AmbiguousIfSend::some_item(&x)` only
//! resolves when `x` is *not* `Send` (for a `Send` type two impls apply and the call is
//! ambiguous).

#![allow(clippy::diverging_sub_expression, dead_code, unreachable_code)]

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::path::Path;
use std::time::Duration;

use async_filelock::{
    blocking, Acquire, Backoff, ClaimState, CompromiseReason, Error, ErrorKind, FileLock,
    FileLockBuilder, FileLockGuard, Holder, LeaseCompromise, Owner, OwnerMode, RwFileLock,
    RwFileLockBuilder, RwReadGuard, RwWriteGuard, SoftFallback, SoftFileLease,
    SoftFileLeaseBuilder, SoftFileLeaseGuard, SoftFileLock, SoftFileLockBuilder, SoftFileLockGuard,
    SoftRwLock, SoftRwLockBuilder, SoftRwReadGuard, SoftRwWriteGuard, StrictClaim,
    StrictSoftFileLock, StrictSoftFileLockBuilder, StrictSoftFileLockGuard, WaitInfo,
};

fn require_send<T: Send>(_: &T) {}
fn require_sync<T: Sync>(_: &T) {}
fn require_unpin<T: Unpin>(_: &T) {}
fn require_static<T: 'static>(_: &T) {}
fn require_debug<T: Debug>(_: &T) {}

struct Invalid;

trait AmbiguousIfSend<A> {
    fn some_item(&self) {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}

trait AmbiguousIfSync<A> {
    fn some_item(&self) {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<Invalid> for T {}

trait AmbiguousIfUnpin<A> {
    fn some_item(&self) {}
}
impl<T: ?Sized> AmbiguousIfUnpin<()> for T {}
impl<T: ?Sized + Unpin> AmbiguousIfUnpin<Invalid> for T {}

/// A value of any type, for checks that are compiled but never run.
fn value<T>() -> T {
    unreachable!("compile-time check only")
}

macro_rules! assert_value {
    ($type:ty: $($rest:tt)*) => {
        const _: fn() = || {
            let f: $type = value();
            require_static(&f);
            require_debug(&f);
            assert_value!(@send f, $($rest)*);
        };
    };
    (@send $f:ident, Send & $($rest:tt)*) => {
        require_send(&$f);
        assert_value!(@sync $f, $($rest)*);
    };
    (@send $f:ident, !Send & $($rest:tt)*) => {
        AmbiguousIfSend::some_item(&$f);
        assert_value!(@sync $f, $($rest)*);
    };
    (@sync $f:ident, Sync & $($rest:tt)*) => {
        require_sync(&$f);
        assert_value!(@unpin $f, $($rest)*);
    };
    (@sync $f:ident, !Sync & $($rest:tt)*) => {
        AmbiguousIfSync::some_item(&$f);
        assert_value!(@unpin $f, $($rest)*);
    };
    (@unpin $f:ident, Unpin) => {
        require_unpin(&$f);
    };
    (@unpin $f:ident, !Unpin) => {
        AmbiguousIfUnpin::some_item(&$f);
    };
}

// The async lock and its options.
assert_value!(FileLock: Send & Sync & Unpin);
assert_value!(FileLockBuilder: Send & Sync & Unpin);
assert_value!(FileLockGuard: Send & Sync & Unpin);
assert_value!(Acquire: Send & Sync & Unpin);
assert_value!(async_filelock::futures::Acquire: Send & Sync & Unpin);
assert_value!(Backoff: Send & Sync & Unpin);
assert_value!(Error: Send & Sync & Unpin);
assert_value!(ErrorKind: Send & Sync & Unpin);
assert_value!(Result<FileLockGuard, Error>: Send & Sync & Unpin);

// The blocking wrappers: the guard belongs to the thread that took it.
assert_value!(blocking::FileLock: Send & Sync & Unpin);
assert_value!(blocking::FileLockBuilder: Send & Sync & Unpin);
assert_value!(blocking::FileLockGuard: !Send & !Sync & Unpin);

// The soft locks: the same shape as FileLock.
assert_value!(SoftFileLock: Send & Sync & Unpin);
assert_value!(SoftFileLockBuilder: Send & Sync & Unpin);
assert_value!(SoftFileLockGuard: Send & Sync & Unpin);
assert_value!(async_filelock::futures::AcquireSoft: Send & Sync & Unpin);
assert_value!(SoftFileLease: Send & Sync & Unpin);
assert_value!(SoftFileLeaseBuilder: Send & Sync & Unpin);
assert_value!(SoftFileLeaseGuard: Send & Sync & Unpin);
assert_value!(async_filelock::futures::AcquireLease: Send & Sync & Unpin);
assert_value!(StrictSoftFileLock: Send & Sync & Unpin);
assert_value!(StrictSoftFileLockBuilder: Send & Sync & Unpin);
assert_value!(StrictSoftFileLockGuard: Send & Sync & Unpin);
assert_value!(async_filelock::futures::AcquireStrict: Send & Sync & Unpin);
assert_value!(Owner: Send & Sync & Unpin);
assert_value!(Holder: Send & Sync & Unpin);
assert_value!(WaitInfo<'static>: Send & Sync & Unpin);
assert_value!(OwnerMode: Send & Sync & Unpin);
assert_value!(StrictClaim: Send & Sync & Unpin);
assert_value!(ClaimState: Send & Sync & Unpin);
assert_value!(LeaseCompromise: Send & Sync & Unpin);
assert_value!(CompromiseReason: Send & Sync & Unpin);
assert_value!(SoftFallback: Send & Sync & Unpin);
assert_value!(blocking::SoftFileLock: Send & Sync & Unpin);
assert_value!(blocking::SoftFileLockGuard: !Send & !Sync & Unpin);
assert_value!(blocking::SoftFileLease: Send & Sync & Unpin);
assert_value!(blocking::SoftFileLeaseGuard: !Send & !Sync & Unpin);
assert_value!(RwFileLock: Send & Sync & Unpin);
assert_value!(RwFileLockBuilder: Send & Sync & Unpin);
assert_value!(RwReadGuard: Send & Sync & Unpin);
assert_value!(RwWriteGuard: Send & Sync & Unpin);
assert_value!(async_filelock::futures::ReadAcquire: Send & Sync & Unpin);
assert_value!(async_filelock::futures::WriteAcquire: Send & Sync & Unpin);
assert_value!(blocking::RwFileLock: Send & Sync & Unpin);
assert_value!(blocking::RwReadGuard: !Send & !Sync & Unpin);
assert_value!(blocking::RwWriteGuard: !Send & !Sync & Unpin);
assert_value!(SoftRwLock: Send & Sync & Unpin);
assert_value!(SoftRwLockBuilder: Send & Sync & Unpin);
assert_value!(SoftRwReadGuard: Send & Sync & Unpin);
assert_value!(SoftRwWriteGuard: Send & Sync & Unpin);
assert_value!(async_filelock::futures::SoftReadAcquire: Send & Sync & Unpin);
assert_value!(async_filelock::futures::SoftWriteAcquire: Send & Sync & Unpin);
assert_value!(blocking::SoftRwLock: Send & Sync & Unpin);
assert_value!(blocking::SoftRwReadGuard: !Send & !Sync & Unpin);
assert_value!(blocking::SoftRwWriteGuard: !Send & !Sync & Unpin);
assert_value!(blocking::StrictSoftFileLock: Send & Sync & Unpin);
assert_value!(blocking::StrictSoftFileLockGuard: !Send & !Sync & Unpin);

// Other traits the API promises.
const _: fn() = || {
    fn clone<T: Clone>() {}
    fn copy_eq_hash<T: Copy + Eq + Hash + Default>() {}
    fn copy_eq_hash_nodefault<T: Copy + Eq + Hash>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    fn into_io<T: Into<std::io::Error>>() {}
    fn future_of<F: Future<Output = Result<FileLockGuard, Error>> + Send + Unpin + 'static>() {}
    clone::<FileLock>();
    clone::<FileLockBuilder>();
    clone::<blocking::FileLock>();
    clone::<blocking::FileLockBuilder>();
    copy_eq_hash::<Backoff>();
    copy_eq_hash_nodefault::<ErrorKind>();
    error::<Error>();
    into_io::<Error>();
    future_of::<Acquire>();
    fn soft_future<F, G>()
    where
        F: Future<Output = Result<G, Error>> + Send + Unpin + 'static,
    {
    }
    soft_future::<async_filelock::futures::AcquireSoft, SoftFileLockGuard>();
    soft_future::<async_filelock::futures::AcquireLease, SoftFileLeaseGuard>();
    soft_future::<async_filelock::futures::AcquireStrict, StrictSoftFileLockGuard>();
    clone::<SoftFileLock>();
    clone::<SoftFileLease>();
    clone::<StrictSoftFileLock>();
    clone::<LeaseCompromise>();
    clone::<StrictClaim>();
    copy_eq_hash_nodefault::<CompromiseReason>();
    let _: fn(&LeaseCompromise) -> String = |c| c.to_string();
    // The futures module names the same type.
    let same: fn(Acquire) -> async_filelock::futures::Acquire = |a| a;
    let _ = same;
    let _: fn(blocking::FileLock) -> FileLock = |_| value();
    let _: blocking::FileLock = From::from(value::<FileLock>());
};

// Signatures of the methods that hand out these types.
const _: fn() = || {
    let _: fn(&Path) -> FileLock = |p| FileLock::new(p);
    let _: fn(&str) -> FileLock = |p| FileLock::new(p);
    let _: fn(std::path::PathBuf) -> FileLock = |p| FileLock::new(p);
    let _: fn(&Path) -> FileLockBuilder = |p| FileLock::builder(p);
    let _: fn(&Path) -> blocking::FileLock = |p| blocking::FileLock::new(p);
    let _: fn(&Path) -> blocking::FileLockBuilder = |p| blocking::FileLock::builder(p);
    let _: fn(&FileLock) -> Acquire = FileLock::acquire;
    let _: fn(&FileLock) -> Acquire = FileLock::acquire_shared;
    let _: fn(&FileLock) -> Result<FileLockGuard, Error> = FileLock::try_acquire;
    let _: fn(&FileLock) -> Result<FileLockGuard, Error> = FileLock::try_acquire_shared;
    let _: fn(&FileLock) -> &Path = FileLock::path;
    let _: fn(&FileLock) -> Option<Duration> = FileLock::timeout;
    let _: fn(&FileLock) -> Backoff = FileLock::backoff;
    let _: fn(Acquire, Duration) -> Acquire = Acquire::timeout;
    let _: fn(FileLockBuilder, Duration) -> FileLockBuilder = FileLockBuilder::timeout;
    let _: fn(FileLockBuilder, Backoff) -> FileLockBuilder = FileLockBuilder::backoff;
    let _: fn(FileLockBuilder, u32) -> FileLockBuilder = FileLockBuilder::mode;
    let _: fn(FileLockBuilder, bool) -> FileLockBuilder = FileLockBuilder::delete_on_release;
    let _: fn(FileLockBuilder) -> Result<FileLock, Error> = FileLockBuilder::build;
    let _: fn(&FileLockGuard) -> bool = FileLockGuard::is_shared;
    let _: fn(&FileLockGuard) -> &Path = FileLockGuard::path;
    let _: fn(FileLockGuard) -> Result<(), Error> = FileLockGuard::release;
    let _: fn(&Error) -> ErrorKind = Error::kind;
    let _: fn(&Error) -> Option<&Path> = Error::path;
    let _: fn(&Error) -> Option<Duration> = Error::waited;
    let _: fn(&blocking::FileLock) -> Result<blocking::FileLockGuard, Error> =
        blocking::FileLock::acquire;
    let _: fn(&blocking::FileLock) -> Result<blocking::FileLockGuard, Error> =
        blocking::FileLock::acquire_shared;
    let _: fn(&blocking::FileLock, Duration) -> Result<blocking::FileLockGuard, Error> =
        blocking::FileLock::acquire_timeout;
    let _: fn(&blocking::FileLock, Duration) -> Result<blocking::FileLockGuard, Error> =
        blocking::FileLock::acquire_shared_timeout;
    let _: fn(&blocking::FileLock) -> Result<blocking::FileLockGuard, Error> =
        blocking::FileLock::try_acquire;
    let _: fn(&blocking::FileLock) -> Result<blocking::FileLockGuard, Error> =
        blocking::FileLock::try_acquire_shared;
    let _: fn(&blocking::FileLock) -> usize = blocking::FileLock::lock_counter;
    let _: fn(&blocking::FileLock) -> bool = blocking::FileLock::is_locked;
    let _: fn(&blocking::FileLock) -> &FileLock = blocking::FileLock::as_async;
    let _: fn(blocking::FileLockGuard) -> Result<(), Error> = blocking::FileLockGuard::release;
};

/// The checks above are compile-time; this runs one of them for real, so the binary has a
/// test: an `Acquire` and its guard cross into a tokio task on another thread.
#[test]
fn acquire_and_guard_cross_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = FileLock::new(dir.path().join("x.lock"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let acq = lock.acquire();
    let guard = rt
        .block_on(async move { tokio::spawn(acq).await })
        .expect("task")
        .expect("acquire");
    let released = std::thread::spawn(move || guard.release())
        .join()
        .expect("thread");
    released.expect("release in another thread");
    assert!(lock.try_acquire().is_ok());
}
