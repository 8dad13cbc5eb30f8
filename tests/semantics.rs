//! In-process semantics of the async lock, under every runtime: exclusion and sharing, the
//! FIFO queue, wake-ups on release, timeouts, errors, builder validation, guards moved across
//! tasks, file permissions, delete-on-release and the file's content.
//!
//! "Another process" is played by `foreign_hold` (std's `File::lock`, outside the crate's
//! queue). Steps are ordered with channels and by polling futures by hand, never by sleeping.

mod common;
#[path = "common/inproc.rs"]
mod inproc;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_filelock::{Backoff, Error, ErrorKind, FileLock, FileLockGuard};
use common::{foreign_hold, tmp, HANG};
use inproc::*;
use tokio::sync::oneshot;

/// Generous bound for "promptly": far below any timeout a test sets up, far above scheduling
/// noise on a loaded machine.
const PROMPT: Duration = Duration::from_secs(3);

#[track_caller]
fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

// ---------------------------------------------------------------------------------------------
// Exclusion and sharing inside one process

#[test]
fn exclusive_hold_excludes_every_other_request_in_the_process() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let g = lock.acquire().await.expect("acquire a free lock");
        assert!(!g.is_shared());
        assert_eq!(g.path(), c.path);
        // The OS lock is really taken, and exclusively.
        assert!(!foreign_can_lock(&c.path));
        assert!(!foreign_can_lock_shared(&c.path));

        // The same lock, a clone, and another lock object on the same path.
        for other in [lock.clone(), lock.clone(), FileLock::new(&c.path)] {
            assert_eq!(kind(other.try_acquire()), ErrorKind::WouldBlock);
            assert_eq!(kind(other.try_acquire_shared()), ErrorKind::WouldBlock);
            // Not re-entrant: even this task waits for itself.
            assert_eq!(
                kind(other.acquire().timeout(ms(30)).await),
                ErrorKind::Timeout
            );
            assert_eq!(
                kind(other.acquire_shared().timeout(ms(30)).await),
                ErrorKind::Timeout
            );
        }
        drop(g);
        assert_free(&c.path);
    });
}

#[test]
fn shared_holders_coexist_and_exclude_exclusive_requests() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let a = lock.acquire_shared().await.expect("first reader");
        let b = FileLock::new(&c.path)
            .acquire_shared()
            .await
            .expect("second reader");
        let r = lock.try_acquire_shared().expect("third reader");
        assert!(a.is_shared() && b.is_shared() && r.is_shared());
        // Shared at the OS level too: another process may read, not write.
        assert!(foreign_can_lock_shared(&c.path));
        assert!(!foreign_can_lock(&c.path));

        assert_eq!(kind(lock.try_acquire()), ErrorKind::WouldBlock);
        assert_eq!(
            kind(lock.acquire().timeout(ms(30)).await),
            ErrorKind::Timeout
        );
        // Each guard releases only its own hold.
        drop(a);
        drop(b);
        assert_eq!(kind(lock.try_acquire()), ErrorKind::WouldBlock);
        assert!(!foreign_can_lock(&c.path));
        r.release().expect("release the last reader");
        assert_free(&c.path);
    });
}

/// Many readers and writers hammer one path from concurrent futures and tasks; a writer is
/// always alone, and readers never overlap a writer.
#[test]
fn concurrent_readers_and_writers_never_overlap() {
    for_each_runtime("x.lock", |c| async move {
        #[derive(Default)]
        struct Room {
            writer: AtomicBool,
            readers: AtomicUsize,
            max_readers: AtomicUsize,
            done: AtomicUsize,
        }
        let room = Arc::new(Room::default());
        let worker = |id: usize, room: Arc<Room>, path: std::path::PathBuf| async move {
            let lock = FileLock::new(&path);
            for i in 0..15 {
                if (id + i).is_multiple_of(3) {
                    let g = lock.acquire_shared().await.expect("read");
                    assert!(
                        !room.writer.load(Ordering::SeqCst),
                        "reader inside a writer"
                    );
                    let n = room.readers.fetch_add(1, Ordering::SeqCst) + 1;
                    room.max_readers.fetch_max(n, Ordering::SeqCst);
                    futures_lite::future::yield_now().await;
                    assert!(
                        !room.writer.load(Ordering::SeqCst),
                        "writer inside a reader"
                    );
                    room.readers.fetch_sub(1, Ordering::SeqCst);
                    drop(g);
                } else {
                    let g = lock.acquire().await.expect("write");
                    assert!(
                        !room.writer.swap(true, Ordering::SeqCst),
                        "two writers at once"
                    );
                    assert_eq!(
                        room.readers.load(Ordering::SeqCst),
                        0,
                        "writer with readers"
                    );
                    futures_lite::future::yield_now().await;
                    futures_lite::future::yield_now().await;
                    room.writer.store(false, Ordering::SeqCst);
                    drop(g);
                }
                room.done.fetch_add(1, Ordering::SeqCst);
            }
        };
        // Futures interleaved in this task, and tasks of the runtime (threads on the
        // multi-thread runtime and under block_on).
        let mut futs: Vec<BoxFut<()>> = (0..4)
            .map(|id| boxed(worker(id, room.clone(), c.path.clone())))
            .collect();
        for id in 4..7 {
            futs.push(spawn(c.rt, worker(id, room.clone(), c.path.clone())));
        }
        no_hang("readers and writers", join_all(futs)).await;
        assert_eq!(room.done.load(Ordering::SeqCst), 7 * 15);
        assert_free(&c.path);
    });
}

