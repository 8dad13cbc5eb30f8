//! The soak run itself, shared by `examples/soak/main.rs` and `tests/soak.rs`.
//!
//! [`run`] starts the worker processes through a [`Spawner`] (the example runs itself again,
//! the test binary runs its own `soak_worker` test), lets them take one lock `holds` times
//! in all, then merges their logs and prints the verdict. [`worker`] is what a Rust worker
//! process does; Python workers run [`PY_WORKER`].
//!
//! Every hold reads a counter file, adds one and writes it back (an overlap loses an
//! update), and logs its interval: `CLOCK_MONOTONIC` nanoseconds taken just after the
//! acquisition returned and just before the release. The log of each process is its own file
//! of native-endian `u64` pairs (start, end), written when the process is done.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use async_filelock::{blocking, FileLock};

/// What a worker's errors become.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Makes the command that runs one Rust worker process with these arguments (the arguments
/// of [`worker`]).
pub type Spawner<'a> = &'a dyn Fn(&[OsString]) -> Command;

/// The line a worker prints once it is ready to start; it then waits for a line on stdin.
pub const READY: &str = "soak-ready";

/// The width of the counter file: the value in ASCII decimal, zero-padded, rewritten in
/// place so that a read never sees a truncated file.
const COUNTER_WIDTH: usize = 20;

/// How long the parent waits for all workers to report [`READY`].
const STARTUP: Duration = Duration::from_secs(60);

/// The usage text.
pub const USAGE: &str = "\
usage: soak [--holds N] [--workers SPEC] [--tasks K] [--threads K] [--no-python]
            [--python-poll SECS] [--timeout SECS]
  --holds N          holds of the lock in all, split evenly among the workers' tasks,
                     threads and Python processes (default 100000)
  --workers SPEC     processes per kind, e.g. tokio=2,smol=2,blocking=1,python=1 (the
                     default); kinds left out keep their default, 0 turns one off
  --tasks K          tasks per tokio or smol process (default 2)
  --threads K        threads per blocking process (default 2)
  --no-python        no Python filelock processes (same as python=0)
  --python-poll SECS Python filelock's poll_interval (default 0.001; its own default is 0.05)
  --timeout SECS     kill the workers and fail if they are not done by then (default: none)";

/// How one soak run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Holds of the lock in all.
    pub holds: u64,
    /// tokio worker processes (multi-thread runtime, 2 worker threads).
    pub tokio: usize,
    /// smol worker processes (one `smol::Executor` on one thread).
    pub smol: usize,
    /// Processes using `async_filelock::blocking::FileLock` from several threads.
    pub blocking: usize,
    /// Python filelock processes (used only when `python3` can import `filelock`).
    pub python: usize,
    /// Tasks per async process.
    pub tasks: usize,
    /// Threads per blocking process.
    pub threads: usize,
    /// Python filelock's `poll_interval`, in seconds.
    pub python_poll: f64,
    /// When to give up on the workers.
    pub timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            holds: 100_000,
            tokio: 2,
            smol: 2,
            blocking: 1,
            python: 1,
            tasks: 2,
            threads: 2,
            python_poll: 0.001,
            timeout: None,
        }
    }
}

