//! Cancellation: dropping an `Acquire` at any point leaves no OS lock, no descriptor, no thread
//! and no place in the queue behind, nothing acquires the lock later on its behalf, and a
//! cancelled head of the queue hands its place to the next waiter.
//!
//! The scenarios run under every runtime. The descriptor and thread counts are checked in a
//! child process that runs only that test, so that the other tests of this binary, running in
//! parallel, do not disturb the counts.

mod common;
#[path = "common/inproc.rs"]
mod inproc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_filelock::{blocking, Acquire, Backoff, ErrorKind, FileLock};
use common::{foreign_hold, Runtime, HANG};
use inproc::*;
use tokio::sync::oneshot;

/// Both kinds of acquisition, so that every scenario covers shared and exclusive waiters.
fn acquire(lock: &FileLock, shared: bool) -> Acquire {
    if shared {
        lock.acquire_shared()
    } else {
        lock.acquire()
    }
}

/// Who holds the lock while the cancelled acquisition waits.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// A guard of this process: the acquisition waits in the queue.
    InProcess,
    /// Another process: the acquisition attempts and backs off.
    Foreign,
}

/// Holds the lock in the given way until dropped.
#[allow(dead_code)] // The fields are held for their `Drop`.
enum Hold {
    Guard(async_filelock::FileLockGuard),
    Foreign(std::fs::File),
}

