//! Soft locks between real processes: stale markers of killed holders, many breakers racing
//! for one dead marker, lease takeover and compromise, interop with Python filelock in both
//! directions, and hostile nodes at the marker path.
//!
//! Children are this test binary re-executed with a role (see [`child_entry`]); every line
//! a child prints on stdout is a handshake.
//!
//! On Windows (under Wine) all but the scenarios that need Unix run: stopping a process
//! (SIGSTOP), Python peers (python3 is a Linux program there), and symbolic links and FIFOs
//! at the marker path.

mod common;
#[cfg(unix)]
#[path = "common/python.rs"]
mod python;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_filelock::{blocking, ErrorKind, SoftFileLease, SoftFileLock};

use common::{tmp, Runtime, HANG};

#[path = "common/child.rs"]
mod child;
use child::Proc;

const ROLE: &str = "ASYNC_FILELOCK_SOFT_ROLE";

/// Lease settings short enough for tests.
const LEASE: Duration = Duration::from_millis(1000);
const BEAT: Duration = Duration::from_millis(200);

fn lease(path: &Path) -> SoftFileLease {
    SoftFileLease::builder(path)
        .duration(LEASE)
        .heartbeat_interval(BEAT)
        .build()
        .unwrap()
}

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = PathBuf::from(std::env::var("SOFT_PATH").unwrap());
    let say = |line: &str| {
        println!("{line}");
        std::io::stdout().flush().unwrap();
    };
    let wait_for_parent = || {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    };
    match role.as_str() {
        // Holds the soft lock until told to let go.
        "soft" => {
            let guard = blocking::SoftFileLock::new(&path)
                .acquire_timeout(HANG)
                .unwrap();
            say("HELD");
            wait_for_parent();
            guard.release().unwrap();
            say("RELEASED");
        }
        // Holds a lease (printing its fence) until told to let go.
        "lease" => {
            let guard = lease(&path).acquire_blocking_for_test();
            say(&format!("HELD {}", guard.fence()));
            wait_for_parent();
            drop(guard);
            say("RELEASED");
        }
        // Takes the lock ROUNDS times, logging enter/exit lines around each hold.
        "rounds" => {
            let log = PathBuf::from(std::env::var("SOFT_LOG").unwrap());
            let rounds: usize = std::env::var("SOFT_ROUNDS").unwrap().parse().unwrap();
            let lock = blocking::SoftFileLock::new(&path);
            say("READY");
            wait_for_parent();
            for _ in 0..rounds {
                let guard = lock.acquire_timeout(HANG).unwrap();
                append(&log, &format!("enter {}", std::process::id()));
                std::thread::sleep(Duration::from_millis(2));
                append(&log, &format!("exit {}", std::process::id()));
                guard.release().unwrap();
            }
            say("DONE");
        }
        other => panic!("unknown role {other}"),
    }
}

trait AcquireForTest {
    fn acquire_blocking_for_test(&self) -> async_filelock::SoftFileLeaseGuard;
}

impl AcquireForTest for SoftFileLease {
    fn acquire_blocking_for_test(&self) -> async_filelock::SoftFileLeaseGuard {
        futures_lite::future::block_on(self.acquire().timeout(HANG)).unwrap()
    }
}

fn append(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn spawn(role: &str, path: &Path, extra: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE, role)
    .env("SOFT_PATH", path);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc::spawn(cmd, format!("{role} child"))
}

/// Waits for the child's handshake line starting with `prefix`, skipping the test
/// harness's own output.
fn expect_prefix(p: &mut Proc, prefix: &str) -> String {
    loop {
        let line = p.next_line();
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// A pid no process has: a child (this binary, running no test) that exited and was
/// reaped, its handle closed.
fn dead_pid() -> u32 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "-q"])
        .env_remove(ROLE)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// This host's name as markers record it (read back from a marker we wrote).
fn recorded_host(dir: &Path) -> String {
    let lock = SoftFileLock::new(dir.join("probe-host.lock"));
    let guard = lock.try_acquire().unwrap();
    let host = lock.owner().unwrap().unwrap().host().to_string();
    drop(guard);
    host
}

// ---------------------------------------------------------------------------------------------
// Stale markers