impl Options {
    /// Reads the command-line arguments (without the program name). `Ok(None)`: help was
    /// asked for.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Option<Options>, String> {
        let mut o = Options::default();
        let mut args = args.iter().map(AsRef::as_ref);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value"))
                    .map(str::to_string)
            };
            match arg {
                "-h" | "--help" => return Ok(None),
                "--holds" => o.holds = number(&value(arg)?, arg)?,
                "--tasks" => o.tasks = number(&value(arg)?, arg)?,
                "--threads" => o.threads = number(&value(arg)?, arg)?,
                "--no-python" => o.python = 0,
                "--python-poll" => {
                    let v = value(arg)?;
                    o.python_poll = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .ok_or_else(|| {
                            format!("--python-poll: {v:?} is not a number of seconds")
                        })?;
                }
                "--timeout" => {
                    o.timeout = Some(Duration::from_secs(number(&value(arg)?, arg)?));
                }
                "--workers" => {
                    for part in value(arg)?.split(',').filter(|p| !p.is_empty()) {
                        let (kind, count) = part
                            .split_once('=')
                            .ok_or_else(|| format!("--workers: {part:?} is not KIND=COUNT"))?;
                        let count = number(count, arg)?;
                        match kind {
                            "tokio" => o.tokio = count,
                            "smol" => o.smol = count,
                            "blocking" => o.blocking = count,
                            "python" => o.python = count,
                            _ => {
                                return Err(format!(
                                "--workers: unknown kind {kind:?} (tokio, smol, blocking, python)"
                            ))
                            }
                        }
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if o.tasks == 0 || o.threads == 0 {
            return Err("--tasks and --threads must be at least 1".into());
        }
        Ok(Some(o))
    }
}

fn number<T: std::str::FromStr>(s: &str, name: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{name}: {s:?} is not a whole number"))
}

// ---------------------------------------------------------------------------------------
// The worker side.
// ---------------------------------------------------------------------------------------

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock every process of the machine shares (Python's
/// `time.monotonic_ns()` on Linux).
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn read_counter(file: &File) -> Res<u64> {
    let mut buf = [0; COUNTER_WIDTH];
    file.read_exact_at(&mut buf, 0)?;
    let text = std::str::from_utf8(&buf)?;
    Ok(text
        .parse()
        .map_err(|e| format!("counter file holds {text:?}: {e}"))?)
}

fn write_counter(file: &File, value: u64) -> Res<()> {
    file.write_all_at(format!("{value:0COUNTER_WIDTH$}").as_bytes(), 0)?;
    Ok(())
}

/// `holds` split into `parts` shares that differ by at most one.
fn split(holds: u64, parts: usize) -> Vec<u64> {
    let parts_u64 = parts as u64;
    (0..parts_u64)
        .map(|i| holds / parts_u64 + u64::from(i < holds % parts_u64))
        .collect()
}

/// One worker process: `ROLE LOCK COUNTER LOG HOLDS PARALLEL`, where ROLE is `tokio`,
/// `smol` or `blocking` and PARALLEL the number of tasks or threads that share HOLDS.
///
/// It opens the counter file, prints [`READY`], waits for a line on stdin, takes the lock
/// HOLDS times, and writes its log.
pub fn worker(args: &[OsString]) -> Res<()> {
    let [role, lock, counter, log, holds, parallel] = args else {
        return Err(format!("a worker takes 6 arguments, not {args:?}").into());
    };
    let holds: u64 = number(&role_str(holds)?, "HOLDS")?;
    let parallel: usize = number(&role_str(parallel)?, "PARALLEL")?;
    let shares = split(holds, parallel);
    let counter = Arc::new(OpenOptions::new().read(true).write(true).open(counter)?);
    let lock = Path::new(lock);

    let mut out = io::stdout().lock();
    writeln!(out, "{READY}")?;
    out.flush()?;
    drop(out);
    io::stdin().lock().read_line(&mut String::new())?;

    let logs = match role_str(role)?.as_str() {
        "tokio" => tokio_worker(FileLock::new(lock), &counter, &shares)?,
        "smol" => smol_worker(FileLock::new(lock), &counter, &shares)?,
        "blocking" => blocking_worker(blocking::FileLock::new(lock), &counter, &shares)?,
        other => return Err(format!("unknown worker role {other:?}").into()),
    };
    let mut bytes = Vec::with_capacity(holds as usize * 16);
    for [start, end] in logs.into_iter().flatten() {
        bytes.extend_from_slice(&start.to_ne_bytes());
        bytes.extend_from_slice(&end.to_ne_bytes());
    }
    fs::write(log, bytes)?;
    Ok(())
}

fn role_str(s: &OsStr) -> Res<String> {
    Ok(s.to_str()
        .ok_or_else(|| format!("{s:?} is not UTF-8"))?
        .to_string())
}

/// One task's holds: every hold spans an `.await` between reading and writing the counter.
async fn async_holds(lock: FileLock, counter: Arc<File>, holds: u64) -> Res<Vec<[u64; 2]>> {
    let mut log = Vec::with_capacity(holds as usize);
    for _ in 0..holds {
        let guard = lock.acquire().await?;
        let start = now_ns();
        let value = read_counter(&counter)?;
        futures_lite::future::yield_now().await;
        write_counter(&counter, value + 1)?;
        let end = now_ns();
        guard.release()?;
        log.push([start, end]);
    }
    Ok(log)
}

fn tokio_worker(lock: FileLock, counter: &Arc<File>, shares: &[u64]) -> Res<Vec<Vec<[u64; 2]>>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    runtime.block_on(async {
        let tasks: Vec<_> = shares
            .iter()
            .map(|&n| tokio::spawn(async_holds(lock.clone(), counter.clone(), n)))
            .collect();
        let mut logs = Vec::new();
        for task in tasks {
            logs.push(task.await??);
        }
        Ok(logs)
    })
}

fn smol_worker(lock: FileLock, counter: &Arc<File>, shares: &[u64]) -> Res<Vec<Vec<[u64; 2]>>> {
    let executor = smol::Executor::new();
    smol::block_on(executor.run(async {
        let tasks: Vec<_> = shares
            .iter()
            .map(|&n| executor.spawn(async_holds(lock.clone(), counter.clone(), n)))
            .collect();
        let mut logs = Vec::new();
        for task in tasks {
            logs.push(task.await?);
        }
        Ok(logs)
    }))
}

fn blocking_worker(
    lock: blocking::FileLock,
    counter: &Arc<File>,
    shares: &[u64],
) -> Res<Vec<Vec<[u64; 2]>>> {
    thread::scope(|scope| {
        let threads: Vec<_> = shares
            .iter()
            .map(|&holds| {
                let lock = lock.clone();
                scope.spawn(move || -> Res<Vec<[u64; 2]>> {
                    let mut log = Vec::with_capacity(holds as usize);
                    for _ in 0..holds {
                        let guard = lock.acquire()?;
                        let start = now_ns();
                        let value = read_counter(counter)?;
                        write_counter(counter, value + 1)?;
                        let end = now_ns();
                        guard.release()?;
                        log.push([start, end]);
                    }
                    Ok(log)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().map_err(|_| "a blocking thread panicked")?)
            .collect()
    })
}

/// A Python filelock worker: `python3 -c PY_WORKER LOCK COUNTER LOG HOLDS POLL`, with the same
/// handshake, counter format and log format as [`worker`].
pub const PY_WORKER: &str = r#"
import array, os, sys, time
from filelock import FileLock
lock_path, counter_path, log_path = sys.argv[1:4]
holds, poll = int(sys.argv[4]), float(sys.argv[5])
lock = FileLock(lock_path, poll_interval=poll)
now = time.monotonic_ns
log = array.array("Q")
fd = os.open(counter_path, os.O_RDWR)
print("soak-ready", flush=True)
sys.stdin.readline()
for _ in range(holds):
    lock.acquire()
    start = now()
    value = int(os.pread(fd, 20, 0))
    os.pwrite(fd, b"%020d" % (value + 1), 0)
    end = now()
    lock.release()
    log.append(start)
    log.append(end)
with open(log_path, "wb") as f:
    log.tofile(f)
"#;

// ---------------------------------------------------------------------------------------
// The parent side.
// ---------------------------------------------------------------------------------------

/// Python filelock's version, or why it cannot be used.
fn python_filelock() -> Result<String, String> {
    let out = Command::new("python3")
        .args(["-c", "import filelock; print(filelock.__version__)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3 cannot be run: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("no message").trim();
    Err(format!("python3 cannot import filelock ({last})"))
}

/// One worker process as the parent knows it.
struct Worker {
    name: String,
    /// Tasks, threads, or 1 for Python.
    parallel: usize,
    holds: u64,
    log: PathBuf,
    pid: u32,
    stdin: Option<ChildStdin>,
    exit: Option<(io::Result<ExitStatus>, Instant)>,
}

/// What a worker's reader and reaper threads tell the parent.
enum Msg {
    Ready,
    Exited(usize, io::Result<ExitStatus>, Instant),
}

/// What [`Workers::next`] reports.
enum Event {
    /// A worker printed [`READY`].
    Ready,
    /// This worker exited; its `exit` is set.
    Exited(usize),
}

/// The worker processes. Each is reaped by a thread of its own, which reports its exit, so
/// that waiting can end at a deadline; dropping this kills the ones still running and waits
/// for them.
struct Workers {
    list: Vec<Worker>,
    events: mpsc::Sender<Msg>,
    inbox: mpsc::Receiver<Msg>,
}

impl Workers {
    fn new() -> Workers {
        let (events, inbox) = mpsc::channel();
        Workers {
            list: Vec::new(),
            events,
            inbox,
        }
    }

    fn spawn(&mut self, mut worker: Worker, mut cmd: Command) -> Res<()> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", worker.name))?;
        let index = self.list.len();
        let stdout = child.stdout.take().expect("piped stdout");
        let events = self.events.clone();
        thread::spawn(move || {
            // A test binary prints its own chatter on the same stdout: look for the line.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(READY) {
                    let _ = events.send(Msg::Ready);
                }
            }
        });
        worker.pid = child.id();
        worker.stdin = child.stdin.take();
        let events = self.events.clone();
        thread::spawn(move || {
            let status = child.wait();
            let _ = events.send(Msg::Exited(index, status, Instant::now()));
        });
        self.list.push(worker);
        Ok(())
    }

    fn running(&self) -> bool {
        self.list.iter().any(|w| w.exit.is_none())
    }

    /// The next event, exits recorded; `None` once `deadline` passes.
    fn next(&mut self, deadline: Option<Instant>) -> Option<Event> {
        let msg = match deadline {
            Some(d) => self
                .inbox
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok()?,
            // `self.events` keeps the channel open.
            None => self.inbox.recv().expect("the channel stays open"),
        };
        Some(match msg {
            Msg::Ready => Event::Ready,
            Msg::Exited(i, status, at) => {
                self.list[i].exit = Some((status, at));
                Event::Exited(i)
            }
        })
    }

    /// Kills (SIGKILL) the workers that have not exited yet.
    fn kill_running(&self) {
        for w in self.list.iter().filter(|w| w.exit.is_none()) {
            if let Some(pid) = rustix::process::Pid::from_raw(w.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill_running();
        while self.running() {
            self.next(None);
        }
    }
}

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Holds asked for.
    pub holds: u64,
    /// Intervals that started before an earlier-starting one had ended.
    pub overlaps: u64,
    /// `holds` minus the final counter value (negative if the counter went past it).
    pub lost: i64,
    /// Whether every worker exited successfully and logged all its holds.
    pub workers_ok: bool,
}

impl Verdict {
    /// Whether the run found nothing wrong.
    pub fn passed(&self) -> bool {
        self.overlaps == 0 && self.lost == 0 && self.workers_ok
    }

    /// The last line of the report: `holds N overlaps K lost M`.
    pub fn line(&self) -> String {
        format!(
            "holds {} overlaps {} lost {}",
            self.holds, self.overlaps, self.lost
        )
    }
}

/// Runs the soak and writes its report to `out`, the [`Verdict::line`] last.
///
/// # Errors
///
/// Setting up (temporary directory, spawning, the start handshake) failed; the workers
/// started so far are killed. A worker that fails once started does not make this an
/// error: the verdict says so.
pub fn run(o: &Options, spawn: Spawner<'_>, out: &mut dyn Write) -> Res<Verdict> {
    let python = if o.python == 0 {
        writeln!(out, "python: skipped (no Python workers asked for)")?;
        0
    } else {
        match python_filelock() {
            Ok(version) => {
                writeln!(
                    out,
                    "python: filelock {version}, poll_interval {} s",
                    o.python_poll
                )?;
                o.python
            }
            Err(why) => {
                writeln!(out, "python: skipped, {why}; scripts/setup installs it")?;
                0
            }
        }
    };
    let dir = tempfile::Builder::new().prefix("soak-").tempdir()?;
    let lock = dir.path().join("soak.lock");
    let counter = dir.path().join("counter");
    fs::write(&counter, format!("{:0COUNTER_WIDTH$}", 0))?;

    // The processes, and how many holds each gets: an even share per task, thread or
    // Python process.
    let mut plan: Vec<(&str, usize, usize)> = Vec::new();
    for (kind, count, parallel) in [
        ("tokio", o.tokio, o.tasks),
        ("smol", o.smol, o.tasks),
        ("blocking", o.blocking, o.threads),
        ("python", python, 1),
    ] {
        plan.extend((0..count).map(|i| (kind, i, parallel)));
    }
    if plan.is_empty() {
        return Err("no workers: every kind is turned off".into());
    }
    let mut shares = split(o.holds, plan.iter().map(|p| p.2).sum()).into_iter();

    let mut workers = Workers::new();
    for (kind, i, parallel) in plan {
        let holds: u64 = shares.by_ref().take(parallel).sum();
        let name = format!("{kind}-{i}");
        let log = dir.path().join(format!("{name}.log"));
        let cmd = if kind == "python" {
            let mut cmd = Command::new("python3");
            cmd.arg("-c")
                .arg(PY_WORKER)
                .arg(&lock)
                .arg(&counter)
                .arg(&log);
            cmd.arg(holds.to_string()).arg(o.python_poll.to_string());
            cmd
        } else {
            spawn(&[
                kind.into(),
                lock.clone().into(),
                counter.clone().into(),
                log.clone().into(),
                holds.to_string().into(),
                parallel.to_string().into(),
            ])
        };
        let worker = Worker {
            name,
            parallel,
            holds,
            log,
            pid: 0,
            stdin: None,
            exit: None,
        };
        workers.spawn(worker, cmd)?;
    }

    // Start them together, once all are ready.
    let mut ready = 0;
    let startup = Instant::now() + STARTUP;
    while ready < workers.list.len() {
        match workers.next(Some(startup)) {
            Some(Event::Ready) => ready += 1,
            Some(Event::Exited(i)) => {
                let w = &workers.list[i];
                let status = match &w.exit {
                    Some((Ok(status), _)) => status.to_string(),
                    Some((Err(e), _)) => e.to_string(),
                    None => String::new(),
                };
                return Err(format!("{} ended before it was ready ({status})", w.name).into());
            }
            None => {
                return Err(format!(
                    "only {ready} of {} workers were ready after {STARTUP:?}",
                    workers.list.len()
                )
                .into())
            }
        }
    }
    let started = Instant::now();
    for w in &mut workers.list {
        let mut stdin = w.stdin.take().expect("piped stdin");
        writeln!(stdin, "go").map_err(|e| format!("cannot start {}: {e}", w.name))?;
    }

    let deadline = o.timeout.map(|t| started + t);
    let mut timed_out = false;
    while workers.running() {
        if workers.next(deadline.filter(|_| !timed_out)).is_none() {
            timed_out = true;
            workers.kill_running();
        }
    }
    let finished = workers
        .list
        .iter()
        .filter_map(|w| w.exit.as_ref().map(|e| e.1))
        .max()
        .unwrap_or(started);
    let secs = (finished - started).as_secs_f64();

    // Merge the logs.
    let mut workers_ok = !timed_out;
    let mut intervals: Vec<(u64, u64, usize)> = Vec::with_capacity(o.holds as usize);
    let mut lines = String::new();
    for (i, w) in workers.list.iter().enumerate() {
        let trouble = match &w.exit {
            Some((Ok(s), _)) if s.success() => None,
            Some((Ok(s), _)) => Some(format!("failed ({s})")),
            Some((Err(e), _)) => Some(format!("cannot be waited for ({e})")),
            None => Some("still running".to_string()),
        };
        let before = intervals.len();
        if let Ok(bytes) = fs::read(&w.log) {
            for pair in bytes.chunks_exact(16) {
                let start = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
                let end = u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
                intervals.push((start, end, i));
            }
        }
        let logged = (intervals.len() - before) as u64;
        workers_ok &= trouble.is_none() && logged == w.holds;
        let units = match (w.name.split('-').next(), w.parallel) {
            (Some("python"), _) => "1 thread".to_string(),
            (Some("blocking"), n) => format!("{n} threads"),
            (_, n) => format!("{n} tasks"),
        };
        let _ = write!(lines, "  {:<11} {:<10} {:>9} holds", w.name, units, logged);
        if logged != w.holds {
            let _ = write!(lines, " of {}", w.holds);
        }
        if let Some(trouble) = trouble {
            let _ = write!(lines, ", {trouble}");
        }
        lines.push('\n');
    }
    intervals.sort_unstable();

    // An interval overlaps when it starts before the latest end seen so far: the previous
    // interval's end, or an earlier one's that lasted longer.
    let mut overlaps = 0;
    let mut handovers = 0;
    let mut latest_end = 0;
    for (k, &(start, end, who)) in intervals.iter().enumerate() {
        if k > 0 {
            overlaps += u64::from(start < latest_end);
            handovers += u64::from(intervals[k - 1].2 != who);
        }
        latest_end = latest_end.max(end);
    }
    let count = read_counter(&File::open(&counter)?)?;
    let lost = o.holds as i64 - count as i64;

    writeln!(out, "workers ({} processes):", workers.list.len())?;
    write!(out, "{lines}")?;
    writeln!(
        out,
        "elapsed {secs:.2} s, {:.0} holds/s, {handovers} hand-overs between processes, \
         counter {count}",
        o.holds as f64 / secs
    )?;
    if timed_out {
        writeln!(
            out,
            "timed out after {} s: workers killed",
            o.timeout.unwrap_or_default().as_secs()
        )?;
    }
    let verdict = Verdict {
        holds: o.holds,
        overlaps,
        lost,
        workers_ok,
    };
    writeln!(out, "{}", verdict.line())?;
    Ok(verdict)
}