// ---------------------------------------------------------------------------------------------
// The in-process queue

/// Waiters are served in the order they first polled (joined the queue), not the order their
/// futures or lock objects were created.
#[test]
fn waiters_are_served_in_arrival_order() {
    for_each_runtime("x.lock", |c| async move {
        const N: usize = 16;
        let lock = FileLock::new(&c.path);
        let holder = lock.acquire().await.expect("holder");
        let order = Arc::new(Mutex::new(Vec::new()));
        // Created in index order, alternating clones and separate lock objects...
        let mut acquires: Vec<_> = (0..N)
            .map(|i| {
                if i.is_multiple_of(2) {
                    lock.acquire()
                } else {
                    FileLock::new(&c.path).acquire()
                }
            })
            .map(Some)
            .collect();
        // ...but queued in this order.
        let arrival: Vec<usize> = (0..N).map(|i| (i * 5 + 3) % N).collect();
        let mut futs: Vec<BoxFut<()>> = Vec::new();
        for &i in &arrival {
            let mut acq = acquires[i].take().expect("each once");
            assert!(poll_now(&mut acq).is_none(), "waiter {i} did not wait");
            let order = order.clone();
            futs.push(boxed(async move {
                let g = acq.await.expect("waiter");
                order.lock().unwrap().push(i);
                // Hold across a yield so that every other waiter gets polled meanwhile.
                futures_lite::future::yield_now().await;
                drop(g);
            }));
        }
        // Drive them in creation order, to show that polling order does not matter.
        futs.reverse();
        drop(holder);
        no_hang("the queue", join_all(futs)).await;
        assert_eq!(*order.lock().unwrap(), arrival);
        assert_free(&c.path);
    });
}

/// Readers queued behind a queued writer wait for it even though the current holders are
/// readers (no barging), and readers at the head of the queue are let in together.
#[test]
fn readers_do_not_overtake_a_queued_writer() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let holder = lock.acquire().await.expect("holder");
        let mut s1 = lock.acquire_shared();
        let mut s2 = lock.acquire_shared();
        let mut x3 = lock.acquire();
        let mut s4 = lock.acquire_shared();
        assert!(poll_now(&mut s1).is_none());
        assert!(poll_now(&mut s2).is_none());
        assert!(poll_now(&mut x3).is_none());
        assert!(poll_now(&mut s4).is_none());
        drop(holder);

        let (g1, g2) = no_hang("two readers", futures_lite::future::zip(&mut s1, &mut s2)).await;
        let (g1, g2) = (g1.expect("reader 1"), g2.expect("reader 2"));
        assert!(g1.is_shared() && g2.is_shared());
        assert!(poll_now(&mut x3).is_none(), "writer got in beside readers");
        assert!(
            poll_now(&mut s4).is_none(),
            "reader overtook the queued writer"
        );
        assert_eq!(kind(lock.try_acquire_shared()), ErrorKind::WouldBlock);

        drop(g1);
        assert!(poll_now(&mut x3).is_none(), "writer got in beside a reader");
        drop(g2);
        let gx = no_hang("writer", &mut x3).await.expect("writer");
        assert!(!gx.is_shared());
        assert!(
            poll_now(&mut s4).is_none(),
            "reader got in beside the writer"
        );
        drop(gx);
        let g4 = no_hang("last reader", &mut s4).await.expect("reader 4");
        assert!(g4.is_shared());
        drop(g4);
        assert_free(&c.path);
    });
}

/// A lock that is free in the OS sense is still refused to `try_acquire` while another task
/// of this process is queued for it.
#[test]
fn try_acquire_does_not_jump_the_queue() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let holder = lock.acquire().await.expect("holder");
        let mut waiter = lock.acquire();
        assert!(poll_now(&mut waiter).is_none());
        drop(holder);
        // The waiter was told but has not run yet.
        assert_eq!(kind(lock.try_acquire()), ErrorKind::WouldBlock);
        assert_eq!(kind(lock.try_acquire_shared()), ErrorKind::WouldBlock);
        let g = no_hang("waiter", waiter).await.expect("waiter");
        drop(g);
        assert_free(&c.path);
    });
}

