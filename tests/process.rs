//! Cross-process tests: the test binary re-executes itself as child processes that hold,
//! probe or count under the lock, and every scenario runs with the parent (and its children)
//! using each way of taking the lock: tokio current-thread (no time driver), tokio
//! multi-thread, smol, `futures_lite::future::block_on`, and the `blocking` wrappers.
//!
//! Steps are ordered only by handshakes over the children's stdin and stdout; timeouts are
//! hang detectors.

#[path = "common/child.rs"]
#[macro_use]
mod child;
mod common;

use std::fs;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use async_filelock::ErrorKind;

use child::{assert_fails, check_alternation, Mode, Proc, PROMPT};
use common::{lock_path, tmp, Runtime};

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    child::entry();
}

/// How long a timed acquisition against a holder in another process waits.
const SHORT: Duration = Duration::from_millis(100);

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// A child that holds the lock on `path` (shared or not) until told to release.
fn holder(path: &Path, shared: bool, mode: Mode) -> Proc {
    let mut c = Proc::child(
        "hold",
        &[
            ("path", &path),
            ("shared", &flag(shared)),
            ("mode", &mode.name()),
        ],
    );
    c.expect("WAITING");
    c.expect("HELD");
    c
}

/// One attempt by a child process: ACQUIRED or WOULDBLOCK.
fn probe(path: &Path, shared: bool, mode: Mode) -> String {
    let mut c = Proc::child(
        "probe",
        &[
            ("path", &path),
            ("shared", &flag(shared)),
            ("mode", &mode.name()),
        ],
    );
    let line = c.next_line();
    c.wait_success();
    line
}

/// A child holds the lock exclusively: the parent's attempts fail, a timed acquisition times
/// out naming the path, and once the child lets go the waiting parent gets it promptly.
fn exclusive_child_excludes_parent(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "excl.lock");
    let mut child = holder(&path, false, mode);

    assert_fails(mode.try_acquire(&path, false), ErrorKind::WouldBlock, &path);
    assert_fails(mode.try_acquire(&path, true), ErrorKind::WouldBlock, &path);

    let start = Instant::now();
    let err = assert_fails(
        mode.acquire_timeout(&path, false, SHORT),
        ErrorKind::Timeout,
        &path,
    );
    assert!(start.elapsed() >= SHORT, "gave up early: {err}");
    assert!(err.waited().is_some_and(|w| w >= SHORT), "{err:?}");
    assert_fails(
        mode.acquire_timeout(&path, true, SHORT),
        ErrorKind::Timeout,
        &path,
    );

    let took = mode.acquire_after(&path, false, || child.send("release"));
    assert!(
        took < PROMPT,
        "{mode:?}: acquired {took:?} after the release"
    );
    child.expect("RELEASED");
    child.wait_success();
    // And nothing is left behind in the parent.
    mode.try_acquire(&path, false)
        .expect("free again")
        .release();
}

/// A child holds the lock shared: the parent shares it, but cannot take it exclusively
/// until the child lets go.
fn shared_child_admits_shared_only(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "shared.lock");
    let mut child = holder(&path, true, mode);

    let held = mode.try_acquire(&path, true).expect("share with the child");
    assert!(held.is_shared());
    held.release();
    let held = mode
        .acquire_timeout(&path, true, common::HANG)
        .expect("share with the child");
    // A third process can share it with both of us, but not take it exclusively.
    assert_eq!(probe(&path, true, mode), "ACQUIRED");
    assert_eq!(probe(&path, false, mode), "WOULDBLOCK");
    held.release();

    assert_fails(mode.try_acquire(&path, false), ErrorKind::WouldBlock, &path);
    assert_fails(
        mode.acquire_timeout(&path, false, SHORT),
        ErrorKind::Timeout,
        &path,
    );

    let took = mode.acquire_after(&path, false, || child.send("release"));
    assert!(
        took < PROMPT,
        "{mode:?}: acquired {took:?} after the release"
    );
    child.expect("RELEASED");
    child.wait_success();
}

