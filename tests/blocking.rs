//! The blocking wrappers (`async_filelock::blocking::FileLock`): the synchronous forms of the
//! in-process scenarios, per-thread re-entrancy, `Deadlock` detection, and interplay with the
//! async lock on the same path.
//!
//! Threads are ordered with channels and barriers. Where a test must know that a thread is
//! waiting in the queue, it watches for it through the public API: while an exclusive request
//! is queued behind shared holders, a new shared `try_acquire` is refused (no barging), and
//! before it is queued that `try_acquire` succeeds.

mod common;
#[path = "common/inproc.rs"]
mod inproc;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use async_filelock::blocking::FileLock;
use async_filelock::{Backoff, Error, ErrorKind};
use common::{foreign_hold, tmp, HANG, RUNTIMES};
use inproc::*;

const PROMPT: Duration = Duration::from_secs(3);

#[track_caller]
fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

/// A thread that holds the lock until told to let go.
struct OtherThread {
    release: mpsc::Sender<()>,
    join: thread::JoinHandle<()>,
}

impl OtherThread {
    fn hold(path: &Path, shared: bool) -> OtherThread {
        let (held_tx, held_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let lock = FileLock::new(path);
        let join = thread::spawn(move || {
            let g = if shared {
                lock.acquire_shared()
            } else {
                lock.acquire()
            }
            .expect("the other thread acquires");
            held_tx.send(()).expect("main waits");
            let _ = release_rx.recv();
            g.release().expect("release");
        });
        held_rx.recv_timeout(HANG).expect("the other thread holds");
        OtherThread { release, join }
    }

    fn let_go(self) {
        drop(self.release);
        self.join.join().expect("the other thread");
    }
}

/// Waits until an exclusive request is queued on `path` behind shared holders: from then on a
/// shared `try_acquire` is refused.
fn wait_until_writer_queued(path: &Path) {
    let probe = async_filelock::FileLock::new(path);
    wait_until("an exclusive request to queue", || {
        match probe.try_acquire_shared() {
            Ok(g) => {
                drop(g);
                false
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Err(e) => panic!("probe: {e}"),
        }
    });
}

fn lock_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tmp();
    let path = dir.path().join("x.lock");
    (dir, path)
}

// ---------------------------------------------------------------------------------------------
// Exclusion and sharing

#[test]
fn an_exclusive_hold_excludes_other_threads_and_lock_objects() {
    let (_dir, path) = lock_path();
    let other = OtherThread::hold(&path, false);
    assert!(!foreign_can_lock_shared(&path), "really locked");
    let lock = FileLock::new(&path);
    for l in [lock.clone(), FileLock::new(&path)] {
        assert_eq!(kind(l.try_acquire()), ErrorKind::WouldBlock);
        assert_eq!(kind(l.try_acquire_shared()), ErrorKind::WouldBlock);
        assert_eq!(kind(l.acquire_timeout(ms(30))), ErrorKind::Timeout);
        assert_eq!(kind(l.acquire_shared_timeout(ms(30))), ErrorKind::Timeout);
        assert_eq!(l.lock_counter(), 0);
        assert!(!l.is_locked());
    }
    // The async lock is excluded too.
    assert_eq!(
        kind(async_filelock::FileLock::new(&path).try_acquire()),
        ErrorKind::WouldBlock
    );
    other.let_go();
    let g = lock.acquire_timeout(HANG).expect("free now");
    assert!(!g.is_shared());
    assert_eq!(g.path(), path);
    drop(g);
    assert_free(&path);
}

#[test]
fn shared_holds_coexist_across_threads() {
    let (_dir, path) = lock_path();
    const N: usize = 4;
    let barrier = Arc::new(Barrier::new(N + 1));
    let done = Arc::new(Barrier::new(N + 1));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let (lock, barrier, done) = (FileLock::new(&path), barrier.clone(), done.clone());
            thread::spawn(move || {
                let g = lock.acquire_shared_timeout(HANG).expect("shared");
                assert!(g.is_shared());
                barrier.wait(); // every reader holds at once
                done.wait();
                drop(g);
            })
        })
        .collect();
    barrier.wait();
    assert!(foreign_can_lock_shared(&path));
    assert!(!foreign_can_lock(&path));
    let lock = FileLock::new(&path);
    assert_eq!(kind(lock.try_acquire()), ErrorKind::WouldBlock);
    let extra = lock.try_acquire_shared().expect("another reader");
    drop(extra);
    done.wait();
    for t in threads {
        t.join().expect("reader");
    }
    assert_free(&path);
}

