//! Child processes for the cross-process tests, and the ways the parent takes a lock.
//!
//! - [`Proc`] wraps a spawned process whose stdin and stdout are pipes: the parent reads its
//!   lines (with [`HANG`] as a hang detector, never as a way to order steps) and writes lines
//!   to it. [`Proc::child`] re-executes the test binary itself as a child in a given role.
//! - [`entry`] is the body of each test binary's `child_entry` test: it returns at once unless
//!   [`ROLE_VAR`] is set, and otherwise plays that role (hold a lock until told to release,
//!   probe a lock once, or increment a counter file under the lock).
//! - [`Mode`] is how a process takes the lock: the async API under one of the [`Runtime`]s,
//!   or the sync [`blocking::FileLock`] wrappers.
//!
//! Handshake lines from a child are printed after [`MARKER`], since libtest prints its own
//! chatter (`running 1 test`, `test child_entry ... `) on the same stdout.

#![allow(dead_code, unreachable_pub, unused_macros)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use async_filelock::{blocking, Backoff, Error, ErrorKind, FileLock, FileLockGuard};

use crate::common::{Runtime, HANG};

/// The name of the `#[test]` in every test binary that runs [`entry`].
pub const CHILD_TEST: &str = "child_entry";
/// The environment variable that names a child's role; its parameters follow in variables
/// named [`ARG_PREFIX`]`NAME`.
pub const ROLE_VAR: &str = "ASYNC_FILELOCK_TEST_CHILD";
pub const ARG_PREFIX: &str = "ASYNC_FILELOCK_TEST_ARG_";
/// What a child prints before each handshake line.
pub const MARKER: &str = "@child:";

/// An upper bound on "promptly": a waiter notices a release within one backoff pause (at most
/// 50 ms by default); this only leaves room for a loaded machine.
pub const PROMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The parent's side: spawning and talking to processes.

/// A running process with piped stdin and stdout. Killed (and reaped) when dropped.
pub struct Proc {
    name: String,
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Re-executes this test binary as a child playing `role`, with `args` as its parameters.
    pub fn child(role: &str, args: &[(&str, &dyn AsRef<std::ffi::OsStr>)]) -> Proc {
        Proc::child_with(role, args, |_| {})
    }

    /// [`Proc::child`], with `customize` applied to the command before it is spawned (to
    /// run the child as another account, say).
    pub fn child_with(
        role: &str,
        args: &[(&str, &dyn AsRef<std::ffi::OsStr>)],
        customize: impl FnOnce(&mut Command),
    ) -> Proc {
        let exe = std::env::current_exe().expect("the test binary's path");
        Proc::child_of(&exe, role, args, customize)
    }