#[test]
fn a_killed_holders_marker_is_taken_over_at_once_under_every_runtime() {
    for runtime in [Runtime::TokioCurrentThread, Runtime::Smol, Runtime::BlockOn] {
        let dir = tmp();
        let path = dir.path().join("killed.lock");
        let mut holder = spawn("soft", &path, &[]);
        expect_prefix(&mut holder, "HELD");
        let lock = SoftFileLock::new(&path);
        assert_eq!(
            lock.try_acquire().unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        holder.kill();
        holder.wait();
        let start = Instant::now();
        let guard = runtime
            .run(lock.acquire().timeout(HANG))
            .expect("the dead holder's marker is broken");
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{runtime:?}: a provably dead owner needs no grace period ({:?})",
            start.elapsed()
        );
        assert!(lock.is_held_by_us());
        drop(guard);
        assert!(!path.exists());
    }
}

#[test]
fn a_recycled_pid_is_broken_and_a_live_holder_never_is() {
    let dir = tmp();
    let host = recorded_host(dir.path());
    let path = dir.path().join("recycled.lock");
    let lock = SoftFileLock::new(&path);
    // A live holder: a running child, with its real start token.
    let mut holder = spawn("soft", &path, &[]);
    expect_prefix(&mut holder, "HELD");
    let live = std::fs::read_to_string(&path).unwrap();
    let err = lock
        .try_acquire()
        .expect_err("a live holder is never broken");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    holder.send("go");
    expect_prefix(&mut holder, "RELEASED");
    holder.wait_success();
    assert_eq!(
        live.lines().nth(1),
        Some(host.as_str()),
        "the child recorded this host"
    );
    // A live pid (ours) with another start token: the pid was recycled, the owner is gone.
    std::fs::write(&path, format!("{}\n{host}\n1\n", std::process::id())).unwrap();
    let guard = lock
        .try_acquire()
        .expect("a recycled pid's marker is broken at once");
    drop(guard);
}

