//! Reader/writer locks across processes: the test binary re-executes itself as workers that
//! read and write under an [`RwFileLock`] (and its blocking twin), each worker with its own
//! way of taking the lock: tokio current-thread, tokio multi-thread, smol,
//! `futures_lite::future::block_on`, or the `blocking` wrapper.
//!
//! Every hold is logged to one file opened with `O_APPEND`: a `begin` line written right after
//! acquiring and an `end` line right before releasing. The kernel orders appends, so the log's
//! line order brackets each hold in real time; every line also carries the monotonic clock
//! (on Linux, `CLOCK_MONOTONIC`, which all processes share) for wait times.

#[path = "common/child.rs"]
#[macro_use]
mod child;
mod common;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_filelock::{blocking, ErrorKind, RwFileLock};

use child::{arg, flag, read_line, say, Mode, Proc, MODES, ROLE_VAR};
use common::{lock_path, tmp, Runtime};

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    match role.as_str() {
        "work" => work(),
        "hold" => hold(),
        "try" => attempt(),
        other => panic!("unknown child role {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The children's side.

/// Nanoseconds on a clock every process on the machine shares.
fn now_ns() -> u128 {
    clock::now_ns()
}

#[cfg(target_os = "linux")]
mod clock {
    pub fn now_ns() -> u128 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
    }
}

#[cfg(not(target_os = "linux"))]
mod clock {
    /// Without a shared monotonic clock, the wall clock: only wait times read it, and the
    /// log's line order, not the clock, decides overlaps.
    pub fn now_ns() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    }
}

/// Appends one line to the hold log.
fn log_line(log: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .expect("open the hold log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("append to the hold log");
}

/// A hold, from either API.
enum Held {
    Read(async_filelock::RwReadGuard),
    Write(async_filelock::RwWriteGuard),
    BlockingRead(blocking::RwReadGuard),
    BlockingWrite(blocking::RwWriteGuard),
}

impl Held {
    fn release(self) {
        match self {
            Held::Read(g) => g.release(),
            Held::Write(g) => g.release(),
            Held::BlockingRead(g) => g.release(),
            Held::BlockingWrite(g) => g.release(),
        }
        .expect("release");
    }
}

/// How a child takes the lock: one executor (kept for the child's life) or the blocking
/// wrapper.
struct Taker {
    mode: Mode,
    tokio: Option<tokio::runtime::Runtime>,
    lock: RwFileLock,
    sync: blocking::RwFileLock,
}

impl Taker {
    fn new(mode: Mode, path: &Path) -> Taker {
        let tokio = match mode {
            Mode::Async(Runtime::TokioCurrentThread) => Some(
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap(),
            ),
            Mode::Async(Runtime::TokioMultiThread) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .unwrap(),
            ),
            _ => None,
        };
        let lock = RwFileLock::new(path);
        Taker {
            mode,
            tokio,
            sync: blocking::RwFileLock::from(lock.clone()),
            lock,
        }
    }

    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        match (&self.tokio, self.mode) {
            (Some(rt), _) => rt.block_on(f),
            (None, Mode::Async(Runtime::Smol)) => smol::block_on(f),
            _ => futures_lite::future::block_on(f),
        }
    }

    fn take(&self, write: bool) -> Held {
        match (self.mode, write) {
            (Mode::Blocking, false) => Held::BlockingRead(self.sync.read().expect("read")),
            (Mode::Blocking, true) => Held::BlockingWrite(self.sync.write().expect("write")),
            (_, false) => Held::Read(self.run(self.lock.read()).expect("read")),
            (_, true) => Held::Write(self.run(self.lock.write()).expect("write")),
        }
    }

    fn try_take(&self, write: bool) -> Result<Held, async_filelock::Error> {
        match (self.mode, write) {
            (Mode::Blocking, false) => self.sync.try_read().map(Held::BlockingRead),
            (Mode::Blocking, true) => self.sync.try_write().map(Held::BlockingWrite),
            (_, false) => self.lock.try_read().map(Held::Read),
            (_, true) => self.lock.try_write().map(Held::Write),
        }
    }
}