    /// [`Proc::child_with`], running `exe` (a copy of this test binary) instead of this one.
    pub fn child_of(
        exe: &Path,
        role: &str,
        args: &[(&str, &dyn AsRef<std::ffi::OsStr>)],
        customize: impl FnOnce(&mut Command),
    ) -> Proc {
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role);
        for (name, value) in args {
            cmd.env(format!("{ARG_PREFIX}{}", name.to_uppercase()), value);
        }
        customize(&mut cmd);
        Proc::spawn_filtered(cmd, format!("child {role}"), true)
    }

    /// Spawns any command; every line of its stdout is a handshake line.
    pub fn spawn(cmd: Command, name: impl Into<String>) -> Proc {
        Proc::spawn_filtered(cmd, name.into(), false)
    }

    fn spawn_filtered(mut cmd: Command, name: String, marked: bool) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = if marked {
                    match line.find(MARKER) {
                        Some(i) => line[i + MARKER.len()..].trim().to_string(),
                        None => continue,
                    }
                } else {
                    line.trim().to_string()
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            status: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next handshake line; panics if the process ends first or prints nothing for
    /// [`HANG`].
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(HANG) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{} printed nothing for {HANG:?}: hung", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait();
                panic!(
                    "{} closed its stdout ({status}) before the next line",
                    self.name
                )
            }
        }
    }

    /// Reads the next handshake line and checks it is `expected`.
    pub fn expect(&mut self, expected: &str) {
        let line = self.next_line();
        assert_eq!(line, expected, "{}: unexpected line", self.name);
    }

    /// Writes one line to the process's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to {}: {e}", self.name));
    }

    /// Kills the process (SIGKILL on Unix) without waiting for it.
    pub fn kill(&mut self) {
        self.child
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill {}: {e}", self.name));
    }

    /// Waits for the process to exit ([`HANG`] at most, then kills it and panics).
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        self.stdin = None;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return status;
            }
            if start.elapsed() > HANG {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {HANG:?}: hung", self.name);
            }
            // Polling for exit with a bound: a hang detector, not a way to order steps.
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the process and checks that it exited successfully.
    pub fn wait_success(&mut self) {
        let status = self.wait();
        assert!(status.success(), "{} failed: {status}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// How a process takes the lock.

/// The async API under one runtime, or the sync wrappers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Async(Runtime),
    Blocking,
}

pub const MODES: [Mode; 5] = [
    Mode::Async(Runtime::TokioCurrentThread),
    Mode::Async(Runtime::TokioMultiThread),
    Mode::Async(Runtime::Smol),
    Mode::Async(Runtime::BlockOn),
    Mode::Blocking,
];

/// A held lock, from either API.
#[derive(Debug)]
pub enum Held {
    Async(FileLockGuard),
    Blocking(blocking::FileLockGuard),
}

impl Held {
    pub fn is_shared(&self) -> bool {
        match self {
            Held::Async(g) => g.is_shared(),
            Held::Blocking(g) => g.is_shared(),
        }
    }

    pub fn release(self) {
        match self {
            Held::Async(g) => g.release(),
            Held::Blocking(g) => g.release(),
        }
        .expect("release the lock");
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Async(Runtime::TokioCurrentThread) => "tokio-ct",
            Mode::Async(Runtime::TokioMultiThread) => "tokio-mt",
            Mode::Async(Runtime::Smol) => "smol",
            Mode::Async(Runtime::BlockOn) => "block-on",
            Mode::Blocking => "blocking",
        }
    }

    pub fn from_name(name: &str) -> Mode {
        *MODES
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("unknown mode {name:?}"))
    }

    /// One attempt, without waiting.
    pub fn try_acquire(self, path: &Path, shared: bool) -> Result<Held, Error> {
        match self {
            Mode::Async(_) => {
                let lock = FileLock::new(path);
                if shared {
                    lock.try_acquire_shared()
                } else {
                    lock.try_acquire()
                }
                .map(Held::Async)
            }
            Mode::Blocking => {
                let lock = blocking::FileLock::new(path);
                if shared {
                    lock.try_acquire_shared()
                } else {
                    lock.try_acquire()
                }
                .map(Held::Blocking)
            }
        }
    }

    /// Waits up to `limit` for the lock.
    pub fn acquire_timeout(
        self,
        path: &Path,
        shared: bool,
        limit: Duration,
    ) -> Result<Held, Error> {
        match self {
            Mode::Async(rt) => {
                let lock = FileLock::new(path);
                let acquire = if shared {
                    lock.acquire_shared()
                } else {
                    lock.acquire()
                };
                rt.run(acquire.timeout(limit)).map(Held::Async)
            }
            Mode::Blocking => {
                let lock = blocking::FileLock::new(path);
                if shared {
                    lock.acquire_shared_timeout(limit)
                } else {
                    lock.acquire_timeout(limit)
                }
                .map(Held::Blocking)
            }
        }
    }

    /// Starts waiting for the lock, which must be held elsewhere; once this process waits,
    /// runs `trigger` (which should make the other holder let go), and returns how long the
    /// acquisition took after `trigger` returned. The lock is released before this returns.
    ///
    /// The waiting side runs on its own thread. Async: the first poll of the `Acquire` future
    /// must be pending, then `trigger` runs while the future backs off. Blocking: a
    /// `try_acquire` must be `WouldBlock`, then `acquire_timeout` waits while `trigger` runs.
    pub fn acquire_after(self, path: &Path, shared: bool, trigger: impl FnOnce()) -> Duration {
        let (waiting_tx, waiting_rx) = mpsc::channel::<()>();
        thread::scope(|s| {
            let waiter = s.spawn(move || -> Result<Instant, Error> {
                match self {
                    Mode::Async(rt) => {
                        let path = path.to_path_buf();
                        rt.run(async move {
                            let lock = FileLock::new(&path);
                            let acquire = if shared {
                                lock.acquire_shared()
                            } else {
                                lock.acquire()
                            };
                            let mut acquire = acquire.timeout(HANG);
                            let first = futures_lite::future::poll_once(&mut acquire).await;
                            assert!(
                                first.is_none(),
                                "the first poll must wait while the lock is held elsewhere, \
                                 got {first:?}"
                            );
                            waiting_tx.send(()).expect("the parent listens");
                            let guard = acquire.await?;
                            let at = Instant::now();
                            assert_eq!(guard.is_shared(), shared);
                            guard.release()?;
                            Ok(at)
                        })
                    }
                    Mode::Blocking => {
                        let lock = blocking::FileLock::new(path);
                        let attempt = if shared {
                            lock.try_acquire_shared()
                        } else {
                            lock.try_acquire()
                        };
                        let kind = attempt.as_ref().map_err(Error::kind).err();
                        assert_eq!(
                            kind,
                            Some(ErrorKind::WouldBlock),
                            "try_acquire while held elsewhere"
                        );
                        drop(attempt);
                        waiting_tx.send(()).expect("the parent listens");
                        let guard = if shared {
                            lock.acquire_shared_timeout(HANG)?
                        } else {
                            lock.acquire_timeout(HANG)?
                        };
                        let at = Instant::now();
                        guard.release()?;
                        Ok(at)
                    }
                }
            });
            if waiting_rx.recv_timeout(HANG).is_err() {
                // The waiter failed (or hung) before it started waiting: show why.
                match waiter.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(r) => panic!("the waiter ended before waiting: {r:?}"),
                }
            }
            let triggered = Instant::now();
            trigger();
            let acquired = match waiter.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(r) => r.unwrap_or_else(|e| {
                    panic!(
                        "{}: acquisition after the holder let go failed: {e}",
                        self.name()
                    )
                }),
            };
            acquired.saturating_duration_since(triggered)
        })
    }
}

