//! Cross-process benchmark harness: every figure next to a raw baseline measured
//! by this same program, and next to Python filelock when `python3 -c 'import filelock'` works.
//!
//! Run with `scripts/lockbench.sh` (a release build of
//! `cargo run --release --example lockbench -- [--quick] [SECTION...]`). With no section names
//! all sections run (about 2 minutes on a 2-core machine); `--quick` shrinks every size for a
//! run of about 20 s. Sections: `uncontended`, `counter`, `wakeup`, `tasks`, `cancel`, `heap`.
//!
//! The harness uses only the crate's public API, so it measures whatever the library does.
//! It starts its own worker processes by running itself again as
//! `lockbench __worker ROLE ...`, and Python workers as `python3 -c SCRIPT ...`. Lock files
//! live in a fresh temporary directory (`std::env::temp_dir()`, so its file system counts).
//!
//! # Sections
//!
//! - **uncontended**: acquire + release of a lock nobody else holds, per operation. Baseline
//!   `raw`: std only, `open(O_RDWR|O_CREAT|O_CLOEXEC)` + `flock(LOCK_EX)` (`File::lock`) +
//!   `flock(LOCK_UN)` + `close`. Library lines: `futures_lite::future::block_on(lock.acquire())`
//!   per operation, many acquisitions awaited inside one `block_on`, and
//!   `blocking::FileLock::acquire`. Variants run interleaved (a batch of each, round after
//!   round) and each ratio is the median of the per-round ratios to `raw`, which cancels the
//!   drift of a busy machine. Python: a `with FileLock(p): pass` loop, timed on its own.
//! - **counter**: P = 2 and 4 processes each add 1 to a number in a shared file N times, each
//!   time under the lock (read, parse, write back, and append the worker's pid to an order
//!   log, all while holding the lock). Reported: throughput (all increments / time from the
//!   start signal to the last worker's end, on a clock shared by the processes), lost
//!   updates (expected minus the final count; must be 0, and the log must hold one line per
//!   increment), the wait per acquisition measured inside each worker (p50/p99 over all
//!   workers), the longest streak (longest run of consecutive acquisitions by one process,
//!   read from the order log) and the hand-over share (acquisitions that went to another
//!   process than the previous one). Baseline `raw`: a worker blocked in `File::lock` (open +
//!   blocking `flock` + unlock + close per increment). Library: async
//!   (`futures_lite::future::block_on` around the loop) and `blocking::FileLock`.
//! - **wakeup** (Linux): the parent holds the lock (raw open + `flock`), tells a waiter
//!   process to acquire, waits 50-100 ms (uniformly random and at least Python's 50 ms poll
//!   period, so the release falls anywhere in a polling waiter's cycle), reads
//!   `CLOCK_MONOTONIC` and releases (unlock + close). The waiter reads
//!   the same clock as soon as it holds the lock, so latency = its acquire instant minus the
//!   release instant. The waiter also reads its process CPU clock
//!   (`CLOCK_PROCESS_CPUTIME_ID`: all its threads, so the async-io reactor too) before and
//!   after acquiring; CPU share = CPU time / wall time of the wait, over all trials. Baseline
//!   `raw`: a thread blocked in `File::lock`, the kernel's limit, which cannot be cancelled.
//!   Library: async under `futures_lite::future::block_on` and under `smol::block_on`, and
//!   `blocking::FileLock`.
//! - **tasks**: 1,000 tasks x 10 acquisitions on one lock in one process, under tokio
//!   (multi-thread, one worker per core) and smol (one thread, `LocalExecutor`), without and
//!   with an `.await` (`futures_lite::future::yield_now()`) inside the critical section.
//!   Each run is a fresh worker process; the time is the median of a few runs. Baseline
//!   `raw`: the same 1,000 tasks on the same runtime, each taking the lock with raw
//!   open + blocking `flock` on the runtime's blocking pool (`tokio::task::spawn_blocking`,
//!   `smol::unblock`) and releasing it (unlock + close) from the task: what an async program
//!   does without this crate, and the fairest equivalent because it keeps the same tasks,
//!   the same runtime and the same `.await` inside. A `threads` line (1,000 OS threads in
//!   `File::lock`) is printed for reference. "OS lock attempts per successful acquire" is
//!   counted with `strace -f -e trace=flock` (a `LOCK_EX` call is an attempt) in a separate,
//!   slower, traced run; without `strace` the line says so.
//! - **cancel**: while another process holds the lock, 10,000 acquisitions, in waves of
//!   1,000 concurrent futures on a smol `LocalExecutor`, each dropped after 1 ms (half via
//!   `Acquire::timeout`, half by racing a 1 ms timer, which drops the future). Open
//!   descriptors (`/proc/self/fd`) and threads (`/proc/self/status`) before and after (Linux;
//!   after warm-up, so lazily started runtime threads are not counted as leaks), and the
//!   latency of a fresh acquisition once the holder leaves, next to the same measurement
//!   taken before the cancellations (the control).
//! - **heap**: a counting `#[global_allocator]` (this example only) measures the bytes
//!   allocated, and still live, per pending acquire future that was polled once and waits
//!   while the OS lock is held elsewhere: the first waiter (queue head, it owns the timer)
//!   and each further waiter. Baseline: the heap of a thread blocked in `File::lock` (it
//!   also costs a thread and its stack, which this does not count).
//!
//! # Reading the numbers
//!
//! Ratios are "library / raw": below 1 is faster than the baseline. The project's performance
//! targets are printed next to the figures with `met` or `MISSED`, and again in a summary at the
//! end. All figures are from one run on whatever else the machine is doing: compare lines of
//! the same run, and repeat before trusting a small difference. Latencies and waits include
//! process scheduling; on a 2-core machine with 4 worker processes that dominates the tails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use std::{env, process, thread};

use async_filelock::{blocking, ErrorKind, FileLock};
use futures_lite::future;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SECTIONS: [&str; 6] = [
    "uncontended",
    "counter",
    "wakeup",
    "tasks",
    "cancel",
    "heap",
];

// ---------------------------------------------------------------------------------------
// A counting allocator, for the `heap` section.
// ---------------------------------------------------------------------------------------

/// Forwards every call to the system allocator and, while [`COUNTING`] is on, adds up the
/// bytes and calls. Off, it costs one relaxed atomic load per call.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOC_CALLS: AtomicU64 = AtomicU64::new(0);
static FREE_BYTES: AtomicU64 = AtomicU64::new(0);

fn count_heap(allocated: usize, freed: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOC_BYTES.fetch_add(allocated as u64, Ordering::Relaxed);
        ALLOC_CALLS.fetch_add(u64::from(allocated > 0), Ordering::Relaxed);
        FREE_BYTES.fetch_add(freed as u64, Ordering::Relaxed);
    }
}

// SAFETY: each method passes its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_heap(layout.size(), 0);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_heap(layout.size(), 0);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_heap(0, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_heap(new_size, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// (bytes allocated, allocation calls, bytes freed) since counting started.
#[derive(Clone, Copy)]
struct HeapStats {
    bytes: u64,
    calls: u64,
    freed: u64,
}