#[test]
fn threads_never_overlap_a_writer() {
    let (_dir, path) = lock_path();
    let writer = Arc::new(AtomicBool::new(false));
    let readers = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|id| {
            let (lock, writer, readers) = (FileLock::new(&path), writer.clone(), readers.clone());
            thread::spawn(move || {
                for i in 0..25usize {
                    if (id + i).is_multiple_of(3) {
                        let g = lock.acquire_shared_timeout(HANG).expect("read");
                        readers.fetch_add(1, Ordering::SeqCst);
                        assert!(!writer.load(Ordering::SeqCst), "reader beside a writer");
                        thread::yield_now();
                        readers.fetch_sub(1, Ordering::SeqCst);
                        drop(g);
                    } else {
                        let g = lock.acquire_timeout(HANG).expect("write");
                        assert!(!writer.swap(true, Ordering::SeqCst), "two writers");
                        assert_eq!(readers.load(Ordering::SeqCst), 0, "writer beside readers");
                        thread::yield_now();
                        writer.store(false, Ordering::SeqCst);
                        drop(g);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    assert_free(&path);
}

/// A thread waiting in the queue is woken by a release in another thread. Its backoff is far
/// beyond the hang detector, so only the wake-up can move it.
#[test]
fn a_waiting_thread_is_woken_by_a_release() {
    let (_dir, path) = lock_path();
    let reader = OtherThread::hold(&path, true);
    let lock = FileLock::builder(&path)
        .backoff(Backoff::fixed(HANG * 4))
        .build()
        .expect("build");
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = lock.acquire().map(|g| g.is_shared());
        tx.send(r).expect("main waits");
    });
    wait_until_writer_queued(&path);
    assert!(rx.try_recv().is_err(), "the writer got in beside a reader");
    let start = Instant::now();
    reader.let_go();
    let r = rx
        .recv_timeout(HANG)
        .expect("hang: the waiter was not woken");
    assert!(!r.expect("the waiter acquires"), "an exclusive hold");
    assert!(start.elapsed() < PROMPT);
    waiter.join().expect("waiter");
    assert_free(&path);
}

/// A thread backing off against another process gets the lock once that process lets go.
#[test]
fn a_waiting_thread_gets_the_lock_after_another_process_lets_go() {
    let (_dir, path) = lock_path();
    let foreign = foreign_hold(&path);
    let lock = FileLock::builder(&path)
        .backoff(Backoff::fixed(ms(2)))
        .build()
        .expect("build");
    let err = lock.acquire_timeout(ms(50)).expect_err("held elsewhere");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.waited().expect("waited") >= ms(50));
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        tx.send(lock.acquire_shared().map(|g| g.is_shared()))
            .expect("main waits");
    });
    drop(foreign);
    let r = rx
        .recv_timeout(HANG)
        .expect("hang: the waiter never got the lock");
    assert!(r.expect("acquired"));
    t.join().expect("waiter");
    assert_free(&path);
}

// ---------------------------------------------------------------------------------------------
// Re-entrancy and deadlock detection