/// A waiter parked in another task is woken by a release in this process: its backoff is
/// far longer than the hang detector, so only the wake-up can get it going.
#[test]
fn release_in_this_process_wakes_the_next_waiter() {
    for_each_runtime("x.lock", |c| async move {
        let slow = Backoff::fixed(HANG * 4);
        for (holder_shared, waiter_shared) in [(false, false), (false, true), (true, false)] {
            let lock = FileLock::builder(&c.path)
                .backoff(slow)
                .build()
                .expect("build");
            let holder = if holder_shared {
                lock.acquire_shared().await
            } else {
                lock.acquire().await
            }
            .expect("holder");
            let acq = if waiter_shared {
                lock.acquire_shared()
            } else {
                lock.acquire()
            };
            let (tx, waiting) = oneshot::channel();
            let task = spawn(c.rt, SignalPending::new(acq, tx));
            waiting.await.expect("the waiter did not wait");
            let start = Instant::now();
            holder.release().expect("release");
            let g = no_hang("woken waiter", task).await.expect("waiter");
            assert_eq!(g.is_shared(), waiter_shared);
            assert!(
                start.elapsed() < PROMPT,
                "wake-up took {:?}",
                start.elapsed()
            );
            drop(g);
            assert_free(&c.path);
        }
    });
}

/// The release calls the queued waiter's waker itself, before returning.
#[test]
fn release_calls_the_waiters_waker() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let holder = lock.acquire().await.expect("holder");
        let wakes = Arc::new(WakeCounter::default());
        let mut waiter = lock.acquire();
        assert!(poll_counting(&mut waiter, &wakes).is_none());
        assert_eq!(wakes.count(), 0);
        drop(holder);
        assert_eq!(wakes.count(), 1, "the release did not wake the waiter");
        // (Where attempts run on a thread pool, Windows, the next poll only starts one.)
        let g = no_hang("woken waiter", waiter).await.expect("waiter");
        drop(g);
        assert_free(&c.path);
    });
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[test]
fn timeout_while_queued_behind_a_holder_in_this_process() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let holder = lock.acquire().await.expect("holder");
        let limit = ms(100);
        // A times out at the head of the queue; B, behind it, waits without limit.
        let mut a = lock.acquire().timeout(limit);
        let mut b = lock.acquire_shared();
        let start = Instant::now();
        assert!(poll_now(&mut a).is_none());
        assert!(poll_now(&mut b).is_none());
        let err = no_hang("timeout", &mut a).await.expect_err("A timed out");
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert_eq!(err.path(), Some(c.path.as_path()));
        let waited = err.waited().expect("a timeout says how long it waited");
        assert!(waited >= limit, "waited {waited:?} < {limit:?}");
        assert!(took >= limit && took < limit + PROMPT, "took {took:?}");
        // B inherits the head of the queue.
        drop(holder);
        let g = no_hang("B", &mut b).await.expect("B");
        drop(g);
        assert_free(&c.path);
    });
}

#[test]
fn timeout_against_a_holder_in_another_process() {
    for_each_runtime("x.lock", |c| async move {
        let foreign = foreign_hold(&c.path);
        let lock = FileLock::new(&c.path);
        for shared in [false, true] {
            let limit = ms(80);
            let start = Instant::now();
            let acq = if shared {
                lock.acquire_shared()
            } else {
                lock.acquire()
            };
            let err = no_hang("timeout", acq.timeout(limit))
                .await
                .expect_err("held by another process");
            assert_eq!(err.kind(), ErrorKind::Timeout);
            assert!(err.waited().expect("waited") >= limit);
            assert!(start.elapsed() < limit + PROMPT);
            assert_eq!(err.path(), Some(c.path.as_path()));
        }
        // The failed acquisitions left nothing: after the other process lets go, it is free.
        drop(foreign);
        assert_free(&c.path);
    });
}

#[test]
fn zero_timeout_means_exactly_one_attempt() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        // Free: the one attempt succeeds.
        let g = lock
            .acquire()
            .timeout(Duration::ZERO)
            .await
            .expect("free lock");
        // Held in this process: an immediate Timeout (not WouldBlock).
        let start = Instant::now();
        let err = lock
            .acquire_shared()
            .timeout(Duration::ZERO)
            .await
            .expect_err("held here");
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(start.elapsed() < PROMPT);
        drop(g);

        // Held by another process.
        let foreign = foreign_hold(&c.path);
        let start = Instant::now();
        let err = lock
            .acquire()
            .timeout(Duration::ZERO)
            .await
            .expect_err("held elsewhere");
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.waited().expect("waited") < PROMPT);
        assert!(start.elapsed() < PROMPT);
        // The lock's own default of zero behaves the same.
        let zero = FileLock::builder(&c.path)
            .timeout(Duration::ZERO)
            .build()
            .expect("build");
        assert_eq!(zero.timeout(), Some(Duration::ZERO));
        assert_eq!(kind(zero.acquire().await), ErrorKind::Timeout);
        assert_eq!(kind(zero.acquire_shared().await), ErrorKind::Timeout);
        // try_acquire says WouldBlock for the same situation.
        assert_eq!(kind(zero.try_acquire()), ErrorKind::WouldBlock);
        drop(foreign);
        assert_free(&c.path);
    });
}