impl HeapStats {
    fn now() -> HeapStats {
        HeapStats {
            bytes: ALLOC_BYTES.load(Ordering::SeqCst),
            calls: ALLOC_CALLS.load(Ordering::SeqCst),
            freed: FREE_BYTES.load(Ordering::SeqCst),
        }
    }
    fn live(&self) -> i64 {
        self.bytes as i64 - self.freed as i64
    }
}

// ---------------------------------------------------------------------------------------
// Clocks, statistics, formatting.
// ---------------------------------------------------------------------------------------

/// Nanoseconds on a clock every process of the machine shares: `CLOCK_MONOTONIC` on Unix
/// (Python's `time.clock_gettime_ns(time.CLOCK_MONOTONIC)`), the system clock elsewhere.
#[cfg(unix)]
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(not(unix))]
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The Python expression for [`now_ns`]'s clock.
const PY_NOW: &str = if cfg!(unix) {
    "time.clock_gettime_ns(time.CLOCK_MONOTONIC)"
} else {
    "time.time_ns()"
};

/// CPU time of this whole process (all threads), in nanoseconds.
#[cfg(target_os = "linux")]
fn process_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: &[f64]) -> f64 {
    pct(&sorted(v.to_vec()), 50.0)
}

fn fmt_ns(ns: f64) -> String {
    if ns.is_nan() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The project's performance targets, collected for the summary.
#[derive(Default)]
struct Report {
    targets: Vec<(String, String, bool)>,
    notes: Vec<String>,
}

impl Report {
    /// Records a target and returns the mark to print next to the figure.
    fn target(&mut self, what: impl Into<String>, figure: impl Into<String>, ok: bool) -> String {
        self.targets.push((what.into(), figure.into(), ok));
        format!("[{}]", verdict(ok))
    }
}

struct Cfg {
    quick: bool,
    /// Python filelock's version, when `python3` can import it.
    python: Option<String>,
}

fn open_rw(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

// ---------------------------------------------------------------------------------------
// Child processes.
// ---------------------------------------------------------------------------------------

/// A worker process driven by lines on its stdin, answering with lines on its stdout.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(name: impl Into<String>, mut cmd: Command) -> Res<Proc> {
        let name = name.into();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name,
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, line: &str) -> Res<()> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The next line, which must start with `word`; returns the words after it.
    fn expect(&self, word: &str, timeout: Duration) -> Res<Vec<String>> {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("{}: no `{word}` within {timeout:?}", self.name).into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("{}: exited before `{word}`", self.name).into())
            }
        };
        let mut words = line.split_whitespace();
        if words.next() != Some(word) {
            return Err(format!("{}: expected `{word}`, got {line:?}", self.name).into());
        }
        Ok(words.map(String::from).collect())
    }

    /// Closes stdin and waits for a successful exit.
    fn finish(mut self, timeout: Duration) -> Res<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{}: {status}", self.name).into())
                };
            }
            if Instant::now() > deadline {
                return Err(format!("{}: still running after {timeout:?}", self.name).into());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `lockbench __worker ARGS...`
fn worker_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let exe = env::current_exe().expect("the path of this program");
    let mut cmd = Command::new(exe);
    cmd.arg("__worker")
        .args(args.into_iter().map(Into::into).collect::<Vec<OsString>>());
    cmd
}

/// `python3 -c SCRIPT ARGS...`
fn python_cmd<I, S>(script: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .args(args.into_iter().map(Into::into).collect::<Vec<OsString>>());
    cmd
}

fn python_filelock() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import filelock; print(filelock.__version__)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reads one line from stdin (a worker's start signal or command); `None` at EOF.
fn read_command() -> Res<Option<String>> {
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

// ---------------------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__worker") {
        return match run_worker(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lockbench worker {:?}: {e}", &args[1..]);
                ExitCode::FAILURE
            }
        };
    }
    let mut quick = false;
    let mut only = Vec::new();
    for arg in &args {
        match arg.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!(
                    "usage: lockbench [--quick] [SECTION...]\nsections: {}",
                    SECTIONS.join(" ")
                );
                return ExitCode::SUCCESS;
            }
            s if SECTIONS.contains(&s) => only.push(s.to_string()),
            other => {
                eprintln!(
                    "lockbench: unknown argument {other:?} (sections: {})",
                    SECTIONS.join(" ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let cfg = Cfg {
        quick,
        python: python_filelock(),
    };
    print_header(&cfg);
    let mut report = Report::default();
    let started = Instant::now();
    let mut failed = false;
    for section in SECTIONS {
        if !only.is_empty() && !only.iter().any(|s| s == section) {
            continue;
        }
        let t = Instant::now();
        println!("\n=== {section}");
        let result = match section {
            "uncontended" => uncontended(&cfg, &mut report),
            "counter" => counter(&cfg, &mut report),
            "wakeup" => wakeup(&cfg, &mut report),
            "tasks" => tasks(&cfg, &mut report),
            "cancel" => cancel(&cfg, &mut report),
            "heap" => heap(&cfg, &mut report),
            _ => unreachable!(),
        };
        if let Err(e) = result {
            println!("  ERROR in section {section}: {e}");
            report.notes.push(format!("section {section} failed: {e}"));
            failed = true;
        }
        println!("  ({section}: {:.1} s)", t.elapsed().as_secs_f64());
    }
    print_summary(&report, started.elapsed());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_header(cfg: &Cfg) {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| env::consts::OS.to_string());
    println!(
        "lockbench: {} run, {cores} cores, {kernel}, lock files under {}",
        if cfg.quick { "quick" } else { "full" },
        env::temp_dir().display()
    );
    match &cfg.python {
        Some(v) => println!("python filelock {v}: compared where it applies"),
        None => println!("python filelock: not importable by python3, its lines are skipped"),
    }
}

fn print_summary(report: &Report, elapsed: Duration) {
    println!("\n=== summary: performance targets");
    for (what, figure, ok) in &report.targets {
        println!("  {:<7} {what:<58} {figure}", verdict(*ok));
    }
    for note in &report.notes {
        println!("  note: {note}");
    }
    let missed = report.targets.iter().filter(|t| !t.2).count();
    println!(
        "  {} of {} targets met; total {:.1} s",
        report.targets.len() - missed,
        report.targets.len(),
        elapsed.as_secs_f64()
    );
}

fn run_worker(args: &[String]) -> Res<()> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["counter", imp, dir, n, id] => counter_worker(imp, Path::new(dir), n.parse()?, id),
        ["wait", imp, path] => wait_worker(imp, Path::new(path)),
        ["tasks", rt, variant, inside, path, tasks, iters] => tasks_worker(
            rt,
            variant,
            *inside == "1",
            Path::new(path),
            tasks.parse()?,
            iters.parse()?,
        ),
        ["hold", path] => hold_worker(Path::new(path)),
        ["cancel", path, n, settle_ms] => {
            cancel_worker(Path::new(path), n.parse()?, settle_ms.parse()?)
        }
        ["heap", path, k] => heap_worker(Path::new(path), k.parse()?),
        ["cycles", imp, path, n] => cycles_worker(imp, Path::new(path), n.parse()?),
        _ => Err(format!("unknown worker role {args:?}").into()),
    }
}

