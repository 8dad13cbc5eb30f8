//! Interop with foreign holders of the same path: util-linux `flock(1)` and Python's
//! `filelock` package. Each scenario runs with the parent using each way of taking the lock
//! (tokio current-thread without a time driver, tokio multi-thread, smol,
//! `futures_lite::future::block_on`, and the `blocking` wrappers).
//!
//! Unix only: these tools lock with `flock(2)`, which is what the crate uses on Unix.

#![cfg(unix)]

#[path = "common/child.rs"]
#[macro_use]
mod child;
mod common;
#[path = "common/python.rs"]
mod python;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_filelock::ErrorKind;

use child::{assert_fails, Mode, Proc, PROMPT};
use common::{lock_path, tmp, Runtime, HANG};

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    child::entry();
}

/// How long a timed acquisition against a foreign holder waits.
const SHORT: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// util-linux flock(1)

const FLOCK: &str = "/usr/bin/flock";

/// Runs `flock <args> <path> true` with `-n` (never waits) and returns its exit code.
fn flock_nb(mode_flag: &str, path: &Path) -> i32 {
    assert!(
        Path::new(FLOCK).exists(),
        "{FLOCK} is missing: install util-linux (scripts/setup does)"
    );
    let out = Command::new(FLOCK)
        .args([mode_flag, "-n"])
        .arg(path)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .expect("run flock");
    out.status
        .code()
        .unwrap_or_else(|| panic!("flock died: {:?}", out.status))
}

/// `flock <mode_flag> <path> -c 'echo HELD; read line'`: holds until it gets a line.
fn flock_holder(mode_flag: &str, path: &Path) -> Proc {
    let mut cmd = Command::new(FLOCK);
    cmd.arg(mode_flag)
        .arg(path)
        .args(["-c", "echo HELD; read line; echo RELEASING"]);
    let mut p = Proc::spawn(cmd, format!("flock {mode_flag}"));
    p.expect("HELD");
    p
}

/// flock(1) holds exclusively: we can neither take nor share the lock, a timed acquisition
/// times out, and a waiting acquisition gets the lock once flock exits.
fn flock_exclusive_excludes_us(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "flock-x.lock");
    let mut flock = flock_holder("-x", &path);
    excluded_until(mode, &path, "flock exited", || {
        flock.send("go");
        flock.expect("RELEASING");
    });
    flock.wait_success();
}

/// A foreign exclusive holder keeps us out (both tries are `WouldBlock`, a short timed
/// acquire is `Timeout`), and we get the lock promptly once `release` made it let go.
fn excluded_until(mode: Mode, path: &Path, after: &str, release: impl FnOnce()) {
    assert_fails(mode.try_acquire(path, false), ErrorKind::WouldBlock, path);
    assert_fails(mode.try_acquire(path, true), ErrorKind::WouldBlock, path);
    assert_fails(
        mode.acquire_timeout(path, false, SHORT),
        ErrorKind::Timeout,
        path,
    );
    let took = mode.acquire_after(path, false, release);
    assert!(took < PROMPT, "{mode:?}: acquired {took:?} after {after}");
}

/// flock(1) holds shared: we share it, but cannot take it exclusively until flock exits.
fn flock_shared_admits_our_shared(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "flock-s.lock");
    let mut flock = flock_holder("-s", &path);
    mode.try_acquire(&path, true)
        .expect("share with flock")
        .release();
    assert_fails(mode.try_acquire(&path, false), ErrorKind::WouldBlock, &path);
    let took = mode.acquire_after(&path, false, || flock.send("go"));
    assert!(
        took < PROMPT,
        "{mode:?}: acquired {took:?} after flock exited"
    );
    flock.wait_success();
}

