//! The waiting hook (`on_wait`, `on_wait_every`): called once when an acquisition first has to
//! wait, and every interval after if asked; never for an acquisition that does not wait, and
//! never again once the acquisition is dropped. Under tokio, smol and the blocking wrappers,
//! against a holder in a child process and one in this process.

#[path = "common/child.rs"]
#[macro_use]
mod child;
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use async_filelock::{
    blocking, ErrorKind, FileLock, RwFileLock, SoftFileLock, StrictSoftFileLock, WaitInfo,
};

use child::{Mode, Proc};
use common::{lock_path, tmp, Runtime, HANG};
use futures_lite::future::block_on;

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    child::entry();
}

/// How often a repeating hook repeats in these tests.
const EVERY: Duration = Duration::from_millis(20);

/// A backoff far slower than the hook, so that only the hook's own timer can keep its pace
/// (a release still wakes the waiter at once where it is watched).
const SLOW: Duration = Duration::from_secs(2);

fn slow() -> async_filelock::Backoff {
    async_filelock::Backoff::fixed(SLOW)
}

/// What a hook saw, sent to the test.
#[derive(Debug, Clone)]
struct Seen {
    path: PathBuf,
    first: bool,
    shared: bool,
    elapsed: Duration,
    pids: Vec<u32>,
    holder: Option<String>,
}

fn recorder() -> (
    impl Fn(&WaitInfo<'_>) + Send + Sync + 'static,
    Receiver<Seen>,
) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let hook = move |info: &WaitInfo<'_>| {
        let seen = Seen {
            path: info.path().to_path_buf(),
            first: info.is_first(),
            shared: info.is_shared(),
            elapsed: info.elapsed(),
            pids: info.holders().iter().map(|h| h.pid()).collect(),
            holder: info.holder().map(str::to_owned),
        };
        let _ = tx.lock().unwrap().send(seen);
    };
    (hook, rx)
}

fn holding_child(path: &Path) -> Proc {
    let mut c = Proc::child(
        "hold",
        &[("path", &path), ("shared", &"0"), ("mode", &"blocking")],
    );
    c.expect("WAITING");
    c.expect("HELD");
    c
}

fn release(mut c: Proc) {
    c.send("release");
    c.expect("RELEASED");
    c.wait_success();
}

/// Receives the first call and two repeats, checks them, then lets the child go.
fn check_calls(rx: &Receiver<Seen>, path: &Path, child: &Proc) {
    let first = rx.recv_timeout(HANG).expect("the hook is called");
    assert!(first.first, "{first:?}");
    assert!(!first.shared);
    assert_eq!(first.path, std::path::absolute(path).unwrap());
    if cfg!(any(target_os = "linux", target_os = "android")) {
        assert_eq!(first.pids, [child.id()], "{first:?}");
        let holder = first.holder.as_deref().unwrap();
        assert!(
            holder.starts_with(&format!("pid {}: ", child.id())),
            "{holder}"
        );
    }
    let mut last = first.elapsed;
    for _ in 0..2 {
        let again = rx.recv_timeout(HANG).expect("the hook repeats");
        assert!(!again.first, "{again:?}");
        assert!(
            again.elapsed >= last + EVERY / 2,
            "{again:?} after {last:?}"
        );
        // The pauses between attempts are far longer (`SLOW`): the hook has its own timer.
        assert!(again.elapsed < last + SLOW / 2, "{again:?} after {last:?}");
        last = again.elapsed;
    }
}

/// After the acquisition ended (or was dropped), the hook stays silent for many intervals.
fn assert_silent(rx: &Receiver<Seen>) {
    // Drain what was sent before the end, then watch: absence can only be observed over a
    // window.
    while rx.try_recv().is_ok() {}
    match rx.recv_timeout(EVERY * 10) {
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        Ok(seen) => panic!("the hook was called after the acquisition ended: {seen:?}"),
    }
}

#[test]
fn async_hook_repeats_while_a_child_holds_the_lock() {
    for rt in [
        Runtime::TokioCurrentThread,
        Runtime::TokioMultiThread,
        Runtime::Smol,
    ] {
        let dir = tmp();
        let path = lock_path(&dir, "hook.lock");
        let c = holding_child(&path);
        let (hook, rx) = recorder();
        let lock = FileLock::builder(&path)
            .backoff(slow())
            .on_wait_every(EVERY, hook)
            .build()
            .unwrap();
        let waiter = std::thread::spawn(move || {
            rt.run(async move {
                let guard = lock.acquire().timeout(HANG).await?;
                guard.release()
            })
        });
        check_calls(&rx, &path, &c);
        release(c);
        waiter
            .join()
            .unwrap()
            .expect("acquired once the child let go");
        assert_silent(&rx);
    }
}

#[test]
fn blocking_hook_repeats_while_a_child_holds_the_lock() {
    let dir = tmp();
    let path = lock_path(&dir, "hook.lock");
    let c = holding_child(&path);
    let (hook, rx) = recorder();
    let lock = blocking::FileLock::builder(&path)
        .backoff(slow())
        .on_wait_every(EVERY, hook)
        .build()
        .unwrap();
    let waiter = std::thread::spawn(move || lock.acquire_timeout(HANG)?.release());
    check_calls(&rx, &path, &c);
    release(c);
    waiter
        .join()
        .unwrap()
        .expect("acquired once the child let go");
    assert_silent(&rx);
}