/// `cycles IMP PATH N`: N uncontended acquire + release cycles on one lock, for counting
/// system calls per cycle (`strace -c -f lockbench __worker cycles async PATH 10000`). IMP is
/// `raw` (open + flock + unlock + close), `async` (`block_on(lock.acquire())` per cycle) or
/// `sync` (`blocking::FileLock::acquire`).
fn cycles_worker(imp: &str, path: &Path, n: u64) -> Res<()> {
    let lock = FileLock::new(path);
    let sync_lock = blocking::FileLock::new(path);
    for _ in 0..n {
        match imp {
            "raw" => {
                let file = open_rw(path)?;
                file.lock()?;
                file.unlock()?;
                drop(file);
            }
            "async" => drop(future::block_on(lock.acquire())?),
            "sync" => drop(sync_lock.acquire()?),
            _ => return Err(format!("unknown implementation {imp:?}").into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// uncontended
// ---------------------------------------------------------------------------------------

type Batch<'a> = Box<dyn Fn(u64) -> Res<Duration> + 'a>;

fn uncontended(cfg: &Cfg, report: &mut Report) -> Res<()> {
    let (rounds, batch) = if cfg.quick { (11, 300) } else { (31, 1000) };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("uncontended.lock");
    let lock = FileLock::new(&path);
    let sync_lock = blocking::FileLock::new(&path);
    drop(lock.try_acquire()?);

    let variants: Vec<(&str, bool, Batch<'_>)> = vec![
        (
            "raw open+flock+unlock+close",
            false,
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    let file = open_rw(&path)?;
                    file.lock()?;
                    file.unlock()?;
                    drop(file);
                }
                Ok(t.elapsed())
            }),
        ),
        (
            "async block_on(acquire()) per op",
            true,
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    drop(future::block_on(lock.acquire())?);
                }
                Ok(t.elapsed())
            }),
        ),
        (
            "async, all ops in one block_on",
            true,
            Box::new(|n| {
                future::block_on(async {
                    let t = Instant::now();
                    for _ in 0..n {
                        drop(lock.acquire().await?);
                    }
                    Ok(t.elapsed())
                })
            }),
        ),
        (
            "sync blocking::FileLock::acquire",
            true,
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    drop(sync_lock.acquire()?);
                }
                Ok(t.elapsed())
            }),
        ),
        (
            "try_acquire (for reference)",
            false,
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    drop(lock.try_acquire()?);
                }
                Ok(t.elapsed())
            }),
        ),
    ];

    let mut per_op = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let t = (variants[i].2)(batch)?;
            per_op[i].push(t.as_nanos() as f64 / batch as f64);
        }
    }
    println!("  {rounds} interleaved rounds x {batch} ops; medians; ratio = median of per-round ratios to raw");
    let raw_median = median(&per_op[0]);
    for (i, (name, targeted, _)) in variants.iter().enumerate() {
        let ratios: Vec<f64> = (0..rounds).map(|r| per_op[i][r] / per_op[0][r]).collect();
        let ratio = median(&ratios);
        let mark = if *targeted {
            report.target(
                format!("uncontended {name} <= 1.0x raw"),
                format!("{ratio:.2}x"),
                ratio <= 1.0,
            )
        } else {
            String::new()
        };
        println!(
            "  {name:<36} {:>10}/op  {ratio:>5.2}x raw  {mark}",
            fmt_ns(median(&per_op[i]))
        );
    }

    if cfg.python.is_some() {
        let n = if cfg.quick { 3000 } else { 20000 };
        let out = python_cmd(PY_UNCONTENDED, [path.as_os_str(), n.to_string().as_ref()])
            .stderr(Stdio::inherit())
            .output()?;
        let ns: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        println!(
            "  {:<36} {:>10}/op  {:>5.2}x raw (timed alone, {n} ops, not interleaved)",
            "python filelock `with FileLock(p)`",
            fmt_ns(ns),
            ns / raw_median
        );
    } else {
        println!("  python filelock: not installed, skipped");
    }
    Ok(())
}

const PY_UNCONTENDED: &str = r#"
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
n = int(sys.argv[2])
for _ in range(200):
    with lock:
        pass
t = time.perf_counter_ns()
for _ in range(n):
    with lock:
        pass
print((time.perf_counter_ns() - t) / n)
"#;

// ---------------------------------------------------------------------------------------
// counter
// ---------------------------------------------------------------------------------------

struct CounterRun {
    ops_per_s: f64,
    lost: i64,
    log_ok: bool,
    /// Each acquisition's wait, in nanoseconds, from all workers.
    waits: Vec<f64>,
    streak: usize,
    handover: f64,
}

fn counter(cfg: &Cfg, report: &mut Report) -> Res<()> {
    let (n, reps): (u64, usize) = if cfg.quick { (300, 1) } else { (1000, 3) };
    let mut imps = vec!["raw", "async", "sync"];
    if cfg.python.is_some() {
        imps.push("python");
    }
    println!(
        "  each process: N = {n} x (lock; read counter; write counter+1; append pid to the order log; unlock)"
    );
    println!("  raw = blocking File::lock per increment; async = futures_lite::block_on(acquire); sync = blocking::FileLock");
    println!("  {reps} round(s), every impl once per round in rotating order; ops/s = median over rounds, x raw = median of");
    println!("  per-round ratios; waits pooled over rounds; streak = longest in any round; lost = sum over rounds");
    for p in [2usize, 4] {
        println!(
            "\n  P = {p} processes ({} increments per run)",
            p as u64 * n
        );
        let mut runs: Vec<Vec<Option<CounterRun>>> = imps.iter().map(|_| Vec::new()).collect();
        for rep in 0..reps {
            for k in 0..imps.len() {
                let i = (k + rep) % imps.len();
                let run = run_counter(imps[i], p, n);
                if let Err(e) = &run {
                    println!("  {:<8} round {rep} failed: {e}", imps[i]);
                }
                runs[i].push(run.ok());
            }
        }
        println!(
            "  {:<8} {:>10} {:>7} {:>6} {:>10} {:>10} {:>8} {:>9}",
            "impl", "ops/s", "x raw", "lost", "wait p50", "wait p99", "streak", "handover"
        );
        for (i, imp) in imps.iter().enumerate() {
            let ok: Vec<&CounterRun> = runs[i].iter().flatten().collect();
            if ok.len() < reps {
                report.target(
                    format!("P={p} {imp}: 0 lost updates (final count and log)"),
                    "run failed",
                    false,
                );
                if ok.is_empty() {
                    continue;
                }
            }
            let ratios: Vec<f64> = (0..reps)
                .filter_map(|r| {
                    Some(runs[i][r].as_ref()?.ops_per_s / runs[0][r].as_ref()?.ops_per_s)
                })
                .collect();
            let ratio = median(&ratios);
            let ops = median(&ok.iter().map(|r| r.ops_per_s).collect::<Vec<_>>());
            let lost: i64 = ok.iter().map(|r| r.lost).sum();
            let waits = sorted(ok.iter().flat_map(|r| r.waits.iter().copied()).collect());
            let streak = ok.iter().map(|r| r.streak).max().unwrap_or(0);
            let handover = ok.iter().map(|r| r.handover).sum::<f64>() / ok.len() as f64;
            let mut marks = report.target(
                format!("P={p} {imp}: 0 lost updates (final count and log)"),
                format!("{lost} lost"),
                lost == 0 && ok.iter().all(|r| r.log_ok),
            );
            if p == 4 && (*imp == "async" || *imp == "sync") {
                marks.push(' ');
                marks.push_str(&report.target(
                    format!("P=4 {imp} throughput >= 0.7x raw flock"),
                    format!("{ratio:.2}x"),
                    ratio >= 0.7,
                ));
            }
            println!(
                "  {imp:<8} {ops:>10.0} {ratio:>6.2}x {lost:>6} {:>10} {:>10} {streak:>8} {:>8.1}%  {marks}",
                fmt_ns(pct(&waits, 50.0)),
                fmt_ns(pct(&waits, 99.0)),
                handover * 100.0,
            );
        }
        if cfg.python.is_none() {
            println!("  python   skipped: python3 cannot import filelock");
        }
    }
    println!("\n  streak = longest run of consecutive acquisitions by one process; handover = share of acquisitions");
    println!("  taken by another process than the previous one (100% = strict alternation)");
    Ok(())
}