/// The other direction: the parent's holds exclude children, and a child waiting for the
/// parent gets the lock once the parent releases it.
fn parent_excludes_children(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "parent.lock");

    let held = mode.try_acquire(&path, false).expect("free");
    assert_eq!(probe(&path, false, mode), "WOULDBLOCK");
    assert_eq!(probe(&path, true, mode), "WOULDBLOCK");
    held.release();

    let held = mode.try_acquire(&path, true).expect("free");
    assert_eq!(probe(&path, true, mode), "ACQUIRED");
    assert_eq!(probe(&path, false, mode), "WOULDBLOCK");
    held.release();
    assert_eq!(probe(&path, false, mode), "ACQUIRED");

    // A child that waits for the parent's exclusive hold gets the lock after its release.
    let held = mode.try_acquire(&path, false).expect("free");
    let mut child = Proc::child(
        "hold",
        &[("path", &path), ("shared", &"0"), ("mode", &mode.name())],
    );
    child.expect("WAITING");
    held.release();
    child.expect("HELD");
    assert_fails(mode.try_acquire(&path, true), ErrorKind::WouldBlock, &path);
    child.send("release");
    child.expect("RELEASED");
    child.wait_success();
}

/// A holder killed with SIGKILL never releases anything itself: the kernel's release of its
/// lock must let the waiting parent in.
fn killed_holder_lets_waiter_in(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "killed.lock");
    let mut child = holder(&path, false, mode);
    let took = mode.acquire_after(&path, false, || child.kill());
    assert!(took < PROMPT, "{mode:?}: acquired {took:?} after the kill");
    assert_killed(child.wait());
    mode.try_acquire(&path, false).expect("free").release();
}

#[cfg(unix)]
fn assert_killed(status: ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the holder died of SIGKILL: {status}"
    );
}

#[cfg(not(unix))]
fn assert_killed(status: ExitStatus) {
    assert!(!status.success(), "the holder was killed: {status}");
}

const COUNTERS: usize = 4;
const INCREMENTS: usize = 200;

/// `COUNTERS` processes each increment a counter file `INCREMENTS` times under the lock; the
/// count must come out exact, and the log of critical sections must never overlap.
fn counter(mode: Mode, delete_on_release: bool) {
    let dir = tmp();
    let lock = lock_path(&dir, "counter.lock");
    let counter = lock_path(&dir, "counter.txt");
    let log = lock_path(&dir, "counter.log");
    fs::write(&counter, "0\n").unwrap();
    let mut children: Vec<Proc> = (0..COUNTERS)
        .map(|_| {
            Proc::child(
                "count",
                &[
                    ("lock", &lock),
                    ("counter", &counter),
                    ("log", &log),
                    ("times", &INCREMENTS.to_string()),
                    ("mode", &mode.name()),
                    ("delete", &flag(delete_on_release)),
                ],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("READY");
    }
    let start = Instant::now();
    for c in &mut children {
        c.send("GO");
    }
    for c in &mut children {
        c.expect("DONE");
        c.wait_success();
    }
    let took = start.elapsed();

    let total: usize = fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, COUNTERS * INCREMENTS, "lost updates");
    let pids: Vec<u32> = children.iter().map(Proc::id).collect();
    let switches = check_alternation(&fs::read_to_string(&log).unwrap(), &pids, INCREMENTS);
    eprintln!(
        "{mode:?} delete_on_release={delete_on_release}: {total} increments in {took:?}, \
         the holder changed {switches} times"
    );
    if delete_on_release {
        assert!(
            !lock.exists(),
            "the last holder deleted the lock file on release"
        );
    } else {
        assert!(lock.exists(), "the lock file is kept");
    }
}

fn counter_keep(mode: Mode) {
    counter(mode, false);
}

fn counter_delete_on_release(mode: Mode) {
    counter(mode, true);
}

per_mode!(
    exclusive_child_excludes_parent,
    shared_child_admits_shared_only,
    parent_excludes_children,
    killed_holder_lets_waiter_in,
    counter_keep,
    counter_delete_on_release,
);
