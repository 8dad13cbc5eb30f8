//! With the `tracing` feature, the waiting loop and the guard emit debug events naming the
//! lock's path: attempt, waiting (with the delay), the moments of the waiting hook, acquired,
//! timeout and release.

#![cfg(feature = "tracing")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_filelock::{blocking, FileLock};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a debug-level subscriber on this thread and returns the lines it wrote.
fn capture(f: impl FnOnce()) -> Vec<String> {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

fn find<'a>(lines: &'a [String], message: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.contains(message)).collect()
}

#[test]
fn events_name_the_path_for_each_step() {
    let dir = common::tmp();
    let path = dir.path().join("traced.lock");
    let shown = format!("{path:?}");
    let lock = blocking::FileLock::builder(&path)
        .backoff(async_filelock::Backoff::fixed(Duration::from_millis(5)))
        .build()
        .unwrap();
    let lines = capture(|| {
        let guard = lock.acquire().unwrap();
        drop(guard);
        // Held elsewhere: a wait with its delay, then a timeout.
        let _foreign = common::foreign_hold(&path);
        let err = lock.acquire_timeout(Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.kind(), async_filelock::ErrorKind::Timeout);
    });
    for message in [
        "attempting lock",
        "lock acquired",
        "lock released",
        "lock held elsewhere, waiting",
        "waiting for the lock",
        "timed out waiting for lock",
    ] {
        let found = find(&lines, message);
        assert!(!found.is_empty(), "no {message:?} event in:\n{lines:#?}");
        for line in found {
            assert!(line.contains("DEBUG"), "{line}");
            assert!(
                line.contains(&shown),
                "{message:?} does not name the path: {line}"
            );
        }
    }
    let waiting = find(&lines, "lock held elsewhere, waiting");
    assert!(
        waiting.iter().all(|l| l.contains("delay=5ms")),
        "a waiting event without its delay: {waiting:#?}"
    );
}

#[test]
fn async_acquisitions_emit_the_same_events() {
    let dir = common::tmp();
    let path = dir.path().join("traced-async.lock");
    let lock = FileLock::new(&path);
    let lines = capture(|| {
        futures_lite::future::block_on(async {
            let guard = lock.acquire_shared().await.unwrap();
            guard.release().unwrap();
        })
    });
    assert!(!find(&lines, "lock acquired").is_empty(), "{lines:#?}");
    let released = find(&lines, "lock released");
    assert!(
        released.iter().any(|l| l.contains("shared=true")),
        "{lines:#?}"
    );
}

/// A pause too long to represent must not turn into no pause at all (a CPU spin): with an
/// endless backoff and a 200 ms limit there is the first attempt and the one at the deadline.
#[test]
fn an_endless_backoff_waits_instead_of_spinning() {
    let dir = common::tmp();
    let path = dir.path().join("endless.lock");
    let lock = blocking::FileLock::builder(&path)
        .backoff(async_filelock::Backoff::fixed(Duration::MAX))
        .build()
        .unwrap();
    let _foreign = common::foreign_hold(&path);
    let lines = capture(|| {
        let err = lock
            .acquire_timeout(Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(err.kind(), async_filelock::ErrorKind::Timeout);
    });
    // The first attempt, one more once the lock is watched for releases (where the platform
    // can watch it: a release in between raised no event), and the last one at the deadline.
    let watched = cfg!(any(target_os = "linux", target_os = "android"));
    let attempts = find(&lines, "attempting lock").len();
    assert_eq!(attempts, if watched { 3 } else { 2 }, "{lines:#?}");
}

#[test]
fn the_waiting_hook_moments_are_events() {
    let dir = common::tmp();
    let path = dir.path().join("hooked.lock");
    let lock = blocking::FileLock::builder(&path)
        .backoff(async_filelock::Backoff::fixed(Duration::from_millis(5)))
        .on_wait_every(Duration::from_millis(10), |_| {})
        .build()
        .unwrap();
    let lines = capture(|| {
        let _foreign = common::foreign_hold(&path);
        let err = lock.acquire_timeout(Duration::from_millis(60)).unwrap_err();
        assert_eq!(err.kind(), async_filelock::ErrorKind::Timeout);
    });
    let waits = find(&lines, "waiting for the lock");
    assert!(
        waits.iter().filter(|l| l.contains("first=true")).count() == 1
            && waits.iter().any(|l| l.contains("first=false")),
        "the first wait, then repeats:\n{lines:#?}"
    );
}