fn run_counter(imp: &str, p: usize, n: u64) -> Res<CounterRun> {
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join("counter.txt"), "0")?;
    File::create(dir.path().join("order.log"))?;
    let mut procs = Vec::new();
    for id in 0..p {
        let args: [OsString; 3] = [
            dir.path().into(),
            n.to_string().into(),
            id.to_string().into(),
        ];
        let cmd = if imp == "python" {
            python_cmd(&py_counter(), args)
        } else {
            let mut cmd = worker_cmd(["counter", imp]);
            cmd.args(args);
            cmd
        };
        procs.push(Proc::spawn(format!("counter {imp} worker {id}"), cmd)?);
    }
    for proc in &procs {
        proc.expect("ready", Duration::from_secs(30))?;
    }
    for proc in &mut procs {
        proc.send("go")?;
    }
    let (mut start, mut end) = (u64::MAX, 0u64);
    for proc in &procs {
        let words = proc.expect("done", Duration::from_secs(300))?;
        start = start.min(words[0].parse()?);
        end = end.max(words[1].parse()?);
    }
    for proc in procs {
        proc.finish(Duration::from_secs(10))?;
    }
    let total = p as u64 * n;
    let count: i64 = fs::read_to_string(dir.path().join("counter.txt"))?
        .trim()
        .parse()?;
    let log: Vec<u64> = fs::read_to_string(dir.path().join("order.log"))?
        .lines()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let (mut streak, mut run, mut switches) = (0usize, 0usize, 0usize);
    for (i, pid) in log.iter().enumerate() {
        if i > 0 && log[i - 1] == *pid {
            run += 1;
        } else {
            if i > 0 {
                switches += 1;
            }
            run = 1;
        }
        streak = streak.max(run);
    }
    let mut waits = Vec::new();
    for id in 0..p {
        for line in fs::read_to_string(dir.path().join(format!("waits-{id}.txt")))?.lines() {
            waits.push(line.parse::<f64>()?);
        }
    }
    Ok(CounterRun {
        ops_per_s: total as f64 / ((end.saturating_sub(start)) as f64 / 1e9),
        lost: total as i64 - count,
        log_ok: log.len() as u64 == total,
        waits,
        streak,
        handover: switches as f64 / (log.len().max(2) - 1) as f64,
    })
}

/// The critical section of a counter worker.
fn increment(counter: &Path, log: &mut File, line: &[u8]) -> Res<()> {
    let value: u64 = fs::read_to_string(counter)?.trim().parse()?;
    fs::write(counter, (value + 1).to_string())?;
    log.write_all(line)?;
    Ok(())
}

