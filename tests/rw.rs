//! Reader/writer locks inside one process: writer preference among tasks, cancellation of a
//! waiting writer, the blocking wrapper's nesting and refusals, and bad input. Every async
//! scenario runs under each runtime.

mod common;

use std::time::Duration;

use async_filelock::{blocking, ErrorKind, FileLock, RwFileLock, SoftRwLock};
use futures_lite::future::poll_once;

use common::{lock_path, tmp, RUNTIMES};

/// Readers share; a writer excludes readers and writers; the failed attempts leave nothing
/// behind (a refused writer does not keep its claim on the gate).
#[test]
fn readers_share_and_writers_exclude() {
    let dir = tmp();
    let lock = RwFileLock::new(lock_path(&dir, "data.db"));
    let a = lock.try_read().unwrap();
    let b = lock.try_read().unwrap();
    assert_eq!(lock.try_write().unwrap_err().kind(), ErrorKind::WouldBlock);
    let c = lock.try_read().expect("a refused writer leaves no claim");
    drop((a, b, c));
    let w = lock.try_write().unwrap();
    assert_eq!(lock.try_read().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(lock.try_write().unwrap_err().kind(), ErrorKind::WouldBlock);
    w.release().unwrap();
    drop(lock.try_write().unwrap());
    assert!(
        lock.gate_path().exists(),
        "the gate is kept, like the data file"
    );
}

/// A writer waiting behind a reader holds back readers that arrive after it, and gets in
/// when the first reader leaves; a reader queued behind it follows.
#[test]
fn a_waiting_writer_goes_ahead_of_new_readers() {
    for rt in RUNTIMES {
        let dir = tmp();
        let path = lock_path(&dir, "data.db");
        rt.run(async move {
            let lock = RwFileLock::new(&path);
            let first = lock.read().await.unwrap();
            let mut write = lock.write();
            assert!(
                poll_once(&mut write).await.is_none(),
                "{rt:?}: a reader is in"
            );
            assert_eq!(
                lock.try_read().unwrap_err().kind(),
                ErrorKind::WouldBlock,
                "{rt:?}: a new reader waits behind the writer"
            );
            let mut late_read = lock.read();
            assert!(poll_once(&mut late_read).await.is_none());
            drop(first);
            let w = write.await.unwrap();
            assert!(poll_once(&mut late_read).await.is_none(), "{rt:?}: written");
            drop(w);
            let r = late_read.timeout(Duration::from_secs(5)).await.unwrap();
            r.release().unwrap();
        });
    }
}

/// Dropping a waiting writer's future lets readers in at once, and a timed-out writer
/// leaves the same way.
#[test]
fn a_cancelled_or_timed_out_writer_lets_readers_in() {
    for rt in RUNTIMES {
        let dir = tmp();
        let path = lock_path(&dir, "data.db");
        rt.run(async move {
            let lock = RwFileLock::new(&path);
            let first = lock.read().await.unwrap();
            let mut write = lock.write();
            assert!(poll_once(&mut write).await.is_none());
            drop(write);
            // At once on Unix; where attempts run on the blocking pool, an abandoned attempt
            // lets go of the gate when it finishes.
            let r = lock.read().timeout(Duration::from_secs(5)).await;
            drop(r.expect("the cancelled writer left"));

            let err = lock
                .write()
                .timeout(Duration::from_millis(30))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{rt:?}");
            assert!(err.to_string().contains("data.db"), "{err}");
            let r = lock.read().timeout(Duration::from_secs(5)).await;
            drop(r.expect("the timed-out writer left"));
            drop(first);
        });
    }
}

/// Guards are `Send` and `'static`: a read guard moves to another thread and is released
/// there, which lets a waiting writer in.
#[test]
fn guards_move_between_threads() {
    let dir = tmp();
    let lock = RwFileLock::new(lock_path(&dir, "data.db"));
    let r = lock.try_read().unwrap();
    let t = std::thread::spawn(move || r.release().unwrap());
    let w = futures_lite::future::block_on(lock.write().timeout(Duration::from_secs(5)));
    t.join().unwrap();
    w.unwrap().release().unwrap();
}

/// The blocking wrapper nests per thread in the mode it holds, and refuses to upgrade or
/// downgrade instead of waiting for itself.
#[test]
fn blocking_nests_and_refuses_upgrades() {
    let dir = tmp();
    let lock = blocking::RwFileLock::new(lock_path(&dir, "data.db"));
    let r1 = lock.read().unwrap();
    let r2 = lock.read().expect("a second read joins the thread's hold");
    assert_eq!(lock.held_by_this_thread(), Some(false));
    let err = lock.write().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deadlock);
    assert!(err.to_string().contains("upgrad"), "{err}");
    drop(r1);
    assert_eq!(
        lock.write().unwrap_err().kind(),
        ErrorKind::Deadlock,
        "one read level is still held"
    );
    drop(r2);
    assert_eq!(lock.held_by_this_thread(), None);

    let w1 = lock.write().unwrap();
    let w2 = lock
        .write()
        .expect("a second write joins the thread's hold");
    let err = lock.read().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deadlock);
    assert!(err.to_string().contains("downgrad"), "{err}");
    // Another thread waits for this one, as it should.
    let other = lock.clone();
    let t = std::thread::spawn(move || other.try_read().unwrap_err().kind());
    assert_eq!(t.join().unwrap(), ErrorKind::WouldBlock);
    w1.release().unwrap();
    w2.release().unwrap();
    drop(lock.try_read().unwrap());
}