/// `Duration::MAX` (and a limit too far away for `Instant`) means no limit: no overflow, no
/// instant timeout, and the waiter gets the lock when it is released, from this process or
/// another.
#[test]
fn huge_timeouts_mean_no_limit() {
    for_each_runtime("x.lock", |c| async move {
        let century = Duration::from_secs(100 * 365 * 24 * 3600);
        for limit in [Duration::MAX, century] {
            let lock = FileLock::builder(&c.path)
                .timeout(limit)
                .backoff(Backoff::fixed(ms(2)))
                .build()
                .expect("build");
            assert_eq!(lock.timeout(), Some(limit));
            // Free.
            drop(lock.acquire().await.expect("free, default limit"));
            drop(
                lock.acquire()
                    .timeout(limit)
                    .await
                    .expect("free, call limit"),
            );

            // Released by a holder in this process.
            let holder = lock.acquire().await.expect("holder");
            let (tx, waiting) = oneshot::channel();
            let task = spawn(c.rt, SignalPending::new(lock.acquire().timeout(limit), tx));
            waiting.await.expect("the waiter did not wait");
            drop(holder);
            drop(no_hang("waiter", task).await.expect("waiter"));

            // Released by another process, while the waiter backs off.
            let foreign = foreign_hold(&c.path);
            let (tx, waiting) = oneshot::channel();
            let task = spawn(c.rt, SignalPending::new(lock.acquire_shared(), tx));
            waiting.await.expect("the waiter did not wait");
            drop(foreign);
            drop(no_hang("waiter", task).await.expect("waiter"));
            assert_free(&c.path);
        }
    });
}

#[test]
fn builder_timeout_is_the_default_and_acquire_timeout_overrides_it() {
    for_each_runtime("x.lock", |c| async move {
        let short = ms(60);
        let lock = FileLock::builder(&c.path)
            .timeout(short)
            .build()
            .expect("build");
        assert_eq!(FileLock::new(&c.path).timeout(), None);
        let holder = FileLock::new(&c.path).acquire().await.expect("holder");
        let err = no_hang("default timeout", lock.acquire())
            .await
            .expect_err("default limit");
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.waited().expect("waited") >= short);
        // A longer limit for one call outlives the default.
        let (tx, waiting) = oneshot::channel();
        let task = spawn(c.rt, SignalPending::new(lock.acquire().timeout(HANG), tx));
        waiting.await.expect("the waiter did not wait");
        // Past the lock's default before releasing: the override is in force.
        async_io::Timer::after(short * 2).await;
        drop(holder);
        drop(no_hang("override", task).await.expect("override"));
        // And a shorter one.
        let holder = FileLock::new(&c.path).acquire().await.expect("holder");
        let relaxed = FileLock::builder(&c.path)
            .timeout(HANG)
            .build()
            .expect("build");
        let start = Instant::now();
        let err = no_hang("short override", relaxed.acquire().timeout(ms(20)))
            .await
            .expect_err("short limit");
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(start.elapsed() < PROMPT);
        drop(holder);
        assert_free(&c.path);
    });
}

// ---------------------------------------------------------------------------------------------
// Errors

fn check_io_conversion(err: Error, io_kind: io::ErrorKind) {
    let text = err.to_string();
    let kind = err.kind();
    let path = err.path().map(Path::to_path_buf);
    let e: io::Error = err.into();
    assert_eq!(e.kind(), io_kind);
    assert_eq!(e.to_string(), text, "the message survives the conversion");
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<Error>())
        .expect("the io::Error carries the original error");
    assert_eq!(inner.kind(), kind);
    assert_eq!(inner.path().map(Path::to_path_buf), path);
}