fn counter_worker(imp: &str, dir: &Path, n: u64, id: &str) -> Res<()> {
    let lock_path = dir.join("counter.lock");
    let counter = dir.join("counter.txt");
    let mut log = File::options().append(true).open(dir.join("order.log"))?;
    let line = format!("{}\n", process::id()).into_bytes();
    let mut waits = Vec::with_capacity(n as usize);
    println!("ready");
    read_command()?;
    let start = now_ns();
    match imp {
        "raw" => {
            for _ in 0..n {
                let t = Instant::now();
                let file = open_rw(&lock_path)?;
                file.lock()?;
                waits.push(t.elapsed());
                increment(&counter, &mut log, &line)?;
                file.unlock()?;
                drop(file);
            }
        }
        "async" => {
            let lock = FileLock::new(&lock_path);
            future::block_on(async {
                for _ in 0..n {
                    let t = Instant::now();
                    let guard = lock.acquire().await?;
                    waits.push(t.elapsed());
                    increment(&counter, &mut log, &line)?;
                    drop(guard);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })?;
        }
        "sync" => {
            let lock = blocking::FileLock::new(&lock_path);
            for _ in 0..n {
                let t = Instant::now();
                let guard = lock.acquire()?;
                waits.push(t.elapsed());
                increment(&counter, &mut log, &line)?;
                drop(guard);
            }
        }
        other => return Err(format!("unknown counter impl {other}").into()),
    }
    let end = now_ns();
    let text: String = waits
        .iter()
        .map(|w| format!("{}\n", w.as_nanos()))
        .collect();
    fs::write(dir.join(format!("waits-{id}.txt")), text)?;
    println!("done {start} {end}");
    Ok(())
}

fn py_counter() -> String {
    format!(
        r#"
import os, sys, time
from filelock import FileLock
d, n, wid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = FileLock(os.path.join(d, "counter.lock"))
counter = os.path.join(d, "counter.txt")
log = os.open(os.path.join(d, "order.log"), os.O_WRONLY | os.O_APPEND)
line = b"%d\n" % os.getpid()
waits = []
print("ready", flush=True)
sys.stdin.readline()
start = {PY_NOW}
for _ in range(n):
    t = time.perf_counter_ns()
    lock.acquire()
    waits.append(time.perf_counter_ns() - t)
    with open(counter) as f:
        v = int(f.read().strip())
    with open(counter, "w") as f:
        f.write(str(v + 1))
    os.write(log, line)
    lock.release()
end = {PY_NOW}
with open(os.path.join(d, "waits-%s.txt" % wid), "w") as f:
    f.write("".join("%d\n" % w for w in waits))
print("done", start, end, flush=True)
"#
    )
}

// ---------------------------------------------------------------------------------------
// wakeup
// ---------------------------------------------------------------------------------------

#[cfg(not(target_os = "linux"))]
fn wakeup(_cfg: &Cfg, _report: &mut Report) -> Res<()> {
    println!("  not measured on this platform (needs CLOCK_MONOTONIC shared with Python and the process CPU clock)");
    Ok(())
}

#[cfg(target_os = "linux")]
fn wakeup(cfg: &Cfg, report: &mut Report) -> Res<()> {
    let trials = if cfg.quick { 12 } else { 50 };
    let mut imps = vec!["raw", "async", "async-smol", "sync"];
    if cfg.python.is_some() {
        imps.push("python");
    }
    println!(
        "  {trials} trials per waiter; the parent holds 50-100 ms (uniform), then releases (unlock + close)"
    );
    println!("  latency = waiter's CLOCK_MONOTONIC at acquire - parent's just before unlock; CPU = waiter's process CPU / wait");
    println!(
        "  {:<11} {:>10} {:>10} {:>10} {:>9}",
        "waiter", "median", "p99", "max", "CPU/wait"
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wakeup.lock");
    let mut raw_median = f64::NAN;
    for imp in imps {
        let (lat, cpu_share) = match wakeup_one(imp, &path, trials) {
            Ok(r) => r,
            Err(e) => {
                println!("  {imp:<11} failed: {e}");
                continue;
            }
        };
        let lat = sorted(lat);
        let med = pct(&lat, 50.0);
        let mut marks = String::new();
        if imp == "raw" {
            raw_median = med;
        } else if imp != "python" {
            let ok = med <= 2.0 * raw_median && med < 1e6;
            marks.push_str(&report.target(
                format!("wake-up {imp}: median <= 2x blocked thread and < 1 ms"),
                format!("{} ({:.1}x)", fmt_ns(med), med / raw_median),
                ok,
            ));
            marks.push(' ');
            marks.push_str(&report.target(
                format!("wake-up {imp}: waiter CPU < 1% of the wait"),
                format!("{:.3}%", cpu_share * 100.0),
                cpu_share < 0.01,
            ));
        }
        println!(
            "  {imp:<11} {:>10} {:>10} {:>10} {:>8.3}%  {marks}",
            fmt_ns(med),
            fmt_ns(pct(&lat, 99.0)),
            fmt_ns(pct(&lat, 100.0)),
            cpu_share * 100.0
        );
    }
    if cfg.python.is_none() {
        println!("  python      skipped: python3 cannot import filelock");
    }
    println!("  raw = a thread blocked in File::lock (the kernel's limit); async = futures_lite::block_on; async-smol = smol::block_on");
    Ok(())
}

/// Latencies (ns) of each trial and the waiter's CPU time over its total wait.
#[cfg(target_os = "linux")]
fn wakeup_one(imp: &str, path: &Path, trials: usize) -> Res<(Vec<f64>, f64)> {
    let cmd = if imp == "python" {
        python_cmd(&py_wait(), [path])
    } else {
        let mut cmd = worker_cmd(["wait", imp]);
        cmd.arg(path);
        cmd
    };
    let mut waiter = Proc::spawn(format!("wakeup waiter {imp}"), cmd)?;
    waiter.expect("ready", Duration::from_secs(30))?;
    let (mut lat, mut cpu, mut wall) = (Vec::new(), 0u64, 0u64);
    for _ in 0..trials {
        let holder = open_rw(path)?;
        holder.lock()?;
        waiter.send("go")?;
        waiter.expect("waiting", Duration::from_secs(10))?;
        thread::sleep(Duration::from_millis(50 + fastrand::u64(0..50)));
        let released = now_ns();
        holder.unlock()?;
        drop(holder);
        let words = waiter.expect("acquired", Duration::from_secs(10))?;
        let acquired: u64 = words[0].parse()?;
        wall += words[1].parse::<u64>()?;
        cpu += words[2].parse::<u64>()?;
        lat.push(acquired.saturating_sub(released) as f64);
    }
    waiter.finish(Duration::from_secs(10))?;
    Ok((lat, cpu as f64 / wall.max(1) as f64))
}

#[cfg(target_os = "linux")]
fn wait_worker(imp: &str, path: &Path) -> Res<()> {
    let lock = FileLock::new(path);
    let sync_lock = blocking::FileLock::new(path);
    // Warm up: the first acquisition resolves the path and starts what the library starts.
    drop(future::block_on(lock.acquire())?);
    drop(smol::block_on(lock.acquire())?);
    drop(sync_lock.acquire()?);
    println!("ready");
    while read_command()?.is_some() {
        println!("waiting");
        let cpu0 = process_cpu_ns();
        let t = Instant::now();
        let acquired;
        match imp {
            "raw" => {
                let file = open_rw(path)?;
                file.lock()?;
                acquired = now_ns();
                file.unlock()?;
            }
            "async" => {
                let guard = future::block_on(lock.acquire())?;
                acquired = now_ns();
                drop(guard);
            }
            "async-smol" => {
                let guard = smol::block_on(lock.acquire())?;
                acquired = now_ns();
                drop(guard);
            }
            "sync" => {
                let guard = sync_lock.acquire()?;
                acquired = now_ns();
                drop(guard);
            }
            other => return Err(format!("unknown waiter {other}").into()),
        }
        let wall = t.elapsed().as_nanos();
        let cpu = process_cpu_ns() - cpu0;
        println!("acquired {acquired} {wall} {cpu}");
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn wait_worker(_imp: &str, _path: &Path) -> Res<()> {
    Err("the wakeup waiter runs on Linux only".into())
}

#[cfg(target_os = "linux")]
fn py_wait() -> String {
    format!(
        r#"
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
with lock:
    pass
print("ready", flush=True)
while sys.stdin.readline():
    print("waiting", flush=True)
    c0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    lock.acquire()
    a = {PY_NOW}
    c1 = time.process_time_ns()
    w = time.perf_counter_ns() - t0
    lock.release()
    print("acquired", a, w, c1 - c0, flush=True)
"#
    )
}

// ---------------------------------------------------------------------------------------
// tasks
// ---------------------------------------------------------------------------------------

fn tasks(cfg: &Cfg, report: &mut Report) -> Res<()> {
    let (ntasks, iters) = (1000u64, 10u64);
    let reps = if cfg.quick { 1 } else { 3 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tasks.lock");
    println!(
        "  {ntasks} tasks x {iters} acquisitions on one lock, one process; median of {reps} run(s), each a fresh process;"
    );
    println!("  runs interleaved; x raw = median of per-round ratios");
    println!("  raw = the same tasks taking open + blocking flock on the runtime's blocking pool (tokio spawn_blocking /");
    println!("        smol::unblock), unlock + close from the task; threads = {ntasks} OS threads in File::lock (reference)");
    println!(
        "  {:<6} {:<12} {:>10} {:>10} {:>7} {:>10}",
        "rt", "in section", "library", "raw", "x raw", "threads"
    );
    for rt in ["tokio", "smol"] {
        for inside in [false, true] {
            let what = if inside { "yield_now()" } else { "nothing" };
            // The thread line does not depend on the runtime: measured once per mode.
            let variants: &[&str] = if rt == "tokio" {
                &["lib", "raw", "threads"]
            } else {
                &["lib", "raw"]
            };
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
            let mut failure = None;
            'reps: for rep in 0..reps {
                for k in 0..variants.len() {
                    let i = (k + rep) % variants.len();
                    match run_tasks(rt, variants[i], inside, &path, ntasks, iters) {
                        Ok(t) => times[i].push(t),
                        Err(e) => {
                            failure = Some(format!("{}: {e}", variants[i]));
                            break 'reps;
                        }
                    }
                }
            }
            if let Some(e) = failure {
                println!("  {rt:<6} {what:<12} failed: {e}");
                report.target(
                    format!("1,000 tasks {rt}, {what} inside: <= 2x raw"),
                    "run failed",
                    false,
                );
                continue;
            }
            let ratios: Vec<f64> = (0..reps).map(|r| times[0][r] / times[1][r]).collect();
            let ratio = median(&ratios);
            let threads = times.get(2).map_or(String::new(), |t| fmt_ns(median(t)));
            let mark = report.target(
                format!("1,000 tasks {rt}, {what} inside: <= 2x raw"),
                format!("{ratio:.2}x"),
                ratio <= 2.0,
            );
            println!(
                "  {rt:<6} {what:<12} {:>10} {:>10} {ratio:>6.2}x {threads:>10}  {mark}",
                fmt_ns(median(&times[0])),
                fmt_ns(median(&times[1]))
            );
        }
    }
    attempts_per_acquire(cfg, &path, ntasks, iters, report)
}

/// Runs one tasks worker and returns its time in nanoseconds.
fn run_tasks(
    rt: &str,
    variant: &str,
    inside: bool,
    path: &Path,
    ntasks: u64,
    iters: u64,
) -> Res<f64> {
    let mut cmd = worker_cmd(["tasks", rt, variant, if inside { "1" } else { "0" }]);
    cmd.arg(path).arg(ntasks.to_string()).arg(iters.to_string());
    let proc = Proc::spawn(format!("tasks {rt} {variant}"), cmd)?;
    let words = proc.expect("elapsed", Duration::from_secs(120))?;
    proc.finish(Duration::from_secs(10))?;
    Ok(words[0].parse()?)
}

#[cfg(target_os = "linux")]
fn attempts_per_acquire(
    cfg: &Cfg,
    path: &Path,
    ntasks: u64,
    iters: u64,
    _report: &mut Report,
) -> Res<()> {
    let have_strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_strace {
        println!("  OS lock attempts per successful acquire: NOT MEASURED (strace is not installed; the count needs the library's instrumentation)");
        return Ok(());
    }
    println!("  OS lock attempts per successful acquire (strace -f -e trace=flock, separate traced runs of the library");
    println!("  line; an attempt is a LOCK_EX call, failed = EAGAIN; `foreign 300 ms` = another process holds the lock");
    println!("  for the first 300 ms of the run, so the tasks queue behind a holder they cannot see release):");
    // Every traced call stops the process (about 0.4 ms here): 2 acquisitions per task, not 10.
    let iters = iters.min(2);
    println!("  ({ntasks} tasks x {iters} acquisitions in these runs)");
    let cases: &[(bool, bool)] = if cfg.quick {
        &[(true, true)]
    } else {
        &[(false, false), (true, false), (true, true)]
    };
    for rt in ["tokio", "smol"] {
        for &(inside, foreign) in cases {
            let what = match (inside, foreign) {
                (false, _) => "nothing",
                (true, false) => "yield_now()",
                (true, true) => "yield, foreign 300 ms",
            };
            let log = tempfile::NamedTempFile::new()?;
            let holder = if foreign {
                let file = open_rw(path)?;
                file.lock()?;
                Some(file)
            } else {
                None
            };
            let mut child = Command::new("strace")
                .args(["-f", "-qq", "-e", "trace=flock", "-o"])
                .arg(log.path())
                .arg(env::current_exe()?)
                .args([
                    "__worker",
                    "tasks",
                    rt,
                    "lib",
                    if inside { "1" } else { "0" },
                ])
                .arg(path)
                .arg(ntasks.to_string())
                .arg(iters.to_string())
                .stdout(Stdio::null())
                .spawn()?;
            if let Some(file) = holder {
                thread::sleep(Duration::from_millis(300));
                file.unlock()?;
                drop(file);
            }
            let status = child.wait()?;
            if !status.success() {
                println!("    {rt:<6} {what:<22} traced run failed ({status}): NOT MEASURED (needs ptrace, or the library's instrumentation)");
                continue;
            }
            let (mut attempts, mut failed, mut unlocks) = (0u64, 0u64, 0u64);
            for line in fs::read_to_string(log.path())?.lines() {
                if line.contains("flock(") {
                    if line.contains("LOCK_UN") {
                        unlocks += 1;
                    } else if line.contains("LOCK_EX") || line.contains("LOCK_SH") {
                        attempts += 1;
                    }
                }
                if line.contains("EAGAIN") || line.contains("EWOULDBLOCK") {
                    failed += 1;
                }
            }
            let acquisitions = ntasks * iters;
            println!(
                "    {rt:<6} {what:<22} {:.4} attempts per acquire ({attempts} LOCK_EX, {failed} failed, {unlocks} LOCK_UN, {acquisitions} acquisitions)",
                attempts as f64 / acquisitions as f64
            );
        }
    }
    println!("    (raw: 1 blocking flock per acquire by construction; no target: the figure shows only the queue's head attempts)");
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn attempts_per_acquire(
    _cfg: &Cfg,
    _path: &Path,
    _ntasks: u64,
    _iters: u64,
    _report: &mut Report,
) -> Res<()> {
    println!("  OS lock attempts per successful acquire: not measured on this platform (needs strace; otherwise the library's instrumentation)");
    Ok(())
}

/// Checks mutual exclusion inside one process and counts the critical sections.
#[derive(Default)]
struct Inside {
    busy: AtomicBool,
    entered: AtomicU64,
    overlaps: AtomicU64,
}

impl Inside {
    fn enter(&self) {
        if self.busy.swap(true, Ordering::AcqRel) {
            self.overlaps.fetch_add(1, Ordering::Relaxed);
        }
        self.entered.fetch_add(1, Ordering::Relaxed);
    }
    fn leave(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

fn raw_lock_owned(path: PathBuf) -> io::Result<File> {
    let file = open_rw(&path)?;
    file.lock()?;
    Ok(file)
}

fn tasks_worker(
    rt: &str,
    variant: &str,
    inside_await: bool,
    path: &Path,
    ntasks: u64,
    iters: u64,
) -> Res<()> {
    let inside = Arc::new(Inside::default());
    let lock = FileLock::new(path);
    // Create the file before timing, without an OS lock call (strace counts those).
    drop(open_rw(path)?);
    let elapsed = match (rt, variant) {
        ("tokio", _) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let t = Instant::now();
            runtime.block_on(async {
                let mut handles = Vec::new();
                for _ in 0..ntasks {
                    let (lock, inside, path) = (lock.clone(), inside.clone(), path.to_path_buf());
                    let lib = variant == "lib";
                    handles.push(tokio::spawn(async move {
                        for _ in 0..iters {
                            if lib {
                                let guard = lock.acquire().await?;
                                inside.enter();
                                if inside_await {
                                    future::yield_now().await;
                                }
                                inside.leave();
                                drop(guard);
                            } else {
                                let p = path.clone();
                                let file = tokio::task::spawn_blocking(move || raw_lock_owned(p))
                                    .await??;
                                inside.enter();
                                if inside_await {
                                    future::yield_now().await;
                                }
                                inside.leave();
                                file.unlock()?;
                                drop(file);
                            }
                        }
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    }));
                }
                for handle in handles {
                    handle.await??;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })?;
            let elapsed = t.elapsed();
            drop(runtime);
            elapsed
        }
        ("smol", _) => {
            let ex = smol::LocalExecutor::new();
            let t = Instant::now();
            smol::block_on(ex.run(async {
                let mut tasks = Vec::new();
                for _ in 0..ntasks {
                    let (lock, inside, path) = (&lock, &inside, path);
                    let lib = variant == "lib";
                    tasks.push(ex.spawn(async move {
                        for _ in 0..iters {
                            if lib {
                                let guard = lock.acquire().await?;
                                inside.enter();
                                if inside_await {
                                    future::yield_now().await;
                                }
                                inside.leave();
                                drop(guard);
                            } else {
                                let p = path.to_path_buf();
                                let file = smol::unblock(move || raw_lock_owned(p)).await?;
                                inside.enter();
                                if inside_await {
                                    future::yield_now().await;
                                }
                                inside.leave();
                                file.unlock()?;
                                drop(file);
                            }
                        }
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    }));
                }
                for task in tasks {
                    task.await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }))?;
            t.elapsed()
        }
        (_, "threads") => {
            let t = Instant::now();
            thread::scope(|s| {
                let handles: Vec<_> = (0..ntasks)
                    .map(|_| {
                        let inside = &inside;
                        s.spawn(move || {
                            for _ in 0..iters {
                                let file = open_rw(path)?;
                                file.lock()?;
                                inside.enter();
                                if inside_await {
                                    thread::yield_now();
                                }
                                inside.leave();
                                file.unlock()?;
                            }
                            Ok::<_, io::Error>(())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("thread panicked"))
            })?;
            t.elapsed()
        }
        _ => return Err(format!("unknown tasks run {rt} {variant}").into()),
    };
    let entered = inside.entered.load(Ordering::Relaxed);
    let overlaps = inside.overlaps.load(Ordering::Relaxed);
    if entered != ntasks * iters || overlaps != 0 {
        return Err(format!(
            "{entered} critical sections ({} expected), {overlaps} overlapping",
            ntasks * iters
        )
        .into());
    }
    println!("elapsed {}", elapsed.as_nanos());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cancel
// ---------------------------------------------------------------------------------------

fn cancel(cfg: &Cfg, report: &mut Report) -> Res<()> {
    let n = 10_000u64;
    let settle_ms = if cfg.quick { 200 } else { 1000 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cancel.lock");
    let mut cmd = worker_cmd(["cancel"]);
    cmd.arg(&path).arg(n.to_string()).arg(settle_ms.to_string());
    let proc = Proc::spawn("cancel worker", cmd)?;
    let words = proc.expect("cancel", Duration::from_secs(120))?;
    proc.finish(Duration::from_secs(10))?;
    let v: std::collections::BTreeMap<&str, &str> =
        words.iter().filter_map(|w| w.split_once('=')).collect();
    let get = |k: &str| -> Res<f64> {
        Ok(v.get(k)
            .ok_or_else(|| format!("cancel worker did not report {k}"))?
            .parse()?)
    };
    println!(
        "  {n} acquisitions while another process holds the lock, waves of 1,000 concurrent futures (smol LocalExecutor),"
    );
    println!("  each dropped after 1 ms: half by Acquire::timeout, half by racing a 1 ms timer");
    println!(
        "  took {} in all; outcomes: {} timed out, {} dropped, {} acquired (must be 0), {} other errors",
        fmt_ns(get("elapsed")?),
        get("timeouts")?,
        get("dropped")?,
        get("acquired")?,
        get("errors")?
    );
    let bad_outcomes = get("acquired")? + get("errors")?;
    if v.contains_key("fds_before") {
        println!("  {:<34} {:>6} {:>8}", "(this process)", "fds", "threads");
        for (label, key) in [
            ("at start", "cold"),
            ("before (after warm-up)", "before"),
            ("right after the 10,000", "after"),
            ("after settling", "settled"),
            ("after the fresh acquire + release", "end"),
        ] {
            println!(
                "  {label:<34} {:>6} {:>8}",
                get(&format!("fds_{key}"))?,
                get(&format!("threads_{key}"))?
            );
        }
        let leaked_fds = get("fds_settled")? - get("fds_before")?;
        let leaked_threads = get("threads_settled")? - get("threads_before")?;
        let mark = report.target(
            "cancellation: zero leaked descriptors or threads",
            format!("{leaked_fds:+} fds, {leaked_threads:+} threads"),
            leaked_fds <= 0.0 && leaked_threads <= 0.0 && bad_outcomes == 0.0,
        );
        println!(
            "  leaked after settling ({settle_ms} ms): {leaked_fds:+} descriptors, {leaked_threads:+} threads  {mark}"
        );
    } else {
        println!("  descriptors and threads: not measured on this platform");
    }
    println!(
        "  fresh acquire once the holder leaves (release -> acquired): {} after the cancellations, {} in the control before them",
        fmt_ns(get("fresh")?),
        fmt_ns(get("control")?)
    );
    println!(
        "  (no target for this latency; compare it with the control and with the wakeup section)"
    );
    Ok(())
}

/// Holds the lock on command: `hold` -> `held`, `release` -> `released <ns>` (the instant
/// just before unlock + close on the shared clock).
fn hold_worker(path: &Path) -> Res<()> {
    let mut held = None;
    while let Some(cmd) = read_command()? {
        match cmd.as_str() {
            "hold" => {
                let file = open_rw(path)?;
                file.lock()?;
                held = Some(file);
                println!("held");
            }
            "release" => {
                let file = held.take().ok_or("release without hold")?;
                let released = now_ns();
                file.unlock()?;
                drop(file);
                println!("released {released}");
            }
            other => return Err(format!("unknown command {other}").into()),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn fds_threads() -> Option<(usize, usize)> {
    let fds = fs::read_dir("/proc/self/fd").ok()?.count();
    let threads = fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())?;
    Some((fds, threads))
}

#[cfg(not(target_os = "linux"))]
fn fds_threads() -> Option<(usize, usize)> {
    None
}

/// With the holder holding, acquires while the holder releases after 20 ms: the latency
/// from its release (its clock reading just before unlock) to our acquisition.
fn fresh_acquire(lock: &FileLock, holder: &mut Proc) -> Res<f64> {
    let (acquired, sent) = smol::block_on(future::zip(
        async {
            let guard = lock.acquire().await;
            let at = now_ns();
            guard.map(|g| (g, at))
        },
        async {
            smol::Timer::after(Duration::from_millis(20)).await;
            holder.send("release")
        },
    ));
    sent?;
    let (guard, at) = acquired?;
    drop(guard);
    let released: u64 = holder.expect("released", Duration::from_secs(10))?[0].parse()?;
    Ok(at.saturating_sub(released) as f64)
}

fn cancel_worker(path: &Path, n: u64, settle_ms: u64) -> Res<()> {
    let mut out = Vec::new();
    let snap = |key: &str, out: &mut Vec<String>| {
        if let Some((fds, threads)) = fds_threads() {
            out.push(format!("fds_{key}={fds}"));
            out.push(format!("threads_{key}={threads}"));
        }
    };
    snap("cold", &mut out);
    let lock = FileLock::new(path);
    drop(smol::block_on(lock.acquire())?);
    let mut holder = Proc::spawn("holder", {
        let mut cmd = worker_cmd(["hold"]);
        cmd.arg(path);
        cmd
    })?;
    holder.send("hold")?;
    holder.expect("held", Duration::from_secs(10))?;
    let control = fresh_acquire(&lock, &mut holder)?;

    holder.send("hold")?;
    holder.expect("held", Duration::from_secs(10))?;
    // Warm-up while held: one acquisition that times out.
    match smol::block_on(lock.acquire().timeout(Duration::from_millis(1))) {
        Err(e) if e.kind() == ErrorKind::Timeout => {}
        other => return Err(format!("warm-up: expected a timeout, got {other:?}").into()),
    }
    snap("before", &mut out);

    let timeouts = AtomicUsize::new(0);
    let dropped = AtomicUsize::new(0);
    let acquired = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let wave = 1000u64;
    let t = Instant::now();
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        for w in 0..n.div_ceil(wave) {
            let tasks: Vec<_> = (0..wave.min(n - w * wave))
                .map(|i| {
                    let (lock, timeouts, dropped, acquired, errors) =
                        (&lock, &timeouts, &dropped, &acquired, &errors);
                    ex.spawn(async move {
                        let outcome = if i % 2 == 0 {
                            Some(lock.acquire().timeout(Duration::from_millis(1)).await)
                        } else {
                            future::or(async { Some(lock.acquire().await) }, async {
                                smol::Timer::after(Duration::from_millis(1)).await;
                                None
                            })
                            .await
                        };
                        let counter = match outcome {
                            None => dropped,
                            Some(Ok(_guard)) => acquired,
                            Some(Err(e)) if e.kind() == ErrorKind::Timeout => timeouts,
                            Some(Err(_)) => errors,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
        }
    }));
    let elapsed = t.elapsed();
    drop(ex);
    snap("after", &mut out);
    thread::sleep(Duration::from_millis(settle_ms));
    snap("settled", &mut out);

    // The holder still holds: release it while a fresh acquisition waits.
    let fresh = fresh_acquire(&lock, &mut holder)?;
    holder.finish(Duration::from_secs(10))?;
    snap("end", &mut out);
    out.extend([
        format!("elapsed={}", elapsed.as_nanos()),
        format!("timeouts={}", timeouts.into_inner()),
        format!("dropped={}", dropped.into_inner()),
        format!("acquired={}", acquired.into_inner()),
        format!("errors={}", errors.into_inner()),
        format!("control={control}"),
        format!("fresh={fresh}"),
    ]);
    println!("cancel {}", out.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// heap
// ---------------------------------------------------------------------------------------

fn heap(cfg: &Cfg, _report: &mut Report) -> Res<()> {
    let k = if cfg.quick { 200 } else { 1000 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("heap.lock");
    let mut cmd = worker_cmd(["heap"]);
    cmd.arg(&path).arg(k.to_string());
    let proc = Proc::spawn("heap worker", cmd)?;
    let words = proc.expect("heap", Duration::from_secs(60))?;
    proc.finish(Duration::from_secs(10))?;
    let v: std::collections::BTreeMap<&str, f64> = words
        .iter()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let g = |k: &str| v.get(k).copied().unwrap_or(f64::NAN);
    println!("  pending acquire futures, each polled once while another open file holds the OS lock ({k} futures)");
    println!(
        "  {:<40} {:>12} {:>12} {:>8}",
        "", "live bytes", "allocated", "allocs"
    );
    println!(
        "  {:<40} {:>12.0} {:>12.0} {:>8.1}",
        "first waiter (queue head)",
        g("first_live"),
        g("first_bytes"),
        g("first_calls")
    );
    println!(
        "  {:<40} {:>12.1} {:>12.1} {:>8.2}",
        "each further waiter",
        g("more_live"),
        g("more_bytes"),
        g("more_calls")
    );
    println!(
        "  {:<40} {:>12.0}   (the future itself: {:.0} bytes, inline in the task that awaits it)",
        "still live after dropping all of them",
        g("leftover"),
        g("future_size")
    );
    println!(
        "  {:<40} {:>12.1} {:>12.1} {:>8.2}",
        "raw: a thread blocked in File::lock",
        g("thread_live"),
        g("thread_bytes"),
        g("thread_calls")
    );
    println!("  (the raw line is heap only: each such thread also has a stack, 2 MiB reserved by default; no target)");
    Ok(())
}

fn heap_worker(path: &Path, k: usize) -> Res<()> {
    let holder = open_rw(path)?;
    holder.lock()?;
    let lock = FileLock::new(path);
    // Warm-up: pending futures polled and dropped, and a timed-out acquisition.
    for _ in 0..3 {
        let mut f = lock.acquire();
        if future::block_on(future::poll_once(&mut f)).is_some() {
            return Err("acquired a lock held elsewhere".into());
        }
    }
    let _ = future::block_on(lock.acquire().timeout(Duration::from_millis(2)));
    let mut futures = Vec::with_capacity(k);
    let settle = || thread::sleep(Duration::from_millis(20));

    COUNTING.store(true, Ordering::SeqCst);
    let s0 = HeapStats::now();
    futures.push(lock.acquire());
    let ready = future::block_on(future::poll_once(futures.last_mut().unwrap())).is_some();
    settle();
    let s1 = HeapStats::now();
    for _ in 1..k {
        futures.push(lock.acquire());
        let _ = future::block_on(future::poll_once(futures.last_mut().unwrap()));
    }
    settle();
    let s2 = HeapStats::now();
    futures.clear(); // drops the futures, keeps the vector's buffer (allocated before counting)
    settle();
    let s3 = HeapStats::now();

    // Baseline: threads blocked in File::lock.
    let nthreads = 100;
    let t0 = HeapStats::now();
    let threads: Vec<_> = (0..nthreads)
        .map(|_| {
            let p = path.to_path_buf();
            thread::spawn(move || -> io::Result<()> {
                let file = open_rw(&p)?;
                file.lock()?;
                file.unlock()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let t1 = HeapStats::now();
    COUNTING.store(false, Ordering::SeqCst);
    holder.unlock()?;
    for t in threads {
        t.join().expect("thread panicked")?;
    }
    if ready {
        return Err("a future acquired a lock held elsewhere".into());
    }
    let more = (k - 1).max(1) as f64;
    println!(
        "heap future_size={} first_live={} first_bytes={} first_calls={} more_live={} more_bytes={} more_calls={} leftover={} thread_live={} thread_bytes={} thread_calls={}",
        std::mem::size_of::<async_filelock::Acquire>(),
        s1.live() - s0.live(),
        s1.bytes - s0.bytes,
        s1.calls - s0.calls,
        (s2.live() - s1.live()) as f64 / more,
        (s2.bytes - s1.bytes) as f64 / more,
        (s2.calls - s1.calls) as f64 / more,
        s3.live() - s0.live(),
        (t1.live() - t0.live()) as f64 / nthreads as f64,
        (t1.bytes - t0.bytes) as f64 / nthreads as f64,
        (t1.calls - t0.calls) as f64 / nthreads as f64,
    );
    Ok(())
}