fn hold(path: &Path, holder: Holder) -> Hold {
    match holder {
        Holder::InProcess => Hold::Guard(FileLock::new(path).try_acquire().expect("hold")),
        Holder::Foreign => Hold::Foreign(foreign_hold(path)),
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// (a) Dropped before its first poll, with the lock free and held.
async fn dropped_before_first_poll(path: PathBuf) {
    let lock = FileLock::new(&path);
    for shared in [false, true] {
        drop(acquire(&lock, shared));
        drop(acquire(&lock, shared).timeout(Duration::ZERO));
    }
    assert_free(&path);
    for holder in [Holder::InProcess, Holder::Foreign] {
        let h = hold(&path, holder);
        for shared in [false, true] {
            drop(acquire(&lock, shared));
        }
        drop(h);
        assert_free(&path);
    }
}

/// (b) Dropped while queued behind a holder in this process; also a waiter that was woken
/// by the release but dropped before it ran.
async fn dropped_while_queued(path: PathBuf) {
    let lock = FileLock::new(&path);
    for shared in [false, true] {
        let holder = lock.try_acquire().expect("holder");
        let mut a = acquire(&lock, shared);
        let mut b = acquire(&FileLock::new(&path), !shared).timeout(HANG);
        assert!(poll_now(&mut a).is_none(), "queued behind the holder");
        assert!(poll_now(&mut b).is_none(), "queued behind the holder");
        drop(b);
        drop(a);
        assert_eq!(
            lock.try_acquire_shared().unwrap_err().kind(),
            ErrorKind::WouldBlock,
            "the holder still holds"
        );
        drop(holder);
        assert_free(&path);

        // Told to go by the release, then dropped.
        let holder = lock.try_acquire().expect("holder");
        let mut a = acquire(&lock, shared);
        assert!(poll_now(&mut a).is_none());
        drop(holder);
        drop(a);
        assert_free(&path);
    }
}

/// (c) Dropped while backing off against another process, right after its first attempt and
/// after several.
async fn dropped_while_backing_off(path: PathBuf) {
    let foreign = foreign_hold(&path);
    let lock = FileLock::builder(&path)
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .build()
        .expect("build");
    for shared in [false, true] {
        let mut a = acquire(&lock, shared);
        assert!(poll_now(&mut a).is_none(), "held by another process");
        drop(a);
        // Let it attempt and back off a few times.
        let mut a = acquire(&lock, shared);
        let raced = futures_lite::future::or(async { Some((&mut a).await) }, async {
            async_io::Timer::after(Duration::from_millis(15)).await;
            None
        })
        .await;
        assert!(raced.is_none(), "held by another process: {raced:?}");
        drop(a);
    }
    drop(foreign);
    assert_free(&path);
}

/// (d) Dropped by `tokio::select!` and by futures-lite's `or`/`race` when a timer wins.
async fn dropped_by_select(path: PathBuf) {
    let tick = || async_io::Timer::after(Duration::from_millis(5));
    for holder in [Holder::InProcess, Holder::Foreign] {
        let h = hold(&path, holder);
        let lock = FileLock::new(&path);
        for shared in [false, true] {
            tokio::select! {
                r = acquire(&lock, shared) => panic!("acquired while held ({holder:?}): {r:?}"),
                _ = tick() => {}
            }
            tokio::select! {
                biased;
                r = acquire(&lock, shared) => panic!("acquired while held ({holder:?}): {r:?}"),
                _ = tick() => {}
            }
            let won =
                futures_lite::future::or(async { Some(acquire(&lock, shared).await) }, async {
                    tick().await;
                    None
                })
                .await;
            assert!(won.is_none(), "acquired while held ({holder:?})");
            let won =
                futures_lite::future::race(async { Some(acquire(&lock, shared).await) }, async {
                    tick().await;
                    None
                })
                .await;
            assert!(won.is_none(), "acquired while held ({holder:?})");
            let won = smol::future::or(
                async { Some(acquire(&lock, shared).timeout(HANG).await) },
                async {
                    tick().await;
                    None
                },
            )
            .await;
            assert!(won.is_none(), "acquired while held ({holder:?})");
        }
        drop(h);
        assert_free(&path);
    }
}

/// Many waiters, queued and backing off, all dropped while another process holds the lock.
/// Returns with the other process's hold released.
async fn thousand_dropped(path: PathBuf) {
    let foreign = foreign_hold(&path);
    let lock = FileLock::new(&path);
    let other = FileLock::new(&path);
    let mut waiters: Vec<Option<Acquire>> = (0..1000usize)
        .map(|i| {
            let l = if i.is_multiple_of(2) { &lock } else { &other };
            Some(acquire(l, i.is_multiple_of(3)))
        })
        .collect();
    for w in waiters.iter_mut().flatten() {
        assert!(poll_now(w).is_none(), "held by another process");
    }
    // Drop in a scattered order, the head somewhere in the middle.
    for i in (1..1000).step_by(2).chain((0..1000).step_by(2).rev()) {
        waiters[i] = None;
    }
    drop(foreign);
}

#[cfg(target_os = "linux")]
async fn all_scenarios(path: PathBuf) {
    dropped_before_first_poll(path.clone()).await;
    dropped_while_queued(path.clone()).await;
    dropped_while_backing_off(path.clone()).await;
    dropped_by_select(path.clone()).await;
    thousand_dropped(path.clone()).await;
    assert_free(&path);
}

/// The blocking wrappers' form of giving up: a timeout while queued or backing off.
fn blocking_timeouts(path: &Path) {
    let lock = blocking::FileLock::new(path);
    for holder in [Holder::InProcess, Holder::Foreign] {
        // An in-process holder must be another thread: this thread's own hold would be
        // re-entered.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let p = path.to_path_buf();
        let t = std::thread::spawn(move || {
            let h = hold(&p, holder);
            held_tx.send(()).expect("main waits");
            let _ = done_rx.recv();
            drop(h);
        });
        held_rx.recv().expect("holder thread");
        for timeout in [Duration::ZERO, Duration::from_millis(5)] {
            let err = lock.acquire_timeout(timeout).expect_err("held");
            assert_eq!(err.kind(), ErrorKind::Timeout);
            let err = lock.acquire_shared_timeout(timeout).expect_err("held");
            assert_eq!(err.kind(), ErrorKind::Timeout);
            assert!(!lock.is_locked());
        }
        drop(done_tx);
        t.join().expect("holder thread");
        assert_free(path);
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn drop_before_first_poll_leaves_nothing() {
    for_each_runtime("x.lock", |c| dropped_before_first_poll(c.path));
}

#[test]
fn drop_while_queued_leaves_nothing() {
    for_each_runtime("x.lock", |c| dropped_while_queued(c.path));
}

#[test]
fn drop_while_backing_off_leaves_nothing() {
    for_each_runtime("x.lock", |c| dropped_while_backing_off(c.path));
}

#[test]
fn drop_by_select_or_race_leaves_nothing() {
    for_each_runtime("x.lock", |c| dropped_by_select(c.path));
}

#[test]
fn blocking_timeouts_leave_nothing() {
    let dir = common::tmp();
    blocking_timeouts(&dir.path().join("x.lock"));
}

/// Nothing acquires the lock later on behalf of a thousand dropped waiters: after the other
/// process lets go, the lock stays free. (Checking that something does *not* happen needs a
/// bounded wait; the runtime keeps running meanwhile, so a leaked task would get its chance.)
#[test]
fn no_late_acquisition_after_a_thousand_cancellations() {
    for_each_runtime("x.lock", |c| async move {
        thousand_dropped(c.path.clone()).await;
        for _ in 0..5 {
            async_io::Timer::after(Duration::from_millis(40)).await;
            assert!(
                foreign_can_lock(&c.path),
                "something acquired the lock after every waiter was dropped"
            );
        }
        assert_free(&c.path);
    });
}

/// Aborting a spawned task that waits for the lock (tokio's `abort`, smol's `cancel`) drops
/// its `Acquire` like any other cancellation.
#[test]
fn aborted_tasks_leave_nothing() {
    for_each_runtime("x.lock", |c| async move {
        if c.rt == Runtime::BlockOn {
            return; // No tasks to abort without a runtime.
        }
        for holder in [Holder::InProcess, Holder::Foreign] {
            let h = hold(&c.path, holder);
            let lock = FileLock::new(&c.path);
            let mut signals = Vec::new();
            let mut aborts: Vec<BoxFut<bool>> = Vec::new();
            for i in 0..20usize {
                let (tx, rx) = oneshot::channel();
                let acq = SignalPending::new(acquire(&lock, i.is_multiple_of(2)), tx);
                signals.push(rx);
                match c.rt {
                    Runtime::TokioCurrentThread | Runtime::TokioMultiThread => {
                        let task = tokio::spawn(acq);
                        aborts.push(boxed(async move {
                            task.abort();
                            task.await.expect_err("aborted").is_cancelled()
                        }));
                    }
                    Runtime::Smol => {
                        let task = smol::spawn(acq);
                        aborts.push(boxed(async move { task.cancel().await.is_none() }));
                    }
                    Runtime::BlockOn => unreachable!(),
                }
            }
            for rx in signals {
                no_hang("a task to start waiting", rx)
                    .await
                    .expect("the task waits");
            }
            for abort in aborts {
                assert!(abort.await, "the task was cancelled before it completed");
            }
            drop(h);
            assert_free(&c.path);
        }
    });
}

/// A cancelled head of the queue hands its place to the next waiter, which proceeds when the
/// holder releases: whether the head was cancelled before the release or after the release
/// had already told it to go. The next waiter sits in another task with a backoff far beyond
/// the hang detector, so only a wake-up can move it.
#[test]
fn a_cancelled_head_hands_its_place_to_the_next_waiter() {
    for_each_runtime("x.lock", |c| async move {
        let slow = Backoff::fixed(HANG * 4);
        for release_first in [false, true] {
            for shared in [false, true] {
                let lock = FileLock::builder(&c.path)
                    .backoff(slow)
                    .build()
                    .expect("build");
                let holder = lock.acquire().await.expect("holder");
                let mut head = acquire(&lock, shared);
                assert!(poll_now(&mut head).is_none());
                let (tx, waiting) = oneshot::channel();
                let next = spawn(c.rt, SignalPending::new(acquire(&lock, !shared), tx));
                waiting.await.expect("the next waiter waits");
                if release_first {
                    drop(holder);
                    drop(head);
                } else {
                    drop(head);
                    drop(holder);
                }
                let g = no_hang("the next waiter", next).await.expect("next");
                assert_eq!(g.is_shared(), !shared);
                drop(g);
                assert_free(&c.path);
            }
        }
    });
}

/// The same against another process: the head is backing off (with a pause beyond the hang
/// detector) when it is dropped; the next waiter must take over the attempts.
#[test]
fn a_cancelled_head_backing_off_hands_over_the_attempts() {
    for_each_runtime("x.lock", |c| async move {
        let foreign = foreign_hold(&c.path);
        let slow = FileLock::builder(&c.path)
            .backoff(Backoff::fixed(HANG * 4))
            .build()
            .expect("build");
        let quick = FileLock::builder(&c.path)
            .backoff(Backoff::fixed(Duration::from_millis(2)))
            .build()
            .expect("build");
        let mut head = slow.acquire();
        assert!(poll_now(&mut head).is_none(), "held by another process");
        let (tx, waiting) = oneshot::channel();
        let next = spawn(c.rt, SignalPending::new(quick.acquire(), tx));
        waiting.await.expect("the next waiter waits");
        drop(head);
        drop(foreign);
        let g = no_hang("the next waiter", next).await.expect("next");
        drop(g);
        assert_free(&c.path);
    });
}

/// Descriptor and thread counts after many cancellations of every kind equal those after one
/// warm-up round (which may start the async-io reactor thread).
#[cfg(target_os = "linux")]
#[test]
fn cancellations_leak_no_descriptors_or_threads() {
    isolated("cancellations_leak_no_descriptors_or_threads", || {
        let dir = common::tmp();
        let path = dir.path().join("x.lock");
        let round = || {
            for rt in common::RUNTIMES {
                rt.run(all_scenarios(path.clone()));
            }
            blocking_timeouts(&path);
        };
        round();
        let (fds, threads) = (common::open_fds(), common::thread_count());
        println!("baseline after warm-up: {fds} descriptors, {threads} threads");
        for _ in 0..2 {
            round();
        }
        // Runtime threads may take a moment to exit after their runtime is dropped.
        let settle = std::time::Instant::now();
        while (common::open_fds() > fds || common::thread_count() > threads)
            && settle.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (fds_after, threads_after) = (common::open_fds(), common::thread_count());
        println!("after: {fds_after} descriptors, {threads_after} threads");
        assert!(fds_after <= fds, "descriptors leaked: {fds} -> {fds_after}");
        assert!(
            threads_after <= threads,
            "threads leaked: {threads} -> {threads_after}"
        );
        assert_free(&path);
    });
}