#[test]
fn errors_name_the_path_and_convert_to_io_errors() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        let holder = lock.acquire().await.expect("holder");
        let quoted = format!("{:?}", c.path);

        // Timeout.
        let err = lock.acquire().timeout(ms(20)).await.expect_err("timeout");
        let text = err.to_string();
        assert!(text.starts_with("timed out after "), "{text}");
        assert!(
            text.contains(&format!("waiting for the lock on {quoted}")),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_none());
        assert!(err.raw_os_error().is_none());
        assert!(format!("{err:?}").contains("Timeout"));
        check_io_conversion(err, io::ErrorKind::TimedOut);

        // WouldBlock.
        let err = lock.try_acquire().expect_err("would block");
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("the lock on {quoted} is held elsewhere")),
            "{text}"
        );
        assert_eq!(err.path(), Some(c.path.as_path()));
        assert_eq!(err.waited(), None);
        check_io_conversion(err, io::ErrorKind::WouldBlock);
        drop(holder);

        // NotAFile: a directory.
        let dir_lock = FileLock::new(&c.dir);
        let err = dir_lock.acquire().await.expect_err("a directory");
        assert_eq!(err.kind(), ErrorKind::NotAFile);
        assert_eq!(err.path(), Some(c.dir.as_path()));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot lock {:?}", c.dir)),
            "{text}"
        );
        check_io_conversion(err, io::ErrorKind::InvalidInput);

        // InvalidInput from the builder.
        let err = FileLock::builder(&c.path)
            .mode(0o1644)
            .build()
            .expect_err("bad mode");
        assert!(err.to_string().contains("0o1644"), "{err}");
        check_io_conversion(err, io::ErrorKind::InvalidInput);

        // `?` works in functions returning io::Result.
        fn through_io(lock: &FileLock) -> io::Result<FileLockGuard> {
            Ok(lock.try_acquire()?)
        }
        let g = through_io(&lock).expect("free");
        assert_eq!(
            through_io(&lock).expect_err("held").kind(),
            io::ErrorKind::WouldBlock
        );
        drop(g);
    });
}

/// An error from the operating system keeps it as its source.
#[cfg(unix)]
#[test]
fn os_errors_keep_their_source() {
    for_each_runtime("x.lock", |c| async move {
        // A lock path under a regular file: ENOTDIR.
        let file = c.dir.join("plain");
        std::fs::write(&file, b"plain").expect("write");
        let path = file.join("x.lock");
        let err = FileLock::new(&path).acquire().await.expect_err("ENOTDIR");
        assert_eq!(err.path(), Some(path.as_path()));
        let source = std::error::Error::source(&err).expect("an OS error has a source");
        let io_err = source.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io_err.kind(), io::ErrorKind::NotADirectory);
        assert_eq!(err.raw_os_error(), io_err.raw_os_error());
        assert!(err.raw_os_error().is_some());
        assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
        assert_eq!(std::fs::read(&file).expect("read"), b"plain");
    });
}

// ---------------------------------------------------------------------------------------------
// Builder validation (no I/O happens in `build`)

#[test]
fn builder_rejects_bad_options_without_touching_the_disk() {
    let dir = tmp();
    let path = dir.path().join("missing").join("x.lock");
    let invalid = |b: async_filelock::FileLockBuilder, what: &str| {
        let err = b.build().expect_err(what);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}");
        assert_eq!(err.path(), Some(path.as_path()), "{what}");
        assert!(!err.to_string().is_empty());
    };
    for backoff in [
        Backoff::fixed(Duration::ZERO),
        Backoff::exponential(Duration::ZERO, ms(10)),
        Backoff::exponential(Duration::ZERO, Duration::ZERO).without_jitter(),
        Backoff::exponential(ms(20), ms(10)),
    ] {
        invalid(
            FileLock::builder(&path).backoff(backoff),
            &format!("{backoff:?}"),
        );
    }
    for mode in [0o1000, 0o1600, 0o2644, 0o4755, 0o7777, 0o10600, u32::MAX] {
        invalid(
            FileLock::builder(&path).mode(mode),
            &format!("{mode:#o} > 0o777"),
        );
    }
    for mode in [0, 0o400, 0o200, 0o500, 0o300, 0o077, 0o477, 0o277] {
        invalid(
            FileLock::builder(&path).mode(mode),
            &format!("{mode:#o} without owner rw"),
        );
    }
    // Valid options build, and still touch nothing.
    for mode in [0o600, 0o640, 0o644, 0o666, 0o700, 0o777] {
        FileLock::builder(&path)
            .mode(mode)
            .build()
            .expect("valid mode");
    }
    for backoff in [
        Backoff::fixed(Duration::from_nanos(1)),
        Backoff::exponential(ms(1), ms(1)),
        Backoff::fixed(Duration::MAX),
        Backoff::default(),
    ] {
        let lock = FileLock::builder(&path)
            .backoff(backoff)
            .build()
            .expect("valid backoff");
        assert_eq!(lock.backoff(), backoff);
    }
    let lock = FileLock::builder(&path)
        .timeout(ms(5))
        .delete_on_release(true)
        .build()
        .expect("build");
    assert_eq!(lock.path(), path);
    assert_eq!(FileLock::new(&path).backoff(), Backoff::default());
    assert!(
        !path.parent().unwrap().exists(),
        "building a lock created its directory"
    );
}

// ---------------------------------------------------------------------------------------------
// Guards across tasks