/// A thread that holds the path through one lock object and asks through another, without
/// a time limit, is told it would wait for itself; with a limit, it times out.
#[test]
fn blocking_detects_waiting_for_itself() {
    let dir = tmp();
    let path = lock_path(&dir, "data.db");
    let a = blocking::RwFileLock::new(&path);
    let b = blocking::RwFileLock::new(&path);
    let held = a.write().unwrap();
    assert_eq!(b.read().unwrap_err().kind(), ErrorKind::Deadlock);
    assert_eq!(
        b.read_timeout(Duration::from_millis(20))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    // A FileLock on the same path shares the in-process state, so it is refused too.
    let plain = blocking::FileLock::new(&path);
    assert_eq!(plain.acquire().unwrap_err().kind(), ErrorKind::Deadlock);
    drop(held);
    drop(b.read().unwrap());
}

/// A plain `FileLock` on the data file excludes and is excluded as the OS lock says.
#[test]
fn plain_file_lock_on_the_data_file() {
    let dir = tmp();
    let path = lock_path(&dir, "data.db");
    let rw = RwFileLock::new(&path);
    let plain = FileLock::new(&path);
    let r = rw.try_read().unwrap();
    drop(
        plain
            .try_acquire_shared()
            .expect("shared alongside a reader"),
    );
    assert_eq!(
        plain.try_acquire().unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    drop(r);
    let held = plain.try_acquire().unwrap();
    assert_eq!(rw.try_read().unwrap_err().kind(), ErrorKind::WouldBlock);
    drop(held);
}

/// Bad paths and options get clear errors before or at the first attempt, and leave
/// nothing behind.
#[test]
fn bad_input() {
    let dir = tmp();
    let err = RwFileLock::new(dir.path()).try_read().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAFile, "{err}");

    let path = lock_path(&dir, "data.db");
    std::fs::create_dir(lock_path(&dir, "data.db.gate")).unwrap();
    let err = RwFileLock::new(&path).try_write().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAFile, "{err}");
    assert!(err.to_string().contains("data.db.gate"), "{err}");

    let err = RwFileLock::builder(&path).mode(0o1777).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = RwFileLock::new("").try_read().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

/// The mode given to the builder applies to both files.
#[test]
#[cfg(unix)]
fn mode_applies_to_both_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp();
    let path = lock_path(&dir, "data.db");
    let lock = RwFileLock::builder(&path).mode(0o600).build().unwrap();
    drop(lock.try_write().unwrap());
    for p in [lock.path(), lock.gate_path()] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{p:?}");
    }
}

fn soft(path: &std::path::Path) -> SoftRwLock {
    SoftRwLock::builder(path)
        .heartbeat_interval(Duration::from_millis(100))
        .stale_threshold(Duration::from_millis(400))
        .build()
        .unwrap()
}