#[test]
fn the_lock_is_reentrant_per_thread() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path);
    let clone = lock.clone();
    assert_eq!(lock.lock_counter(), 0);
    assert!(!lock.is_locked());
    let a = lock.acquire().expect("first");
    assert_eq!(lock.lock_counter(), 1);
    let b = clone.acquire().expect("re-entered through a clone");
    let c = lock.try_acquire().expect("try re-enters");
    let d = lock
        .acquire_timeout(Duration::ZERO)
        .expect("zero timeout re-enters");
    // A shared request joins the exclusive hold.
    let e = lock.acquire_shared().expect("shared joins exclusive");
    assert!(!e.is_shared(), "the thread's hold is exclusive");
    assert_eq!(lock.lock_counter(), 5);
    assert_eq!(clone.lock_counter(), 5);
    assert!(clone.is_locked());

    // Another thread sees none of it, and is excluded.
    let (l2, l3) = (lock.clone(), FileLock::new(&path));
    thread::spawn(move || {
        assert_eq!(l2.lock_counter(), 0);
        assert!(!l2.is_locked());
        assert_eq!(kind(l2.try_acquire()), ErrorKind::WouldBlock);
        assert_eq!(kind(l3.try_acquire_shared()), ErrorKind::WouldBlock);
        assert_eq!(kind(l2.acquire_timeout(ms(20))), ErrorKind::Timeout);
    })
    .join()
    .expect("other thread");

    // Released in any order; the OS lock goes with the last guard.
    for (g, left) in [(c, 4), (a, 3), (e, 2), (b, 1)] {
        g.release().expect("release a level");
        assert_eq!(lock.lock_counter(), left);
        assert!(!foreign_can_lock_shared(&path), "released too early");
    }
    drop(d);
    assert_eq!(lock.lock_counter(), 0);
    assert!(!lock.is_locked());
    assert_free(&path);

    // Shared re-entrancy.
    let s1 = lock.acquire_shared().expect("shared");
    let s2 = clone.try_acquire_shared().expect("shared again");
    assert!(s1.is_shared() && s2.is_shared());
    assert_eq!(lock.lock_counter(), 2);
    drop(s1);
    assert!(!foreign_can_lock(&path));
    drop(s2);
    assert_free(&path);
}

/// Asking for the lock exclusively while this thread holds it shared would wait for itself:
/// every form of the request says so at once, and the hold is unchanged.
#[test]
fn upgrading_shared_to_exclusive_is_a_deadlock() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path);
    let s = lock.acquire_shared().expect("shared");
    type Call = fn(&FileLock) -> Result<async_filelock::blocking::FileLockGuard, Error>;
    let calls: [(&str, Call); 4] = [
        ("acquire", |l| l.acquire()),
        ("acquire_timeout", |l| l.acquire_timeout(HANG)),
        ("acquire_timeout(MAX)", |l| l.acquire_timeout(Duration::MAX)),
        ("try_acquire", |l| l.try_acquire()),
    ];
    for (what, call) in calls {
        let start = Instant::now();
        let err = call(&lock).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Deadlock, "{what}: {err}");
        assert!(start.elapsed() < PROMPT, "{what} waited");
        assert_eq!(err.path(), Some(path.as_path()));
        assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
        assert_eq!(lock.lock_counter(), 1);
    }
    let err: io::Error = lock.acquire().expect_err("deadlock").into();
    assert_eq!(err.kind(), io::ErrorKind::Deadlock);
    // More shared levels are fine.
    let s2 = lock.acquire_shared().expect("shared again");
    assert_eq!(lock.lock_counter(), 2);
    drop((s, s2));
    assert_free(&path);
}