#[test]
fn guard_moved_into_a_spawned_task_is_released_there() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        // Released explicitly in the task.
        let g = lock.acquire().await.expect("acquire");
        let path = c.path.clone();
        spawn(c.rt, async move {
            assert!(
                !foreign_can_lock(&path),
                "the guard still holds in the task"
            );
            g.release().expect("release in the task");
            assert!(foreign_can_lock(&path));
        })
        .await;
        assert_free(&c.path);

        // Dropped in the task, while a waiter of this task is queued: it is woken.
        let g = lock.acquire_shared().await.expect("acquire");
        let (go, wait_go) = oneshot::channel::<()>();
        let task = spawn(c.rt, async move {
            wait_go.await.expect("go");
            drop(g);
        });
        let mut waiter = lock.acquire();
        assert!(poll_now(&mut waiter).is_none());
        go.send(()).expect("the task is alive");
        let w = no_hang("waiter", waiter).await.expect("waiter");
        task.await;
        drop(w);
        assert_free(&c.path);
    });
}

// ---------------------------------------------------------------------------------------------
// The lock file: content, deletion, permissions

/// The lock file is opened without truncation: existing content survives every kind of
/// acquisition and release.
#[test]
fn the_lock_file_is_never_truncated() {
    for_each_runtime("x.lock", |c| async move {
        let content = b"pid 1234\nprecious\n".repeat(100);
        std::fs::write(&c.path, &content).expect("write");
        let plain = FileLock::new(&c.path);
        let moded = FileLock::builder(&c.path)
            .mode(0o600)
            .build()
            .expect("build");
        for lock in [&plain, &moded] {
            let g = lock.acquire().await.expect("exclusive");
            assert_eq!(std::fs::read(&c.path).expect("read"), content);
            g.release().expect("release");
            let g = lock.acquire_shared().await.expect("shared");
            drop(g);
            drop(lock.try_acquire().expect("try"));
            drop(lock.try_acquire_shared().expect("try shared"));
            assert_eq!(std::fs::read(&c.path).expect("read"), content);
        }
        // An empty file stays empty (nothing is written to it).
        std::fs::write(&c.path, b"").expect("truncate");
        drop(plain.acquire().await.expect("exclusive"));
        assert_eq!(std::fs::read(&c.path).expect("read"), b"");
    });
}

#[test]
fn the_file_is_kept_by_default() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        drop(lock.acquire().await.expect("exclusive"));
        assert!(c.path.is_file(), "the default keeps the lock file");
        lock.acquire_shared()
            .await
            .expect("shared")
            .release()
            .expect("release");
        assert!(c.path.is_file());
        let explicit = FileLock::builder(&c.path)
            .delete_on_release(false)
            .build()
            .expect("build");
        drop(explicit.try_acquire().expect("try"));
        assert!(c.path.is_file());
    });
}

#[test]
fn delete_on_release_removes_the_file() {
    for_each_runtime("sub/x.lock", |c| async move {
        let lock = FileLock::builder(&c.path)
            .delete_on_release(true)
            .build()
            .expect("build");
        let g = lock.acquire().await.expect("exclusive");
        assert!(c.path.is_file());
        drop(g);
        assert!(!c.path.exists(), "dropping the guard deleted nothing");
        assert!(c.path.parent().unwrap().is_dir(), "the directory stays");

        let g = lock.acquire_shared().await.expect("shared");
        assert!(c.path.is_file());
        g.release().expect("release");
        assert!(!c.path.exists());

        drop(lock.try_acquire().expect("try"));
        assert!(!c.path.exists());

        // A waiter queued behind the deleting holder gets a fresh file, and holds a real lock
        // on the file the path names.
        let g = lock.acquire().await.expect("holder");
        let mut waiter = lock.acquire();
        assert!(poll_now(&mut waiter).is_none());
        drop(g);
        let w = no_hang("waiter", waiter).await.expect("waiter");
        assert!(c.path.is_file());
        assert!(
            !foreign_can_lock_shared(&c.path),
            "the waiter's lock is on the path's file"
        );
        drop(w);
        assert!(!c.path.exists());
        assert_free(&c.path);
    });
}

/// Whether this process has `path`'s file open (Linux: a link in `/proc/self/fd` names it).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_here(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).expect("the lock file exists");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// A lock keeps its file open between holds by default, closes it when the lock is dropped,
/// and not at all with `keep_open(false)` or delete-on-release.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn the_lock_file_stays_open_between_holds_unless_told_otherwise() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        drop(lock.acquire().await.expect("exclusive"));
        assert!(open_here(&c.path), "the default keeps the file open");
        let clone = lock.clone();
        drop(lock);
        drop(
            clone
                .acquire_shared()
                .await
                .expect("shared, through a clone"),
        );
        assert!(open_here(&c.path), "clones share the open file");
        drop(clone);
        assert!(!open_here(&c.path), "dropping the last clone closes it");

        let closing = FileLock::builder(&c.path)
            .keep_open(false)
            .build()
            .expect("build");
        drop(closing.acquire().await.expect("exclusive"));
        assert!(!open_here(&c.path), "keep_open(false) closes at release");
        drop(closing);

        let deleting = FileLock::builder(&c.path)
            .delete_on_release(true)
            .build()
            .expect("build");
        drop(deleting.try_acquire().expect("try"));
        assert!(!c.path.exists());
        drop(deleting.try_acquire().expect("try again"));
        assert!(!c.path.exists(), "a deleting lock keeps nothing open");
    });
}