/// We hold: flock(1) is refused (exit code 1) exactly when the modes conflict, and a flock
/// that waits gets the lock once we release it.
fn we_exclude_flock(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "ours.lock");

    let held = mode.try_acquire(&path, false).expect("free");
    assert_eq!(
        flock_nb("-x", &path),
        1,
        "flock -x -n while we hold exclusively"
    );
    assert_eq!(
        flock_nb("-s", &path),
        1,
        "flock -s -n while we hold exclusively"
    );
    held.release();

    let held = mode.try_acquire(&path, true).expect("free");
    assert_eq!(flock_nb("-s", &path), 0, "flock -s -n while we hold shared");
    assert_eq!(flock_nb("-x", &path), 1, "flock -x -n while we hold shared");
    held.release();
    assert_eq!(flock_nb("-x", &path), 0, "flock -x -n after we released");

    // A flock that waits for our hold gets it after our release.
    let held = mode
        .acquire_timeout(&path, false, HANG)
        .expect("free after flock");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo WAITING; exec \"$1\" -x -w 30 \"$2\" -c 'echo HELD'",
        "sh",
        FLOCK,
    ])
    .arg(&path);
    let mut waiter = Proc::spawn(cmd, "waiting flock");
    waiter.expect("WAITING");
    held.release();
    waiter.expect("HELD");
    waiter.wait_success();
}

// ---------------------------------------------------------------------------------------------
// Python filelock

/// A Python process that waits for the lock (printing WAITING first), prints HELD, holds it
/// until it reads a line, releases it and prints RELEASED.
const PY_HOLDER: &str = r#"
import sys, filelock
lock = filelock.FileLock(sys.argv[1])
print("WAITING", flush=True)
lock.acquire(timeout=30)
print("HELD", flush=True)
sys.stdin.readline()
lock.release()
print("RELEASED", flush=True)
"#;

/// One attempt with `acquire(timeout=0)`: prints ACQUIRED or TIMEOUT.
const PY_PROBE: &str = r#"
import sys, filelock
lock = filelock.FileLock(sys.argv[1])
try:
    lock.acquire(timeout=0)
except filelock.Timeout:
    print("TIMEOUT", flush=True)
else:
    lock.release()
    print("ACQUIRED", flush=True)
"#;

fn python(script: &str, path: &Path, name: &str) -> Proc {
    python::ensure_filelock();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(path);
    Proc::spawn(cmd, name)
}

fn python_probe(path: &Path) -> String {
    let mut p = python(PY_PROBE, path, "python probe");
    let line = p.next_line();
    p.wait_success();
    line
}

/// Python holds: our attempts fail, a timed acquisition times out, and a waiting acquisition
/// gets the lock once Python releases it.
fn python_holder_excludes_us(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "py-holds.lock");
    let mut py = python(PY_HOLDER, &path, "python holder");
    py.expect("WAITING");
    py.expect("HELD");
    excluded_until(mode, &path, "Python released", || {
        py.send("release");
        py.expect("RELEASED");
    });
    py.wait_success();
}

/// We hold (exclusively or shared): Python's `acquire(timeout=0)` raises `Timeout`, and a
/// waiting Python process gets the lock once we release it.
fn we_exclude_python(mode: Mode) {
    let dir = tmp();
    let path = lock_path(&dir, "ours.lock");

    for shared in [false, true] {
        let held = mode.try_acquire(&path, shared).expect("free");
        assert_eq!(python_probe(&path), "TIMEOUT", "shared={shared}");
        held.release();
    }
    assert_eq!(python_probe(&path), "ACQUIRED");

    let held = mode.try_acquire(&path, false).expect("free");
    let mut py = python(PY_HOLDER, &path, "python waiter");
    py.expect("WAITING");
    let start = Instant::now();
    held.release();
    py.expect("HELD");
    assert!(start.elapsed() < PROMPT);
    assert_fails(mode.try_acquire(&path, true), ErrorKind::WouldBlock, &path);
    py.send("release");
    py.expect("RELEASED");
    py.wait_success();
    mode.try_acquire(&path, false).expect("free").release();
}

per_mode!(
    flock_exclusive_excludes_us,
    flock_shared_admits_our_shared,
    we_exclude_flock,
    python_holder_excludes_us,
    we_exclude_python,
);
