//! The blocking wrappers, for scripts and other synchronous code: what a Python script does
//! with `filelock`, without any async runtime.
//!
//! Run with: cargo run --example sync_script
//!
//! The Python original:
//!
//! ```python
//! from filelock import FileLock, Timeout
//!
//! lock = FileLock("high_ground.txt.lock")
//! with lock:
//!     with open("high_ground.txt", "a") as f:
//!         f.write("You were the chosen one.")
//! ```
//!
//! `async_filelock::blocking::FileLock` takes the same OS lock as the async
//! `async_filelock::FileLock`, so sync and async users of one path exclude each other.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use async_filelock::blocking::FileLock;
use async_filelock::ErrorKind;

// An `async_filelock::Error` converts into `io::Error`, so `?` works in `io::Result` code.
fn main() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = dir.path().join("high_ground.txt");
    let lock = FileLock::new(dir.path().join("high_ground.txt.lock"));

    // `with lock:` — the guard releases the lock at the end of the block.
    {
        let _guard = lock.acquire()?;
        append(&text, "You were the chosen one.\n")?;
    }
    println!("wrote {:?}", std::fs::read_to_string(&text)?);

    // Re-entrant per thread, like Python's default: nested acquisitions are counted, and
    // the OS lock is released with the thread's last guard.
    let outer = lock.acquire()?;
    let inner = lock.acquire()?;
    println!("nested: lock_counter = {}", lock.lock_counter());
    drop(inner);
    println!(
        "inner released: lock_counter = {}, is_locked = {}",
        lock.lock_counter(),
        lock.is_locked()
    );
    drop(outer);
    println!(
        "outer released: lock_counter = {}, is_locked = {}",
        lock.lock_counter(),
        lock.is_locked()
    );

    // Another holder: a thread here, with its own `FileLock` on the same path, as another
    // script (another process) would have.
    let (held, is_held) = mpsc::channel();
    let (release, is_released) = mpsc::channel::<()>();
    let lock_path = lock.path().to_path_buf();
    let other = thread::spawn(move || -> io::Result<()> {
        let guard = FileLock::new(lock_path).acquire()?;
        held.send(()).expect("main is listening");
        is_released.recv().expect("main tells us when");
        guard.release()?;
        Ok(())
    });
    is_held.recv().expect("the thread holds the lock");
    println!("another holder has the lock");

    // `lock.acquire(timeout=0.1)`
    let err = lock
        .acquire_timeout(Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    println!("acquire_timeout(100 ms): {err}");

    // `FileLock(path, timeout=0.1)` then `lock.acquire()`: a default limit for every call.
    let patient = FileLock::builder(lock.path())
        .timeout(Duration::from_millis(100))
        .build()?;
    let err = patient.acquire().unwrap_err();
    println!("acquire() with a 100 ms default: {err}");

    // `lock.acquire(blocking=False)`: one attempt, no waiting.
    let err = lock.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    println!("try_acquire(): {err}");

    release.send(()).expect("the thread is waiting");
    other.join().expect("the thread does not panic")?;
    println!("the other holder released the lock");

    let guard = lock.acquire_timeout(Duration::from_secs(5))?;
    append(&text, "It's over, I have the high ground.\n")?;
    guard.release()?;
    println!("wrote {:?}", std::fs::read_to_string(&text)?);
    Ok(())
}

fn append(path: &Path, line: &str) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}