/// The file a lock keeps open between holds may be replaced or deleted meanwhile: the next
/// hold notices and locks the file the path names now.
#[cfg(unix)]
#[test]
fn a_lock_file_replaced_or_deleted_while_the_lock_is_idle_is_noticed() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::new(&c.path);
        drop(lock.acquire().await.expect("first hold"));
        let other = c.dir.join("other");
        std::fs::write(&other, b"").expect("write");
        std::fs::rename(&other, &c.path).expect("replace the lock file");
        let foreign = foreign_hold(&c.path);
        assert_eq!(
            kind(lock.try_acquire()),
            ErrorKind::WouldBlock,
            "the lock on the file the path names now is held"
        );
        drop(foreign);
        let g = lock.acquire().await.expect("the new file is free");
        assert!(
            !foreign_can_lock(&c.path),
            "the hold is on the file the path names"
        );
        drop(g);

        std::fs::remove_file(&c.path).expect("delete the idle lock file");
        let g = lock.acquire().await.expect("after deletion");
        assert!(c.path.is_file(), "the file is created again");
        assert!(!foreign_can_lock(&c.path), "the hold is on the new file");
        drop(g);
        assert_free(&c.path);
    });
}

/// Delete-on-release removes only the file it locked: a file put at the path meanwhile stays.
#[cfg(unix)]
#[test]
fn delete_on_release_spares_a_file_that_replaced_the_locked_one() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::builder(&c.path)
            .delete_on_release(true)
            .build()
            .expect("build");
        let g = lock.acquire().await.expect("exclusive");
        let other = c.dir.join("other");
        std::fs::write(&other, b"someone else's").expect("write");
        std::fs::rename(&other, &c.path).expect("replace the lock file");
        g.release().expect("release");
        assert_eq!(
            std::fs::read(&c.path).expect("the replacement is still there"),
            b"someone else's"
        );
    });
}

/// A shared holder must not delete the file while another holder still has a shared lock on
/// it: a process that then locks the path exclusively gets a new file, beside the reader.
///
/// "Another process" is a lock on an alias of the path (`sub/../x.lock`): it resolves to the
/// same file but, like a real other process, does not share this process's queue.
#[test]
fn delete_on_release_keeps_the_file_while_other_readers_hold_it() {
    for_each_runtime("x.lock", |c| async move {
        let lock = FileLock::builder(&c.path)
            .delete_on_release(true)
            .build()
            .expect("build");
        let a = lock.acquire_shared().await.expect("reader a");
        let b = lock.acquire_shared().await.expect("reader b");
        drop(a);
        // Another process opens the path (creating a new file if it was deleted) and locks.
        assert!(
            !foreign_can_lock(&c.path),
            "a writer in another process got the lock while reader b holds it"
        );
        assert!(
            c.path.exists(),
            "the file was deleted although reader b still holds it"
        );
        drop(b);
    });
}

#[cfg(unix)]
mod permissions {
    use super::*;

    #[test]
    fn default_mode_is_0o666_less_the_umask() {
        let expected = 0o666 & !umask();
        for_each_runtime("x.lock", move |c| async move {
            drop(FileLock::new(&c.path).acquire().await.expect("acquire"));
            assert_eq!(file_mode(&c.path), expected, "{:#o}", file_mode(&c.path));
            let shared = c.dir.join("shared.lock");
            drop(
                FileLock::new(&shared)
                    .acquire_shared()
                    .await
                    .expect("shared"),
            );
            assert_eq!(file_mode(&shared), expected);
        });
    }

    /// An explicit mode is applied exactly, umask or not, to a file this process creates,
    /// including a file re-created after delete-on-release.
    #[test]
    fn explicit_mode_is_applied_exactly_to_a_created_file() {
        for_each_runtime("x.lock", |c| async move {
            for (i, mode) in [0o600, 0o604, 0o640, 0o660, 0o666, 0o700, 0o777]
                .into_iter()
                .enumerate()
            {
                let path = c.dir.join(format!("m{i}.lock"));
                let lock = FileLock::builder(&path).mode(mode).build().expect("build");
                let g = if i.is_multiple_of(2) {
                    lock.acquire().await
                } else {
                    lock.acquire_shared().await
                }
                .expect("acquire");
                assert_eq!(file_mode(&path), mode, "{mode:#o}");
                drop(g);
                assert_eq!(file_mode(&path), mode, "{mode:#o}");
            }
            let lock = FileLock::builder(&c.path)
                .mode(0o666)
                .delete_on_release(true)
                .build()
                .expect("build");
            for _ in 0..2 {
                let g = lock.acquire().await.expect("acquire");
                assert_eq!(file_mode(&c.path), 0o666);
                drop(g);
                assert!(!c.path.exists());
            }
        });
    }