/// The soft lock in one process: readers share, writers exclude, a refused writer commits
/// itself out, generations strictly increase, and nothing is left in the tree afterwards.
#[test]
fn soft_readers_share_and_writers_exclude() {
    let dir = tmp();
    let path = lock_path(&dir, "data.lock");
    let lock = soft(&path);
    let a = lock.try_read().unwrap();
    let b = lock.try_read().unwrap();
    assert!(b.generation() > a.generation());
    assert_eq!(lock.try_write().unwrap_err().kind(), ErrorKind::WouldBlock);
    let c = lock.try_read().expect("a refused writer leaves no claim");
    drop((a, b, c));
    let w = lock.try_write().unwrap();
    assert_eq!(lock.try_read().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(w.compromise().is_none());
    assert_eq!(w.token().len(), 32);
    let g = w.generation();
    w.release().unwrap();
    let r = lock.try_read().unwrap();
    assert!(r.generation() > g);
    drop(r);
    assert!(!path.exists(), "the lock path itself is never created");
    let holders = std::fs::read_dir(dir.path().join("data.lock.rw/holders")).unwrap();
    assert_eq!(holders.count(), 0, "every member removed its record");
    assert!(lock.compromise().is_none());
}

/// A waiting soft writer keeps new readers out, under every runtime, and its cancellation
/// lets them in.
#[test]
fn soft_waiting_writer_goes_first_and_cancels_cleanly() {
    for rt in RUNTIMES {
        let dir = tmp();
        let path = lock_path(&dir, "data.lock");
        rt.run(async move {
            let lock = soft(&path);
            let first = lock.read().await.unwrap();
            let mut write = lock.write();
            assert!(poll_once(&mut write).await.is_none());
            // A reader through another lock object (its own queue position is behind the
            // writer anyway), and through the log: the waiting writer is named there.
            let other = soft(&path);
            assert_eq!(other.try_read().unwrap_err().kind(), ErrorKind::WouldBlock);
            drop(write);
            let r = other.read().timeout(Duration::from_secs(5)).await;
            drop(r.expect("the cancelled writer committed itself out"));
            let w = lock.write();
            drop(first);
            drop(w.timeout(Duration::from_secs(5)).await.unwrap());
        });
    }
}

/// Options are checked with Python's wording.
#[test]
fn soft_options_are_checked() {
    let err = SoftRwLock::builder("x.lock")
        .heartbeat_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("heartbeat_interval must be positive"),
        "{err}"
    );
    let err = SoftRwLock::builder("x.lock")
        .heartbeat_interval(Duration::from_secs(2))
        .stale_threshold(Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("stale_threshold must exceed heartbeat_interval"),
        "{err}"
    );
    let err = SoftRwLock::builder("x.lock")
        .heartbeat_interval(Duration::from_millis(10))
        .stale_threshold(Duration::from_millis(30))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("longest pause"), "{err}");
    let lock = SoftRwLock::new("x.lock");
    assert_eq!(lock.heartbeat_interval(), Duration::from_secs(30));
    assert_eq!(lock.stale_threshold(), Duration::from_secs(90));
}

/// The blocking soft twin nests per thread and refuses upgrades; its guards expose the
/// generation.
#[test]
fn soft_blocking_nests_and_refuses_upgrades() {
    let dir = tmp();
    let lock = blocking::SoftRwLock::from(soft(&lock_path(&dir, "data.lock")));
    let r1 = lock.read().unwrap();
    let r2 = lock.read().unwrap();
    assert_eq!(r1.generation(), r2.generation(), "one member per thread");
    assert_eq!(lock.write().unwrap_err().kind(), ErrorKind::Deadlock);
    drop((r1, r2));
    let w = lock.write().unwrap();
    assert_eq!(lock.read().unwrap_err().kind(), ErrorKind::Deadlock);
    assert!(w.compromise().is_none());
    w.release().unwrap();
}

/// A symbolic link where the protocol directory should be is refused, naming the path.
#[test]
#[cfg(unix)]
fn soft_refuses_a_symlinked_tree() {
    let dir = tmp();
    let path = lock_path(&dir, "data.lock");
    let elsewhere = lock_path(&dir, "elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, lock_path(&dir, "data.lock.rw")).unwrap();
    let err = soft(&path).try_read().unwrap_err();
    assert!(err.to_string().contains("data.lock"), "{err}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing was written through the link"
    );
}
