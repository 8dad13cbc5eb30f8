//! Event-driven wake-ups (Linux, inotify): a waiter whose backoff would keep it asleep for a
//! minute still gets the lock as soon as a holder in another process releases it, for every
//! lock kind, under tokio, smol and the blocking wrappers.
//!
//! The waiter's backoff is a fixed 60 s, so nothing but a wake-up can let it in before then;
//! the bound the test checks (10 s) only tells a wake-up from the timer, it measures nothing.
//! Elsewhere waiters poll on their timer alone, and this file has no tests.

#![cfg(any(target_os = "linux", target_os = "android"))]

#[path = "common/child.rs"]
mod child;
mod common;

use std::any::Any;
use std::path::Path;
use std::time::{Duration, Instant};

use async_filelock::{
    blocking, Backoff, ErrorKind, FileLock, RwFileLock, SoftFileLock, SoftRwLock,
};

use child::{arg, read_line, say, Mode, Proc, ROLE_VAR};
use common::{tmp, Runtime};

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let kind = arg("kind");
    let path = arg("path");
    match role.as_str() {
        "hold" => {
            let held = take(&kind, Path::new(&path), Mode::Blocking, Backoff::default())
                .expect("the holder takes the lock");
            say("HELD");
            read_line();
            drop(held);
            say("RELEASED");
        }
        "hold-open" => {
            // Releases the guard but keeps the lock, and with it the lock file it keeps open
            // for its next hold: the release closes nothing unless a waiter asks for it.
            let lock = FileLock::new(&path);
            let guard = lock.try_acquire().expect("the holder takes the lock");
            say("HELD");
            read_line();
            drop(guard);
            say("RELEASED");
            read_line();
            drop(lock);
        }
        "wait" => {
            let mode = Mode::from_name(&arg("mode"));
            let slow = Backoff::fixed(Duration::from_secs(60));
            let err = attempt(&kind, Path::new(&path)).expect_err("the holder has it");
            assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
            say("BLOCKED");
            let start = Instant::now();
            let held = take(&kind, Path::new(&path), mode, slow).expect("acquired");
            say(&format!("ACQUIRED {}", start.elapsed().as_millis()));
            drop(held);
        }
        #[cfg(feature = "tracing")]
        "count" => storm::count(&kind, Path::new(&path)),
        other => panic!("unknown role {other:?}"),
    }
}

/// One attempt at the lock of `kind` (the holder's mode: exclusive / write).
fn attempt(kind: &str, path: &Path) -> Result<Box<dyn Any>, async_filelock::Error> {
    Ok(match kind {
        "file" | "file-delete" => Box::new(FileLock::new(path).try_acquire()?),
        "soft" => Box::new(SoftFileLock::new(path).try_acquire()?),
        "rw-write" => Box::new(RwFileLock::new(path).try_write()?),
        "rw-read" => Box::new(RwFileLock::new(path).try_read()?),
        "soft-rw" => Box::new(SoftRwLock::new(path).try_write()?),
        other => panic!("unknown kind {other:?}"),
    })
}

/// Takes the lock of `kind` with `backoff`, the way `mode` says. The holder of `rw-read`
/// writes, so that the waiter's read must wait.
fn take(
    kind: &str,
    path: &Path,
    mode: Mode,
    backoff: Backoff,
) -> Result<Box<dyn Any>, async_filelock::Error> {
    let limit = Duration::from_secs(30);
    Ok(match (kind, mode) {
        ("file" | "file-delete", Mode::Blocking) => {
            let lock = blocking::FileLock::builder(path)
                .backoff(backoff)
                .delete_on_release(kind == "file-delete")
                .build()?;
            // The blocking guard is tied to its lock object: keep both.
            let guard = lock.acquire_timeout(limit)?;
            Box::new((guard, lock))
        }
        ("file" | "file-delete", Mode::Async(rt)) => {
            let lock = FileLock::builder(path)
                .backoff(backoff)
                .delete_on_release(kind == "file-delete")
                .build()?;
            Box::new(rt.run(async move { lock.acquire().timeout(limit).await })?)
        }
        ("soft", Mode::Blocking) => {
            let lock = SoftFileLock::builder(path).backoff(backoff).build()?;
            let lock = blocking::SoftFileLock::from(lock);
            let guard = lock.acquire_timeout(limit)?;
            Box::new((guard, lock))
        }
        ("soft", Mode::Async(rt)) => {
            let lock = SoftFileLock::builder(path).backoff(backoff).build()?;
            Box::new(rt.run(async move { lock.acquire().timeout(limit).await })?)
        }
        ("rw-write" | "rw-read", m) => {
            let lock = RwFileLock::builder(path).backoff(backoff).build()?;
            // The holder (blocking) always writes; a waiter of `rw-read` reads.
            let read = kind == "rw-read" && m != Mode::Blocking;
            match m {
                Mode::Blocking => {
                    let lock = blocking::RwFileLock::from(lock);
                    let guard = lock.write_timeout(limit)?;
                    Box::new((guard, lock))
                }
                Mode::Async(rt) if read => {
                    Box::new(rt.run(async move { lock.read().timeout(limit).await })?)
                }
                Mode::Async(rt) => {
                    Box::new(rt.run(async move { lock.write().timeout(limit).await })?)
                }
            }
        }
        ("soft-rw", Mode::Blocking) => {
            let lock = SoftRwLock::builder(path).backoff(backoff).build()?;
            let lock = blocking::SoftRwLock::from(lock);
            let guard = lock.write_timeout(limit)?;
            Box::new((guard, lock))
        }
        ("soft-rw", Mode::Async(rt)) => {
            let lock = SoftRwLock::builder(path).backoff(backoff).build()?;
            Box::new(rt.run(async move { lock.write().timeout(limit).await })?)
        }
        (other, _) => panic!("unknown kind {other:?}"),
    })
}