/// A second lock object for a path this thread holds does not share the re-entrancy: without a
/// time limit that would wait forever, so it is a Deadlock; with one, it times out.
#[test]
fn another_lock_object_in_the_holding_thread() {
    let (_dir, path) = lock_path();
    let first = FileLock::new(&path);
    let g = first.acquire().expect("first");
    let second = FileLock::new(&path);
    let start = Instant::now();
    assert_eq!(kind(second.acquire()), ErrorKind::Deadlock);
    assert_eq!(kind(second.acquire_shared()), ErrorKind::Deadlock);
    assert!(start.elapsed() < PROMPT);
    assert_eq!(kind(second.try_acquire()), ErrorKind::WouldBlock);
    assert_eq!(kind(second.try_acquire_shared()), ErrorKind::WouldBlock);
    let err = second.acquire_timeout(ms(30)).expect_err("times out");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.waited().expect("waited") >= ms(30));
    let limited = FileLock::builder(&path)
        .timeout(ms(30))
        .build()
        .expect("build");
    assert_eq!(kind(limited.acquire()), ErrorKind::Timeout);
    assert_eq!(second.lock_counter(), 0);
    assert_eq!(first.lock_counter(), 1);
    // Held shared by the first object: the same.
    drop(g);
    let s = first.acquire_shared().expect("shared");
    assert_eq!(kind(second.acquire()), ErrorKind::Deadlock);
    drop(s);
    // Once the thread lets go, the second object works.
    let g2 = second.acquire().expect("free now");
    drop(g2);
    assert_free(&path);
}

/// A limit too long to ever end (`Duration::MAX`, from the call or from the builder) is no
/// limit: asking for a path this thread holds through another object must be a Deadlock error
/// rather than a wait that never ends.
#[test]
fn an_endless_limit_is_no_limit_for_deadlock_detection() {
    let (_dir, path) = lock_path();
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    // The thread is left behind if it hangs; the test fails either way.
    thread::spawn(move || {
        let first = FileLock::new(&p);
        let _g = first.acquire().expect("first");
        let second = FileLock::new(&p);
        let from_builder = FileLock::builder(&p)
            .timeout(Duration::MAX)
            .build()
            .expect("build");
        let _ = tx.send(second.acquire_timeout(Duration::MAX).map(drop));
        let _ = tx.send(from_builder.acquire().map(drop));
    });
    for what in ["acquire_timeout(MAX)", "builder timeout(MAX)"] {
        let r = rx
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("hang: {what} waited for its own thread"));
        assert_eq!(kind(r), ErrorKind::Deadlock, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[test]
fn timeouts_against_another_thread_and_another_process() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path);
    // Free: zero and huge limits both succeed.
    drop(lock.acquire_timeout(Duration::ZERO).expect("zero, free"));
    drop(
        lock.acquire_shared_timeout(Duration::MAX)
            .expect("max, free"),
    );
    for holder in ["thread", "process"] {
        let other = (holder == "thread").then(|| OtherThread::hold(&path, false));
        let foreign = (holder == "process").then(|| foreign_hold(&path));
        let start = Instant::now();
        let err = lock.acquire_timeout(Duration::ZERO).expect_err("zero");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{holder}");
        assert!(start.elapsed() < PROMPT);
        let err = lock.acquire_shared_timeout(ms(60)).expect_err("60 ms");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{holder}");
        let waited = err.waited().expect("waited");
        assert!(waited >= ms(60) && waited < ms(60) + PROMPT, "{waited:?}");
        let text = err.to_string();
        assert!(text.starts_with("timed out after "), "{text}");
        assert!(text.contains(&format!("{path:?}")), "{text}");
        assert_eq!(
            io::Error::from(err).kind(),
            io::ErrorKind::TimedOut,
            "{holder}"
        );
        let zero = FileLock::builder(&path)
            .timeout(Duration::ZERO)
            .build()
            .expect("build");
        assert_eq!(kind(zero.acquire()), ErrorKind::Timeout);
        assert_eq!(kind(zero.try_acquire()), ErrorKind::WouldBlock);
        assert!(!lock.is_locked() && !zero.is_locked());
        if let Some(o) = other {
            o.let_go();
        }
        drop(foreign);
        assert_free(&path);
    }
}