/// One logged hold: acquire, log `begin`, keep it `hold`, log `end`, release.
fn logged_hold(taker: &Taker, log: &Path, write: bool, hold: Duration) {
    let pid = std::process::id();
    let what = if write { "W" } else { "R" };
    let asked = now_ns();
    let held = taker.take(write);
    log_line(log, &format!("{pid} {what} begin {} {asked}", now_ns()));
    std::thread::sleep(hold);
    log_line(log, &format!("{pid} {what} end {}", now_ns()));
    held.release();
}

/// Role `work` (LOCK, LOG, MODE, OPS, HOLD_MS): prints READY, waits for GO, then for each
/// character of OPS (`r` or `w`) makes one logged hold, and prints DONE. With STREAM set, it
/// repeats OPS until its stdin says STOP.
fn work() {
    let taker = Taker::new(Mode::from_name(&arg("mode")), Path::new(&arg("lock")));
    let log = arg("log");
    let ops = arg("ops");
    let hold = Duration::from_millis(arg("hold_ms").parse().unwrap());
    let stream = flag("stream");
    say("READY");
    assert_eq!(read_line(), "GO");
    let stop = Arc::new(AtomicBool::new(!stream));
    if stream {
        let stop = stop.clone();
        std::thread::spawn(move || {
            read_line();
            stop.store(true, Ordering::SeqCst);
        });
    }
    loop {
        for op in ops.chars() {
            logged_hold(&taker, Path::new(&log), op == 'w', hold);
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    say("DONE");
}

/// Role `hold` (LOCK, MODE, WRITE): acquires, prints HELD, waits for a line, releases,
/// prints RELEASED.
fn hold() {
    let taker = Taker::new(Mode::from_name(&arg("mode")), Path::new(&arg("lock")));
    let held = taker.take(flag("write"));
    say("HELD");
    read_line();
    held.release();
    say("RELEASED");
}

/// Role `try` (LOCK, MODE, WRITE): one attempt; prints ACQUIRED or WOULDBLOCK.
fn attempt() {
    let taker = Taker::new(Mode::from_name(&arg("mode")), Path::new(&arg("lock")));
    match taker.try_take(flag("write")) {
        Ok(held) => {
            say("ACQUIRED");
            held.release();
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => say("WOULDBLOCK"),
        Err(e) => panic!("attempt failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

fn bit(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn worker(lock: &Path, log: &Path, mode: Mode, ops: &str, hold_ms: u64, stream: bool) -> Proc {
    let mut c = Proc::child(
        "work",
        &[
            ("lock", &lock),
            ("log", &log),
            ("mode", &mode.name()),
            ("ops", &ops),
            ("hold_ms", &hold_ms.to_string()),
            ("stream", &bit(stream)),
        ],
    );
    c.expect("READY");
    c
}

fn holder(lock: &Path, mode: Mode, write: bool) -> Proc {
    let mut c = Proc::child(
        "hold",
        &[
            ("lock", &lock),
            ("mode", &mode.name()),
            ("write", &bit(write)),
        ],
    );
    c.expect("HELD");
    c
}

fn probe(lock: &Path, mode: Mode, write: bool) -> String {
    let mut c = Proc::child(
        "try",
        &[
            ("lock", &lock),
            ("mode", &mode.name()),
            ("write", &bit(write)),
        ],
    );
    let line = c.next_line();
    c.wait_success();
    line
}

/// One hold from the log.
#[derive(Debug)]
struct Span {
    #[allow(dead_code)] // read by `Debug` in failure messages
    pid: u32,
    write: bool,
    /// Line numbers of `begin` and `end`.
    begin: usize,
    end: usize,
    asked_ns: u128,
    begin_ns: u128,
}

/// Parses the log into holds, checking every hold that began also ended.
fn spans(log: &str) -> Vec<Span> {
    let mut open: HashMap<u32, (bool, usize, u128, u128)> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        let pid: u32 = f[0].parse().unwrap();
        let write = f[1] == "W";
        match f[2] {
            "begin" => {
                let prev = open.insert(
                    pid,
                    (write, i, f[3].parse().unwrap(), f[4].parse().unwrap()),
                );
                assert!(prev.is_none(), "pid {pid} began twice: line {i}");
            }
            "end" => {
                let (w, begin, begin_ns, asked_ns) =
                    open.remove(&pid).expect("an end follows a begin");
                assert_eq!(w, write);
                out.push(Span {
                    pid,
                    write,
                    begin,
                    end: i,
                    asked_ns,
                    begin_ns,
                });
            }
            other => panic!("bad log line {line:?} ({other})"),
        }
    }
    assert!(open.is_empty(), "holds without an end: {open:?}");
    out
}

/// Checks that no writer overlapped anyone; returns how many pairs of readers overlapped.
fn check_exclusion(spans: &[Span]) -> usize {
    let mut reader_overlaps = 0;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let overlap = a.begin < b.end && b.begin < a.end;
            if overlap {
                assert!(
                    !a.write && !b.write,
                    "a writer overlapped another hold: {a:?} and {b:?}"
                );
                reader_overlaps += 1;
            }
        }
    }
    reader_overlaps
}

/// Five processes, one per way of taking the lock, each mixing reads and writes: readers
/// overlap, writers overlap no one, and every hold ends.
#[test]
fn mixed_readers_and_writers_under_every_mode() {
    let dir = tmp();
    let lock = lock_path(&dir, "data.db");
    let log = lock_path(&dir, "holds.log");
    let mut workers: Vec<Proc> = MODES
        .iter()
        .map(|&mode| worker(&lock, &log, mode, "rrrwrrrrwr", 4, false))
        .collect();
    for w in &mut workers {
        w.send("GO");
    }
    for w in &mut workers {
        w.expect("DONE");
        w.wait_success();
    }
    let spans = spans(&fs::read_to_string(&log).unwrap());
    assert_eq!(spans.len(), MODES.len() * 10);
    assert_eq!(spans.iter().filter(|s| s.write).count(), MODES.len() * 2);
    let overlaps = check_exclusion(&spans);
    eprintln!("{} holds, {overlaps} overlapping reader pairs", spans.len());
    assert!(overlaps > 0, "readers never overlapped: {spans:?}");
}

/// Three processes keep the lock read without a gap (each re-reads at once, and their holds
/// overlap); a writer arriving in the middle of that stream still gets in, and promptly.
#[test]
fn a_writer_is_not_starved_by_continuous_readers() {
    for mode in [Mode::Async(Runtime::Smol), Mode::Blocking] {
        let dir = tmp();
        let lock = lock_path(&dir, "data.db");
        let log = lock_path(&dir, "holds.log");
        let readers_mode = [
            Mode::Async(Runtime::TokioMultiThread),
            Mode::Async(Runtime::TokioCurrentThread),
            Mode::Blocking,
        ];
        let mut readers: Vec<Proc> = readers_mode
            .iter()
            .map(|&m| worker(&lock, &log, m, "r", 30, true))
            .collect();
        for r in &mut readers {
            r.send("GO");
        }
        // Let the stream establish itself: every reader has held at least once.
        let t = std::time::Instant::now();
        while spans_so_far(&log) < 6 {
            assert!(t.elapsed() < child::PROMPT, "readers did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut writer = worker(&lock, &log, mode, "w", 5, false);
        writer.send("GO");
        writer.expect("DONE");
        writer.wait_success();
        for r in &mut readers {
            r.send("STOP");
        }
        for r in &mut readers {
            r.expect("DONE");
            r.wait_success();
        }
        let spans = spans(&fs::read_to_string(&log).unwrap());
        check_exclusion(&spans);
        let w = spans.iter().find(|s| s.write).expect("the writer held");
        let waited = Duration::from_nanos((w.begin_ns - w.asked_ns) as u64);
        let after = spans.iter().filter(|s| s.begin > w.end).count();
        eprintln!(
            "{mode:?}: the writer waited {waited:?} behind readers; {after} reads followed it"
        );
        assert!(after > 0, "the readers kept going after the writer");
        // Readers hold 30 ms; once the writer waits no new reader starts, so it waits for
        // at most the readers inside plus backoff. A starved writer would wait until STOP.
        assert!(
            waited < child::PROMPT,
            "the writer waited {waited:?} behind the readers"
        );
    }
}

/// How many holds the log has ended so far.
fn spans_so_far(log: &Path) -> usize {
    fs::read_to_string(log)
        .map(|s| s.lines().filter(|l| l.contains(" end ")).count())
        .unwrap_or(0)
}

/// A waiting writer keeps new readers out; dropping its future lets them in at once.
#[test]
fn cancelling_a_waiting_writer_lets_readers_in() {
    for runtime in [Runtime::TokioCurrentThread, Runtime::Smol] {
        let dir = tmp();
        let lock = lock_path(&dir, "data.db");
        let mut reader = holder(&lock, Mode::Blocking, false);
        assert_eq!(probe(&lock, Mode::Blocking, false), "ACQUIRED");
        let path = lock.clone();
        runtime.run(async move {
            let lock = RwFileLock::new(&path);
            let mut write = lock.write();
            // The writer takes the gate at its first attempt (on the blocking pool, where
            // attempts run there) and finds the reader inside; from then on, new readers
            // are refused.
            let start = std::time::Instant::now();
            loop {
                assert!(futures_lite::future::poll_once(&mut write).await.is_none());
                let p = path.clone();
                if ::blocking::unblock(move || probe(&p, Mode::Blocking, false)).await
                    == "WOULDBLOCK"
                {
                    break;
                }
                assert!(start.elapsed() < child::PROMPT, "the writer never queued");
            }
            drop(write);
            let path = lock.path().to_path_buf();
            let after = ::blocking::unblock(move || probe(&path, Mode::Blocking, false)).await;
            assert_eq!(after, "ACQUIRED", "the cancelled writer's claim is gone");
        });
        reader.send("RELEASE");
        reader.expect("RELEASED");
        reader.wait_success();
    }
}

/// A writer process killed while it waits releases its claim with its files.
#[test]
#[cfg(unix)]
fn a_killed_waiting_writer_lets_readers_in() {
    let dir = tmp();
    let lock = lock_path(&dir, "data.db");
    let mut reader = holder(&lock, Mode::Async(Runtime::Smol), false);
    let mut writer = Proc::child(
        "hold",
        &[
            ("lock", &lock),
            ("mode", &Mode::Blocking.name()),
            ("write", &"1"),
        ],
    );
    // The writer waits: readers are refused once its claim is in.
    let t = std::time::Instant::now();
    while probe(&lock, Mode::Async(Runtime::BlockOn), false) == "ACQUIRED" {
        assert!(t.elapsed() < child::PROMPT, "the writer never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.kill();
    writer.wait();
    assert_eq!(
        probe(&lock, Mode::Async(Runtime::BlockOn), false),
        "ACQUIRED"
    );
    reader.send("RELEASE");
    reader.expect("RELEASED");
}

/// A writer in another process excludes readers and writers here, under every mode.
#[test]
fn a_writer_elsewhere_excludes_everyone() {
    let dir = tmp();
    let lock = lock_path(&dir, "data.db");
    let mut writer = holder(&lock, Mode::Async(Runtime::TokioMultiThread), true);
    for mode in MODES {
        assert_eq!(probe(&lock, mode, false), "WOULDBLOCK", "{mode:?}");
        assert_eq!(probe(&lock, mode, true), "WOULDBLOCK", "{mode:?}");
    }
    writer.send("RELEASE");
    writer.expect("RELEASED");
    for mode in MODES {
        assert_eq!(probe(&lock, mode, false), "ACQUIRED", "{mode:?}");
        assert_eq!(probe(&lock, mode, true), "ACQUIRED", "{mode:?}");
    }
}