/// Checks that `r` failed with `kind`, naming `path`.
#[track_caller]
pub fn assert_fails<T: std::fmt::Debug>(
    r: Result<T, Error>,
    kind: ErrorKind,
    path: &Path,
) -> Error {
    let err = r.expect_err("expected the lock to be held elsewhere");
    assert_eq!(err.kind(), kind, "wrong error kind: {err}");
    assert_eq!(
        err.path(),
        Some(path),
        "the error names the lock's path: {err}"
    );
    assert!(
        err.to_string().contains(&format!("{path:?}")),
        "the message names the path: {err}"
    );
    err
}

// ---------------------------------------------------------------------------------------------
// The child's side.

/// The body of `child_entry`: returns at once in a normal test run.
pub fn entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    match role.as_str() {
        "hold" => hold(),
        "probe" => probe(),
        "count" => count(),
        other => panic!("unknown child role {other:?}"),
    }
}

pub fn arg(name: &str) -> String {
    let var = format!("{ARG_PREFIX}{}", name.to_uppercase());
    std::env::var(&var).unwrap_or_else(|_| panic!("the child needs {var}"))
}

pub fn flag(name: &str) -> bool {
    match arg(name).as_str() {
        "1" | "true" => true,
        "0" | "false" => false,
        other => panic!("{name}: not a flag: {other:?}"),
    }
}

/// Prints a handshake line (stdout is line-buffered, so `println!` flushes it).
pub fn say(line: &str) {
    println!("{MARKER}{line}");
    std::io::stdout().flush().expect("flush stdout");
}

/// Blocks until the parent sends a line (or closes stdin).
pub fn read_line() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read stdin");
    line.trim().to_string()
}

/// Role `hold` (PATH, SHARED, MODE): prints WAITING, acquires, prints HELD, waits for a
/// line on stdin, releases, prints RELEASED.
fn hold() {
    let path = PathBuf::from(arg("path"));
    let shared = flag("shared");
    let mode = Mode::from_name(&arg("mode"));
    say("WAITING");
    let held = mode
        .acquire_timeout(&path, shared, HANG)
        .unwrap_or_else(|e| panic!("child: cannot acquire: {e}"));
    assert_eq!(held.is_shared(), shared);
    say("HELD");
    read_line();
    held.release();
    say("RELEASED");
}