/// `Duration::MAX` waits without overflow until another thread lets go.
#[test]
fn a_max_timeout_waits_until_released() {
    let (_dir, path) = lock_path();
    let reader = OtherThread::hold(&path, true);
    let lock = FileLock::builder(&path)
        .timeout(Duration::MAX)
        .build()
        .expect("build");
    let (tx, rx) = mpsc::channel();
    let l = lock.clone();
    let t = thread::spawn(move || {
        let a = l.acquire().map(drop);
        let b = l.acquire_timeout(Duration::MAX).map(drop);
        tx.send((a, b)).expect("main waits");
    });
    wait_until_writer_queued(&path);
    reader.let_go();
    let (a, b) = rx.recv_timeout(HANG).expect("hang");
    a.expect("builder MAX");
    b.expect("call MAX");
    t.join().expect("waiter");
    assert_free(&path);
}

// ---------------------------------------------------------------------------------------------
// With the async lock

#[test]
fn blocking_and_async_locks_exclude_each_other() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path);
    let alock = async_filelock::FileLock::new(&path);
    // Blocking holds, async is refused.
    let g = lock.acquire().expect("blocking");
    assert_eq!(kind(alock.try_acquire()), ErrorKind::WouldBlock);
    assert_eq!(kind(lock.as_async().try_acquire()), ErrorKind::WouldBlock);
    drop(g);
    // Async holds, blocking is refused (no re-entrancy across the two).
    let ag = alock.try_acquire().expect("async");
    assert_eq!(kind(lock.try_acquire()), ErrorKind::WouldBlock);
    assert_eq!(kind(lock.acquire_timeout(ms(20))), ErrorKind::Timeout);
    drop(ag);
    // An async waiter, under every runtime, is woken by a blocking release in another thread.
    for rt in RUNTIMES {
        let reader = OtherThread::hold(&path, true);
        let p = path.clone();
        let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
        let waiter = thread::spawn(move || {
            rt.run(async move {
                let lock = async_filelock::FileLock::builder(&p)
                    .backoff(Backoff::fixed(HANG * 4))
                    .build()
                    .expect("build");
                let acq = SignalPending::new(lock.acquire(), queued_tx);
                no_hang("async waiter", acq).await.map(drop)
            })
        });
        futures_lite::future::block_on(queued_rx).expect("the async waiter waits");
        reader.let_go();
        waiter
            .join()
            .expect("waiter thread")
            .expect("the async waiter acquires");
        assert_free(&path);
    }
    // From an async lock.
    let wrapped = FileLock::from(alock.clone());
    assert_eq!(wrapped.path(), alock.path());
    drop(wrapped.acquire().expect("wrapped"));
    assert_free(&path);
}

// ---------------------------------------------------------------------------------------------
// Builder and the lock file