#[test]
fn once_means_once_and_no_wait_means_no_call() {
    for mode in [Mode::Async(Runtime::Smol), Mode::Blocking] {
        let dir = tmp();
        let path = lock_path(&dir, "once.lock");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let builder = FileLock::builder(&path)
            .backoff(async_filelock::Backoff::fixed(Duration::from_millis(2)))
            .on_wait(move |info| {
                assert!(info.is_first());
                counter.fetch_add(1, Ordering::SeqCst);
            });
        let lock = builder.build().unwrap();
        let take = |limit: Duration| match mode {
            Mode::Async(rt) => rt.run(lock.acquire().timeout(limit)).map(drop),
            Mode::Blocking => blocking::FileLock::from(lock.clone())
                .acquire_timeout(limit)
                .map(drop),
        };
        take(HANG).expect("free: no wait");
        drop(lock.try_acquire().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{mode:?}: nobody waited");

        let c = holding_child(&path);
        assert_eq!(
            lock.try_acquire().unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{mode:?}: one attempt");
        // Many pauses of 2 ms, one call.
        let err = take(Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{mode:?}");
        release(c);
    }
}

#[test]
fn a_dropped_acquisition_never_calls_the_hook_again() {
    let dir = tmp();
    let path = lock_path(&dir, "cancel.lock");
    let c = holding_child(&path);
    let (hook, rx) = recorder();
    let lock = FileLock::builder(&path)
        .on_wait_every(EVERY, hook)
        .build()
        .unwrap();
    // tokio: the task is aborted after the hook's first repeat.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let task = rt.spawn({
        let lock = lock.clone();
        async move { lock.acquire().await.map(drop) }
    });
    assert!(rx.recv_timeout(HANG).unwrap().first);
    assert!(!rx.recv_timeout(HANG).unwrap().first);
    task.abort();
    let aborted = rt.block_on(task).unwrap_err();
    assert!(aborted.is_cancelled());
    assert_silent(&rx);

    // A future polled once, then dropped. Where attempts run on the blocking pool
    // (Windows), one poll only starts the first attempt, so the acquisition never learns
    // that it has to wait and the hook is never called.
    if cfg!(windows) {
        release(c);
        return;
    }
    futures_lite::future::block_on(async {
        let mut acquire = lock.acquire();
        assert!(futures_lite::future::poll_once(&mut acquire)
            .await
            .is_none());
    });
    assert!(rx.recv_timeout(HANG).unwrap().first);
    assert_silent(&rx);
    release(c);
}

#[test]
fn a_holder_in_this_process_makes_a_task_wait_too() {
    let dir = tmp();
    let path = lock_path(&dir, "here.lock");
    let (hook, rx) = recorder();
    let lock = FileLock::builder(&path).on_wait(hook).build().unwrap();
    futures_lite::future::block_on(async {
        let held = lock.acquire().await.unwrap();
        let err = lock
            .acquire_shared()
            .timeout(Duration::from_millis(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        drop(held);
    });
    let seen = rx.try_recv().expect("called once");
    assert!(seen.first && seen.shared, "{seen:?}");
    if cfg!(any(target_os = "linux", target_os = "android")) {
        // The OS lock is this process's.
        assert_eq!(seen.pids, [std::process::id()], "{seen:?}");
    }
    assert!(rx.try_recv().is_err(), "once");
}

#[test]
fn every_lock_kind_calls_its_hook() {
    let dir = tmp();
    let short = Duration::from_millis(30);
    let calls = Arc::new(AtomicUsize::new(0));
    let hook = {
        let calls = calls.clone();
        move |_: &WaitInfo<'_>| {
            calls.fetch_add(1, Ordering::SeqCst);
        }
    };
    let expect_one_call = |what: &str, err: async_filelock::Error| {
        assert_eq!(err.kind(), ErrorKind::Timeout, "{what}: {err}");
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "{what}");
    };

    let rw = RwFileLock::builder(lock_path(&dir, "rw.db"))
        .on_wait(hook.clone())
        .build()
        .unwrap();
    let w = rw.try_write().unwrap();
    expect_one_call("rw read", block_on(rw.read().timeout(short)).unwrap_err());
    let b = blocking::RwFileLock::from(rw.clone());
    expect_one_call("blocking rw", b.read_timeout(short).unwrap_err());
    drop(w);

    let soft = SoftFileLock::builder(lock_path(&dir, "soft.lock"))
        .on_wait(hook.clone())
        .build()
        .unwrap();
    let g = soft.try_acquire().unwrap();
    expect_one_call("soft", block_on(soft.acquire().timeout(short)).unwrap_err());
    drop(g);

    let strict = StrictSoftFileLock::builder(lock_path(&dir, "strict.lock"))
        .on_wait(hook.clone())
        .build()
        .unwrap();
    let g = strict.try_acquire().unwrap();
    expect_one_call(
        "strict",
        block_on(strict.acquire().timeout(short)).unwrap_err(),
    );
    drop(g);

    let lease = async_filelock::SoftFileLease::builder(lock_path(&dir, "lease.lock"))
        .on_wait(hook.clone())
        .build()
        .unwrap();
    let g = lease.try_acquire().unwrap();
    expect_one_call(
        "lease",
        block_on(lease.acquire().timeout(short)).unwrap_err(),
    );
    drop(g);

    let soft_rw = async_filelock::SoftRwLock::builder(lock_path(&dir, "softrw"))
        .on_wait(hook)
        .build()
        .unwrap();
    let g = soft_rw.try_write().unwrap();
    expect_one_call(
        "soft rw",
        block_on(soft_rw.read().timeout(short)).unwrap_err(),
    );
    drop(g);
}

#[test]
fn a_zero_interval_is_refused() {
    let err = FileLock::builder("/tmp/x.lock")
        .on_wait_every(Duration::ZERO, |_| {})
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("interval is zero"), "{err}");
}