    /// An existing file's permissions are never changed, whatever mode the lock asks for.
    #[test]
    fn an_existing_files_mode_is_never_changed() {
        for_each_runtime("x.lock", |c| async move {
            for existing in [0o640, 0o604, 0o644, 0o600, 0o444, 0o777] {
                std::fs::write(&c.path, b"keep").expect("write");
                set_mode(&c.path, existing);
                for asked in [None, Some(0o600), Some(0o666), Some(0o777)] {
                    let mut b = FileLock::builder(&c.path);
                    if let Some(m) = asked {
                        b = b.mode(m);
                    }
                    let lock = b.build().expect("build");
                    let g = lock.acquire().await.expect("exclusive");
                    assert_eq!(file_mode(&c.path), existing, "{existing:#o} {asked:?}");
                    drop(g);
                    drop(lock.acquire_shared().await.expect("shared"));
                    assert_eq!(file_mode(&c.path), existing, "{existing:#o} {asked:?}");
                }
                assert_eq!(std::fs::read(&c.path).expect("read"), b"keep");
                set_mode(&c.path, 0o600);
                std::fs::remove_file(&c.path).expect("rm");
            }
        });
    }

    /// A lock file this user may only read can still be locked, shared and exclusive
    /// (`flock` needs no write access).
    #[test]
    fn a_read_only_lock_file_can_still_be_locked() {
        for_each_runtime("x.lock", |c| async move {
            std::fs::write(&c.path, b"ro").expect("write");
            set_mode(&c.path, 0o444);
            let lock = FileLock::new(&c.path);
            let g = lock.acquire().await.expect("exclusive on a read-only file");
            assert!(!foreign_can_lock_shared(&c.path));
            drop(g);
            let a = lock.acquire_shared().await.expect("shared");
            let b = lock.acquire_shared().await.expect("shared");
            assert!(!foreign_can_lock(&c.path));
            drop((a, b));
            assert_eq!(file_mode(&c.path), 0o444);
            assert_free(&c.path);
        });
    }
}

/// Spellings of one path through `..` share one in-process queue: a release through one wakes
/// a waiter through the other at once (no backoff), and the blocking wrappers see the same
/// path for deadlock detection.
#[test]
fn aliased_spellings_share_one_queue() {
    let dir = tmp();
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let plain = dir.path().join("x.lock");
    let alias = dir.path().join("sub").join("..").join("x.lock");
    let slow = Backoff::fixed(Duration::from_secs(120));
    let holder = FileLock::new(&plain);
    let waiter = FileLock::builder(&alias)
        .backoff(slow)
        .build()
        .expect("build");
    futures_lite::future::block_on(async {
        let held = holder.acquire().await.expect("hold");
        let err = waiter
            .try_acquire()
            .expect_err("held through the other spelling");
        assert!(
            err.to_string().contains("in this process"),
            "the alias did not see the in-process holder: {err}"
        );
        let mut wait = waiter.acquire().timeout(HANG);
        assert!(poll_now(&mut wait).is_none(), "the waiter must queue");
        let released = Instant::now();
        drop(held);
        let _guard = wait
            .await
            .expect("woken by the release through the other spelling");
        // With a 120 s backoff, only the in-process wake-up can have let it in this soon.
        assert!(released.elapsed() < Duration::from_secs(60));
    });
    let a = async_filelock::blocking::FileLock::new(&plain);
    let b = async_filelock::blocking::FileLock::new(&alias);
    let _held = a.acquire().expect("hold");
    assert_eq!(kind(b.acquire()), ErrorKind::Deadlock);
}

/// `.timeout()` on an acquisition that is already waiting applies from its first poll.
#[test]
fn a_timeout_set_after_the_first_poll_applies() {
    let dir = tmp();
    let path = dir.path().join("late.lock");
    let lock = FileLock::new(&path);
    let slow = FileLock::builder(&path)
        .backoff(Backoff::fixed(Duration::from_secs(120)))
        .build()
        .expect("build");
    futures_lite::future::block_on(async {
        let _held = lock.acquire().await.expect("hold");
        let mut wait = slow.acquire();
        assert!(poll_now(&mut wait).is_none(), "the waiter must queue");
        let err = wait
            .timeout(Duration::from_millis(20))
            .await
            .expect_err("held");
        assert_eq!(err.kind(), ErrorKind::Timeout);
    });
}