#[test]
fn the_blocking_builder_validates_like_the_async_one() {
    let dir = tmp();
    let path = dir.path().join("missing").join("x.lock");
    for b in [
        FileLock::builder(&path).backoff(Backoff::fixed(Duration::ZERO)),
        FileLock::builder(&path).backoff(Backoff::exponential(ms(9), ms(3))),
        FileLock::builder(&path).mode(0o1600),
        FileLock::builder(&path).mode(0o444),
        FileLock::builder(&path).mode(0o066),
    ] {
        let err = b.build().expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    let lock = FileLock::builder(&path)
        .timeout(ms(5))
        .backoff(Backoff::fixed(ms(1)))
        .mode(0o600)
        .delete_on_release(true)
        .build()
        .expect("valid");
    assert_eq!(lock.as_async().timeout(), Some(ms(5)));
    assert_eq!(lock.as_async().backoff(), Backoff::fixed(ms(1)));
    assert!(!path.parent().unwrap().exists(), "build did I/O");
    // Invalid paths are refused by the wrappers too.
    assert_eq!(kind(FileLock::new("").acquire()), ErrorKind::InvalidInput);
    assert_eq!(
        kind(FileLock::new(dir.path()).acquire()),
        ErrorKind::NotAFile
    );
}

#[test]
fn the_lock_file_keeps_its_content_and_is_deleted_only_on_request() {
    let (dir, path) = lock_path();
    std::fs::write(&path, b"content").expect("write");
    let keep = FileLock::new(&path);
    drop(keep.acquire().expect("exclusive"));
    drop(keep.acquire_shared().expect("shared"));
    drop(keep.try_acquire().expect("try"));
    assert_eq!(std::fs::read(&path).expect("kept"), b"content");

    let del_path = dir.path().join("del").join("d.lock");
    let del = FileLock::builder(&del_path)
        .delete_on_release(true)
        .build()
        .expect("build");
    let a = del.acquire().expect("exclusive");
    let b = del.acquire().expect("re-entered");
    assert!(del_path.is_file());
    drop(a);
    assert!(del_path.is_file(), "deleted before the last level");
    b.release().expect("release");
    assert!(!del_path.exists(), "not deleted at release");
    assert!(del_path.parent().unwrap().is_dir());
}

#[cfg(unix)]
#[test]
fn blocking_locks_create_files_with_the_right_mode() {
    let dir = tmp();
    let default = dir.path().join("default.lock");
    drop(FileLock::new(&default).acquire().expect("default"));
    assert_eq!(file_mode(&default), 0o666 & !umask());
    let exact = dir.path().join("exact.lock");
    let lock = FileLock::builder(&exact)
        .mode(0o604)
        .build()
        .expect("build");
    drop(lock.acquire().expect("exact"));
    assert_eq!(file_mode(&exact), 0o604);
    set_mode(&exact, 0o640);
    drop(lock.acquire_shared().expect("existing"));
    assert_eq!(file_mode(&exact), 0o640, "an existing file's mode changed");
}

#[test]
fn guards_debug_and_paths() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path);
    let g = lock.acquire().expect("acquire");
    assert_eq!(g.path(), path);
    assert!(format!("{g:?}").contains("x.lock"));
    assert!(format!("{lock:?}").contains("lock_counter: 1"), "{lock:?}");
    drop(g);
    assert!(format!("{lock:?}").contains("lock_counter: 0"), "{lock:?}");
}

/// A guard kept in a thread-local is dropped while the thread's locals are destroyed; that
/// must release the lock, not abort the process.
#[test]
fn a_guard_in_a_thread_local_is_released_at_thread_exit() {
    use std::cell::RefCell;
    thread_local! {
        static GUARD: RefCell<Option<async_filelock::blocking::FileLockGuard>> = const { RefCell::new(None) };
    }
    let dir = tmp();
    let path = dir.path().join("tls.lock");
    let lock = FileLock::new(&path);
    let inner = lock.clone();
    std::thread::spawn(move || {
        let guard = inner.acquire().expect("acquire");
        GUARD.with(|g| *g.borrow_mut() = Some(guard));
    })
    .join()
    .expect("the thread exits cleanly");
    let _guard = lock.try_acquire().expect("released when the thread ended");
}

/// A lock resolved before its parent directory exists, through a symbolic link, still shares
/// one in-process queue with a lock on the real path: the thread that holds one gets
/// `Deadlock` from the other instead of waiting for itself.
#[cfg(unix)]
#[test]
fn spellings_meet_even_before_the_parent_exists() {
    let dir = tmp();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
    let through_link = FileLock::new(dir.path().join("link/sub/x.lock"));
    let _held = through_link.acquire().expect("acquire, creating sub/");
    let direct = FileLock::new(real.join("sub/x.lock"));
    // Ask from this very thread; a watchdog turns a wait for ourselves into a failure.
    let (done, watchdog) = mpsc::channel::<()>();
    thread::spawn(move || {
        if watchdog.recv_timeout(HANG) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("hang: the thread waits for a lock it holds itself");
            std::process::abort();
        }
    });
    let err = direct
        .acquire()
        .expect_err("the same file, held by this thread");
    let _ = done.send(());
    assert_eq!(err.kind(), ErrorKind::Deadlock);
}