/// Waits until the process has an inotify watch (its `/proc/<pid>/fdinfo` lists one): from
/// then on, a release raises an event it will see.
fn wait_for_watch(process: &Proc) {
    let fdinfo = format!("/proc/{}/fdinfo", process.id());
    let start = Instant::now();
    loop {
        let watching = std::fs::read_dir(&fdinfo).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|info| info.contains("inotify wd:"))
            })
        });
        if watching {
            return;
        }
        // Polling for a state with a bound: a hang detector, not a way to order steps.
        assert!(
            start.elapsed() < child::PROMPT,
            "the waiter never watched the lock"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A holder in one process, a waiter with a one-minute backoff in another: the release
/// wakes the waiter.
fn woken(kind: &str, mode: Mode) {
    woken_by("hold", kind, mode);
}

/// [`woken`], with the holder playing `role`.
fn woken_by(role: &str, kind: &str, mode: Mode) {
    let dir = tmp();
    let path = dir.path().join("wake.lock");
    let mut holder = Proc::child(role, &[("kind", &kind), ("path", &path)]);
    holder.expect("HELD");
    let mut waiter = Proc::child(
        "wait",
        &[("kind", &kind), ("path", &path), ("mode", &mode.name())],
    );
    waiter.expect("BLOCKED");
    // Once the waiter watches the lock, the release raises an event it will see, whether it
    // is already in its pause or about to enter it.
    wait_for_watch(&waiter);
    holder.send("RELEASE");
    holder.expect("RELEASED");
    let line = waiter.next_line();
    let ms: u64 = line
        .strip_prefix("ACQUIRED ")
        .unwrap_or_else(|| panic!("waiter: {line}"))
        .parse()
        .unwrap();
    eprintln!("{kind} {mode:?}: acquired {ms} ms after it started waiting");
    assert!(
        ms < 10_000,
        "{kind} {mode:?}: the waiter slept through the release ({ms} ms)"
    );
    waiter.wait_success();
    if role == "hold-open" {
        holder.send("EXIT");
    }
    holder.wait_success();
}

const MODES: [Mode; 3] = [
    Mode::Async(Runtime::TokioCurrentThread),
    Mode::Async(Runtime::Smol),
    Mode::Blocking,
];

#[test]
fn hard_lock_release_wakes_a_waiter() {
    for mode in MODES {
        woken("file", mode);
    }
}

/// The holder's lock keeps its file open after the release (the default): the waiter's
/// announcement makes the releaser close it, and the close wakes the waiter.
#[test]
fn hard_lock_release_wakes_a_waiter_while_the_lock_keeps_its_file_open() {
    for mode in MODES {
        woken_by("hold-open", "file", mode);
    }
}

#[test]
fn hard_lock_deleted_on_release_wakes_a_waiter() {
    for mode in MODES {
        woken("file-delete", mode);
    }
}

#[test]
fn soft_marker_removal_wakes_a_waiter() {
    for mode in MODES {
        woken("soft", mode);
    }
}

#[test]
fn read_write_lock_release_wakes_readers_and_writers() {
    for mode in MODES {
        woken("rw-write", mode);
        woken("rw-read", mode);
    }
}

#[test]
fn soft_read_write_lock_release_wakes_a_waiter() {
    for mode in MODES {
        woken("soft-rw", mode);
    }
}

/// Waiters must not wake each other: their failed attempts keep the lock file open, so the
/// only events are holders' releases and departures. Counts each waiter's attempts (from the
/// `tracing` events) while three wait behind one holder and then take turns.
#[cfg(feature = "tracing")]
mod storm {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts the lines the subscriber writes that report an attempt.
    #[derive(Clone, Default)]
    struct Attempts(Arc<AtomicUsize>);

    impl Write for Attempts {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = String::from_utf8_lossy(buf);
            let n = text.matches("attempting lock").count();
            self.0.fetch_add(n, Ordering::SeqCst);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Role `count`: waits (BLOCKED first) with a one-minute backoff and prints how many
    /// attempts it made: `ACQUIRED <attempts>`.
    pub(super) fn count(kind: &str, path: &Path) {
        let attempts = Attempts::default();
        let writer = attempts.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        let err = attempt(kind, path).expect_err("the holder has it");
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
        say("BLOCKED");
        let slow = Backoff::fixed(Duration::from_secs(60));
        let held = take(kind, path, Mode::Async(Runtime::Smol), slow).expect("acquired");
        // Hold a little, so the others wait behind this one too.
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        say(&format!("ACQUIRED {}", attempts.0.load(Ordering::SeqCst)));
    }

    #[test]
    fn waiters_do_not_wake_each_other() {
        for kind in ["file", "rw-write", "soft"] {
            let dir = tmp();
            let path = dir.path().join("storm.lock");
            let mut holder = Proc::child("hold", &[("kind", &kind), ("path", &path)]);
            holder.expect("HELD");
            let mut waiters: Vec<Proc> = (0..3)
                .map(|_| Proc::child("count", &[("kind", &kind), ("path", &path)]))
                .collect();
            for w in &mut waiters {
                w.expect("BLOCKED");
                wait_for_watch(w);
            }
            holder.send("RELEASE");
            holder.expect("RELEASED");
            for w in &mut waiters {
                let line = w.next_line();
                let n: usize = line.strip_prefix("ACQUIRED ").unwrap().parse().unwrap();
                eprintln!("{kind}: a waiter made {n} attempts");
                // One at the start, one after its watch is set, and one per release or
                // departure it saw: a storm would be hundreds.
                assert!(n <= 12, "{kind}: {n} attempts: waiters woke each other");
                w.wait_success();
            }
        }
    }
}