/// Role `probe` (PATH, SHARED, MODE): one attempt; prints ACQUIRED, WOULDBLOCK or the error.
fn probe() {
    let path = PathBuf::from(arg("path"));
    let shared = flag("shared");
    let mode = Mode::from_name(&arg("mode"));
    match mode.try_acquire(&path, shared) {
        Ok(held) => {
            held.release();
            say("ACQUIRED");
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => say("WOULDBLOCK"),
        Err(e) => say(&format!("ERROR {:?} {e}", e.kind())),
    }
}

/// Role `count` (LOCK, COUNTER, LOG, TIMES, MODE, DELETE): prints READY, waits for GO, then
/// `TIMES` times under the lock appends `enter <pid>` to LOG, increments the decimal number
/// in COUNTER (read, then rewrite), appends `exit <pid>`. Prints DONE.
fn count() {
    let lock_path = PathBuf::from(arg("lock"));
    let counter = PathBuf::from(arg("counter"));
    let log = PathBuf::from(arg("log"));
    let times: usize = arg("times").parse().expect("TIMES is a number");
    let delete = flag("delete");
    let mode = Mode::from_name(&arg("mode"));
    say("READY");
    let go = read_line();
    assert_eq!(go, "GO", "the parent starts the count");
    match mode {
        Mode::Async(rt) => {
            let lock = FileLock::builder(&lock_path)
                .delete_on_release(delete)
                .backoff(COUNT_BACKOFF)
                .build()
                .expect("build the lock");
            rt.run(async move {
                for _ in 0..times {
                    let guard = lock.acquire().timeout(HANG).await.expect("acquire");
                    increment(&counter, &log);
                    guard.release().expect("release");
                    async_io::Timer::after(COUNT_PAUSE).await;
                }
            });
        }
        Mode::Blocking => {
            let lock = blocking::FileLock::builder(&lock_path)
                .delete_on_release(delete)
                .backoff(COUNT_BACKOFF)
                .build()
                .expect("build the lock");
            for _ in 0..times {
                let guard = lock.acquire_timeout(HANG).expect("acquire");
                increment(&counter, &log);
                guard.release().expect("release");
                thread::sleep(COUNT_PAUSE);
            }
        }
    }
    say("DONE");
}

/// Role `count` polls often, so that the lock changes hands between processes many times
/// (with the default backoff, a releasing process usually takes the lock straight back).
const COUNT_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_micros(100), Duration::from_millis(2));
/// A pause outside the lock after each increment, which lets a waiter in: not an ordering
/// device, only a way to get more hand-overs.
const COUNT_PAUSE: Duration = Duration::from_micros(300);

/// The critical section of role `count`.
fn increment(counter: &Path, log: &Path) {
    let pid = std::process::id();
    append(log, &format!("enter {pid}\n"));
    let text = fs::read_to_string(counter).expect("read the counter");
    let n: u64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the counter holds {text:?}: a torn write seen under the lock"));
    fs::write(counter, format!("{}\n", n + 1)).expect("write the counter");
    append(log, &format!("exit {pid}\n"));
}

fn append(path: &Path, line: &str) {
    let mut f: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    f.write_all(line.as_bytes()).expect("append to the log");
}

/// Checks a log written by role `count`: `enter p` / `exit p` pairs strictly alternate, and
/// each of `pids` made exactly `times` of them. Returns how often the holder changed.
pub fn check_alternation(log: &str, pids: &[u32], times: usize) -> usize {
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines.len(),
        2 * pids.len() * times,
        "every increment logs one enter and one exit"
    );
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    let mut switches = 0;
    let mut last = None;
    for (i, pair) in lines.chunks(2).enumerate() {
        let enter = pair[0].strip_prefix("enter ");
        let exit = pair[1].strip_prefix("exit ");
        let (Some(enter), Some(exit)) = (enter, exit) else {
            panic!(
                "line {}: expected an enter/exit pair, got {:?}: two holders overlapped",
                2 * i + 1,
                pair
            );
        };
        assert_eq!(
            enter,
            exit,
            "line {}: process {enter} entered but {exit} exited: two holders overlapped",
            2 * i + 1
        );
        let pid: u32 = enter.parse().expect("a pid");
        *per_pid.entry(pid).or_default() += 1;
        if last.is_some_and(|l| l != pid) {
            switches += 1;
        }
        last = Some(pid);
    }
    for pid in pids {
        assert_eq!(
            per_pid.get(pid).copied().unwrap_or(0),
            times,
            "process {pid} logged the wrong number of increments"
        );
    }
    switches
}

/// One test per scenario and mode, named `scenario::mode`.
macro_rules! per_mode {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[test]
            fn tokio_current_thread() {
                super::$scenario(Mode::Async(Runtime::TokioCurrentThread));
            }

            #[test]
            fn tokio_multi_thread() {
                super::$scenario(Mode::Async(Runtime::TokioMultiThread));
            }

            #[test]
            fn smol() {
                super::$scenario(Mode::Async(Runtime::Smol));
            }

            #[test]
            fn block_on() {
                super::$scenario(Mode::Async(Runtime::BlockOn));
            }

            #[test]
            fn blocking() {
                super::$scenario(Mode::Blocking);
            }
        }
    )*};
}