#[test]
fn foreign_empty_and_malformed_markers() {
    let dir = tmp();
    // Another host's marker is never broken; the timeout names it.
    let path = dir.path().join("foreign.lock");
    std::fs::write(&path, "7\nbuild-host\n").unwrap();
    let lock = SoftFileLock::new(&path);
    let err = Runtime::Smol
        .run(lock.acquire().timeout(Duration::from_millis(300)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.holder(), Some("pid 7 on build-host"));
    assert!(err.to_string().contains("pid 7 on build-host"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\nbuild-host\n");
    // An empty marker is held for as long as it exists.
    let path = dir.path().join("empty.lock");
    std::fs::write(&path, "").unwrap();
    let err = Runtime::Smol
        .run(
            SoftFileLock::new(&path)
                .acquire()
                .timeout(Duration::from_millis(2500)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.holder().unwrap().contains("recorded no pid"), "{err}");
    // An unparsable one self-heals after 2 s unchanged.
    let path = dir.path().join("garbage.lock");
    std::fs::write(&path, "not a record").unwrap();
    let start = Instant::now();
    let guard = Runtime::Smol
        .run(SoftFileLock::new(&path).acquire().timeout(HANG))
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
    drop(guard);
}

#[test]
fn concurrent_breakers_of_one_dead_marker_hold_one_at_a_time() {
    let dir = tmp();
    let host = recorded_host(dir.path());
    let path = dir.path().join("contested.lock");
    let log = dir.path().join("holds.log");
    std::fs::write(&path, format!("{}\n{host}\n", dead_pid())).unwrap();
    const ROUNDS: usize = 5;
    let mut children: Vec<Proc> = (0..6)
        .map(|_| {
            spawn(
                "rounds",
                &path,
                &[
                    ("SOFT_LOG", log.display().to_string()),
                    ("SOFT_ROUNDS", ROUNDS.to_string()),
                ],
            )
        })
        .collect();
    for c in &mut children {
        expect_prefix(c, "READY");
    }
    // Release them together against the dead marker.
    for c in &mut children {
        c.send("go");
    }
    for c in &mut children {
        expect_prefix(c, "DONE");
        c.wait_success();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6 * ROUNDS * 2, "every hold logged:\n{text}");
    for pair in lines.chunks(2) {
        let (enter, exit) = (pair[0], pair[1]);
        assert!(
            enter.starts_with("enter ") && exit == enter.replace("enter", "exit"),
            "two holders overlapped:\n{text}"
        );
    }
    assert!(!path.exists(), "the last holder removed its marker");
}

// ---------------------------------------------------------------------------------------------
// Leases

#[cfg(unix)]
#[test]
fn a_stalled_lease_is_taken_over_after_its_duration_with_a_larger_fence() {
    let dir = tmp();
    let path = dir.path().join("stalled.lock");
    let mut holder = spawn("lease", &path, &[]);
    let theirs: u64 = expect_prefix(&mut holder, "HELD")[5..].parse().unwrap();
    // Stop the holder: its heartbeat stops with it, but its pid stays alive.
    let pid = holder.id() as i32;
    assert_eq!(unsafe_free_signal(pid, "STOP"), 0);
    let ours = lease(&path);
    assert_eq!(
        ours.try_acquire().unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    let start = Instant::now();
    let guard = Runtime::TokioMultiThread
        .run(ours.acquire().timeout(HANG))
        .unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= LEASE - Duration::from_millis(100) && waited < LEASE * 4,
        "taken over after {waited:?}, the lease is {LEASE:?}"
    );
    assert!(guard.fence() > theirs, "{} > {theirs}", guard.fence());
    drop(guard);
    unsafe_free_signal(pid, "KILL");
    unsafe_free_signal(pid, "CONT");
    holder.wait();
}

/// Sends a signal with kill(1), so the test needs no `unsafe`.
#[cfg(unix)]
fn unsafe_free_signal(pid: i32, signal: &str) -> i32 {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

/// Unix only: Windows refuses to remove a marker while its holder has it open, so an
/// operator cannot break a live lease there.
#[cfg(unix)]
#[test]
fn a_holder_learns_its_lease_was_taken() {
    let dir = tmp();
    let path = dir.path().join("taken.lock");
    let (tx, rx) = std::sync::mpsc::channel();
    let first = SoftFileLease::builder(&path)
        .duration(LEASE)
        .heartbeat_interval(BEAT)
        .on_compromise(move |c| {
            let _ = tx.send((c.reason(), c.fence()));
        })
        .build()
        .unwrap();
    let guard = first.try_acquire().unwrap();
    let fence = guard.fence();
    // An operator breaks it and another holder (in another process) takes the path.
    assert!(first.force_break().unwrap());
    let mut thief = spawn("lease", &path, &[]);
    let stolen: u64 = expect_prefix(&mut thief, "HELD")[5..].parse().unwrap();
    assert!(stolen > fence);
    let (reason, lost) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the callback fires within a few heartbeats");
    assert_eq!(lost, fence);
    assert_eq!(reason, async_filelock::CompromiseReason::OwnerChanged);
    assert_eq!(guard.compromise().unwrap().reason(), reason);
    drop(guard);
    // The loss outlives the release, and our release did not remove the thief's marker.
    assert!(first.compromise().is_some());
    assert!(path.exists());
    thief.send("go");
    expect_prefix(&mut thief, "RELEASED");
    thief.wait_success();
}

#[test]
fn leases_of_different_durations_on_one_path_are_an_error() {
    let dir = tmp();
    let path = dir.path().join("durations.lock");
    let mut holder = spawn("lease", &path, &[]);
    expect_prefix(&mut holder, "HELD");
    let other = SoftFileLease::builder(&path)
        .duration(Duration::from_secs(3))
        .build()
        .unwrap();
    let err = other.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseMismatch, "{err}");
    assert!(
        err.to_string().contains("1.0s") && err.to_string().contains("3.0s"),
        "{err}"
    );
    holder.send("go");
    expect_prefix(&mut holder, "RELEASED");
    holder.wait_success();
}

// ---------------------------------------------------------------------------------------------
// Python filelock on the same paths (Unix only: python3 with filelock is a Linux program where
// the Windows build is tested)

/// A Python process holding `class(path, **kw)` until it reads a line.
#[cfg(unix)]
const PY_HOLD: &str = r#"
import sys, filelock
cls = getattr(filelock, sys.argv[2])
kw = {"lease_duration": float(sys.argv[3])} if sys.argv[2] == "SoftFileLease" else {}
lock = cls(sys.argv[1], **kw)
lock.acquire(timeout=30)
print("HELD", flush=True)
sys.stdin.readline()
lock.release()
print("RELEASED", flush=True)
"#;

/// One timed attempt by Python: prints ACQUIRED or TIMEOUT.
#[cfg(unix)]
const PY_TRY: &str = r#"
import sys, filelock
cls = getattr(filelock, sys.argv[2])
kw = {"lease_duration": float(sys.argv[3])} if sys.argv[2] == "SoftFileLease" else {}
lock = cls(sys.argv[1], **kw)
try:
    lock.acquire(timeout=float(sys.argv[4]))
except filelock.Timeout:
    print("TIMEOUT", flush=True)
else:
    lock.release()
    print("ACQUIRED", flush=True)
"#;

#[cfg(unix)]
fn py(script: &str, path: &Path, class: &str, extra: &[&str]) -> Proc {
    python::ensure_filelock();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script])
        .arg(path)
        .arg(class)
        .arg(LEASE.as_secs_f64().to_string())
        .args(extra);
    Proc::spawn(cmd, format!("python {class}"))
}

#[cfg(unix)]
fn py_try(path: &Path, class: &str, timeout: &str) -> String {
    let mut p = py(PY_TRY, path, class, &[timeout]);
    let line = p.next_line();
    p.wait_success();
    line
}

/// Our side of one class: acquire with a timeout, in this process (through the blocking
/// twins, which run the same waiting loop).
#[cfg(unix)]
fn ours_acquire(
    path: &Path,
    class: &str,
    timeout: Duration,
) -> Result<Box<dyn std::any::Any>, ErrorKind> {
    let held: Result<Box<dyn std::any::Any>, _> = match class {
        "SoftFileLock" => blocking::SoftFileLock::new(path)
            .acquire_timeout(timeout)
            .map(|g| Box::new(g) as _),
        _ => blocking::SoftFileLease::from(lease(path))
            .acquire_timeout(timeout)
            .map(|g| Box::new(g) as _),
    };
    held.map_err(|e| e.kind())
}

#[cfg(unix)]
fn python_interop(class: &str, our_role: &str) {
    let dir = tmp();
    // Python holds: we wait, and get it once Python lets go.
    let path = dir.path().join("py-holds.lock");
    let mut holder = py(PY_HOLD, &path, class, &[]);
    holder.expect("HELD");
    assert_eq!(
        ours_acquire(&path, class, Duration::from_millis(300)).err(),
        Some(ErrorKind::Timeout),
        "a live Python holder is never broken"
    );
    holder.send("go");
    holder.expect("RELEASED");
    holder.wait_success();
    drop(ours_acquire(&path, class, HANG).expect("free once Python released"));

    // We hold (in a child): Python waits; it gets the lock once we let go.
    let mut ours = spawn(our_role, &path, &[]);
    expect_prefix(&mut ours, "HELD");
    assert_eq!(
        py_try(&path, class, "0.3"),
        "TIMEOUT",
        "Python waits for our marker"
    );
    ours.send("go");
    expect_prefix(&mut ours, "RELEASED");
    ours.wait_success();
    assert_eq!(py_try(&path, class, "5"), "ACQUIRED");

    // Each breaks the other's dead marker.
    let mut dead_py = py(PY_HOLD, &path, class, &[]);
    dead_py.expect("HELD");
    dead_py.kill();
    dead_py.wait();
    let start = Instant::now();
    drop(ours_acquire(&path, class, HANG).expect("we break a dead Python holder's marker"));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let mut dead_ours = spawn(our_role, &path, &[]);
    expect_prefix(&mut dead_ours, "HELD");
    dead_ours.kill();
    dead_ours.wait();
    assert_eq!(
        py_try(&path, class, "1.5"),
        "ACQUIRED",
        "Python breaks our dead marker"
    );
}

#[cfg(unix)]
#[test]
fn python_soft_file_lock_interop() {
    python_interop("SoftFileLock", "soft");
}

#[cfg(unix)]
#[test]
fn python_soft_file_lease_interop() {
    python_interop("SoftFileLease", "lease");
}

// ---------------------------------------------------------------------------------------------
// Hostile nodes at the marker path

#[cfg(unix)]
#[test]
fn hostile_nodes_at_the_marker_path() {
    let dir = tmp();
    // A symbolic link to a victim: never followed; the link is replaced after 2 s.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let path = dir.path().join("link.lock");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let guard = Runtime::Smol
        .run(SoftFileLock::new(&path).acquire().timeout(HANG))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    drop(guard);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    // A FIFO: no hang, replaced after 2 s.
    let path = dir.path().join("fifo.lock");
    assert!(Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    drop(
        Runtime::Smol
            .run(SoftFileLock::new(&path).acquire().timeout(HANG))
            .unwrap(),
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    // A directory: a clear error at once, and the directory is left alone.
    let path = dir.path().join("dir.lock");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("inside"), "x").unwrap();
    let err = SoftFileLock::new(&path).try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAFile, "{err}");
    assert!(path.join("inside").exists());

    // Oversized content: unreadable, so malformed, replaced after 2 s.
    let path = dir.path().join("huge.lock");
    std::fs::write(&path, "9".repeat(4096)).unwrap();
    drop(
        Runtime::Smol
            .run(SoftFileLock::new(&path).acquire().timeout(HANG))
            .unwrap(),
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        ["dir.lock", "victim.txt"],
        "no break files are left behind"
    );
}
