//! Cost of taking and releasing a lock, next to the raw OS calls it is built on.
//!
//! Groups (each benchmark ID reads `group/variant`):
//!
//! - `uncontended/*`: acquire + release of a lock nobody else holds.
//!   - `raw_flock`: std only, `open(O_RDWR|O_CREAT|O_CLOEXEC)` + `flock(LOCK_EX|LOCK_NB)` +
//!     `flock(LOCK_UN)` + `close`: the floor every other line is compared with.
//!   - `raw_lib_syscalls` (Unix): the system calls one library acquisition makes, and nothing
//!     else (`open(O_NOFOLLOW|O_NONBLOCK|...)`, `fstat`, `flock`, `lstat`, `flock(LOCK_UN)`,
//!     `close`): what the library costs before any of its own bookkeeping.
//!   - `raw_fstat_after_lock` (Unix): the calls a cheaper design would make (one `fstat` on
//!     the locked descriptor, checking the link count, instead of `fstat` + `lstat(path)`).
//!   - `async_block_on`: `futures_lite::future::block_on(lock.acquire())`, guard dropped.
//!   - `async_in_one_block_on`: many acquire/release pairs awaited inside one `block_on`
//!     (the realistic async cost, without per-acquisition executor setup).
//!   - `try_acquire`: `FileLock::try_acquire` (one attempt on the calling thread).
//!   - `sync`: `blocking::FileLock::acquire`, guard dropped.
//! - `contended_try/*`: one failing attempt while another open file description of the same
//!   path holds the OS lock (taken with std's `File::lock`, so outside the crate's in-process
//!   queue).
//! - `handoff/*`: two tasks or threads on one lock, each acquiring and releasing in a loop;
//!   the time is per acquisition. The crate's in-process queue is FIFO, so its lines measure
//!   hand-offs only (release, wake the other party, its attempt). `raw_flock_threads` (two
//!   threads blocking in `flock(LOCK_EX)`) is not FIFO: a releasing thread may take the lock
//!   again before the woken one runs, and those cheap re-acquisitions lower its time per
//!   acquisition. After the run, the share of acquisitions that took the lock from the other
//!   party (a real hand-off) is printed for each line.
//! - `soft/*`: acquire + release of a soft lock (a marker file) nobody else holds.
//!   - `raw_create_excl`: std only, create the marker exclusively (`O_CREAT|O_EXCL`), write a
//!     record of the library's size, remove it, close: the floor of a soft lock.
//!   - `soft_async_block_on`, `soft_try_acquire`: `SoftFileLock`, guard dropped.
//!   - `lease_async_block_on`, `lease_try_acquire`: `SoftFileLease` (30 s duration), guard
//!     dropped: also advances the `.fence` counter and starts and stops the heartbeat thread.
//!
//!   `scripts/bench_python_soft.py` times Python filelock's `SoftFileLock` and
//!   `SoftFileLease` the same way, for comparison.
//! - `rw/*`: read or write acquire + release of a reader/writer lock nobody else holds.
//!   - `raw_flock_shared`: std only, `open` + `flock(LOCK_SH|LOCK_NB)` + unlock + close.
//!   - `raw_gate_and_data`: the same on two files, the floor of `RwFileLock`'s gate
//!     protocol (a reader opens and locks the gate and the data file).
//!   - `read_*`, `write_*`: `RwFileLock::read` / `write` under `block_on`, `try_read` /
//!     `try_write`, and the `blocking::RwFileLock` twins.
//!   - `soft_read_*`, `soft_write_*`: `SoftRwLock` (a generation-log commit in, one out,
//!     and a heartbeat thread started and stopped per hold).
//!
//!   `scripts/bench_python_soft.py` also times Python's `ReadWriteLock` (SQLite) and
//!   `SoftReadWriteLock` read and write cycles.
//!
//! After Criterion's benchmarks, the uncontended, `contended_try`, `soft` and `rw` variants are
//! measured once more, interleaved (a batch of each in turn, round after round), and printed
//! with their ratios to the group's raw loop taken within each round: on a busy machine those
//! ratios are far steadier than ratios between Criterion lines measured seconds apart.
//!
//! Run with `cargo bench --bench acquire` or `scripts/bench.sh`, which also prints the ratios
//! of the Criterion lines to `raw_flock`.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use async_filelock::{
    blocking, ErrorKind, FileLock, RwFileLock, SoftFileLease, SoftFileLock, SoftRwLock,
};
use criterion::{criterion_group, Criterion};
use futures_lite::future::block_on;

/// The raw loop: what a program calling `flock` by hand pays per acquisition.
fn raw_flock_once(path: &Path) {
    let file = open_rw(path);
    file.try_lock().expect("uncontended");
    file.unlock().expect("unlock");
    drop(black_box(file));
}

/// `open(O_RDWR|O_CREAT|O_CLOEXEC)` (std sets `O_CLOEXEC` itself).
fn open_rw(path: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open the lock file")
}

/// The system calls of one library acquisition and release on Unix, with none of its
/// bookkeeping (see `src/sys/unix.rs`).
#[cfg(unix)]
fn raw_lib_syscalls_once(path: &Path) {
    use rustix::fs::{Mode, OFlags};
    let flags =
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).expect("open");
    let st = rustix::fs::fstat(&fd).expect("fstat");
    let file = File::from(fd);
    file.try_lock().expect("uncontended");
    let now = rustix::fs::lstat(path).expect("lstat");
    assert_eq!((now.st_dev, now.st_ino), (st.st_dev, st.st_ino));
    file.unlock().expect("unlock");
    drop(black_box(file));
}

/// The system calls of one library acquisition and release on Unix with the lock file kept
/// open between holds (the default, `FileLockBuilder::keep_open`), with none of its
/// bookkeeping: `getpid` (may this process reuse the descriptor?), `flock`, `lstat` (does
/// the path still name it?), `getpid` (a forked child must not unlock), `flock(LOCK_UN)`,
/// and on Linux `fcntl(F_GETLK)` (does a waiter elsewhere need a close to wake up?).
#[cfg(unix)]
fn raw_kept_open_syscalls_once(file: &File, path: &Path) {
    black_box(std::process::id());
    file.try_lock().expect("uncontended");
    let now = rustix::fs::lstat(path).expect("lstat");
    black_box(now.st_ino);
    black_box(std::process::id());
    file.unlock().expect("unlock");
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Flock, FlockOffsetType, FlockType};
        let probe = Flock {
            start: 0,
            length: 0,
            pid: None,
            typ: FlockType::WriteLock,
            offset_type: FlockOffsetType::Set,
        };
        black_box(rustix::process::fcntl_getlk(file, &probe).expect("F_GETLK"));
    }
}

/// What the library's calls could be with the post-lock check done on the descriptor, as
/// Python filelock does: `open`, `flock`, one `fstat` (regular file? link count > 0?),
/// `flock(LOCK_UN)`, `close`.
#[cfg(unix)]
fn raw_fstat_after_lock_once(path: &Path) {
    use rustix::fs::{Mode, OFlags};
    let flags =
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).expect("open");
    let file = File::from(fd);
    file.try_lock().expect("uncontended");
    let st = rustix::fs::fstat(&file).expect("fstat");
    assert!(st.st_nlink > 0);
    file.unlock().expect("unlock");
    drop(black_box(file));
}

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("uncontended.lock");
    let lock = FileLock::new(&path);
    let sync_lock = blocking::FileLock::new(&path);
    // Create the file and resolve the lock once, so every variant measures the steady state.
    drop(lock.try_acquire().expect("first acquisition"));

    let mut g = c.benchmark_group("uncontended");
    g.bench_function("raw_flock", |b| b.iter(|| raw_flock_once(&path)));
    #[cfg(unix)]
    g.bench_function("raw_lib_syscalls", |b| {
        b.iter(|| raw_lib_syscalls_once(&path))
    });
    #[cfg(unix)]
    g.bench_function("raw_fstat_after_lock", |b| {
        b.iter(|| raw_fstat_after_lock_once(&path))
    });
    #[cfg(unix)]
    {
        let kept = open_rw(&path);
        g.bench_function("raw_kept_open_syscalls", |b| {
            b.iter(|| raw_kept_open_syscalls_once(&kept, &path))
        });
    }
    let reopening = FileLock::builder(&path)
        .keep_open(false)
        .build()
        .expect("build");
    g.bench_function("async_block_on_keep_open_false", |b| {
        b.iter(|| drop(black_box(block_on(reopening.acquire()).expect("acquire"))))
    });
    g.bench_function("async_block_on", |b| {
        b.iter(|| drop(black_box(block_on(lock.acquire()).expect("acquire"))))
    });
    g.bench_function("async_in_one_block_on", |b| {
        b.iter_custom(|iters| {
            block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(lock.acquire().await.expect("acquire")));
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("try_acquire", |b| {
        b.iter(|| drop(black_box(lock.try_acquire().expect("try_acquire"))))
    });
    g.bench_function("sync", |b| {
        b.iter(|| drop(black_box(sync_lock.acquire().expect("acquire"))))
    });
    g.finish();
}

fn contended_try(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("contended.lock");
    let lock = FileLock::new(&path);
    let sync_lock = blocking::FileLock::new(&path);
    drop(lock.try_acquire().expect("first acquisition"));
    // The holder: another open file description of the same file, locked through std, so the
    // crate's in-process queue knows nothing of it and every try makes its OS attempt.
    let holder = open_rw(&path);
    holder.lock().expect("hold the lock");

    let mut g = c.benchmark_group("contended_try");
    g.bench_function("raw_flock", |b| {
        b.iter(|| {
            let file = open_rw(&path);
            assert!(matches!(file.try_lock(), Err(TryLockError::WouldBlock)));
            drop(black_box(file));
        })
    });
    g.bench_function("async_try_acquire", |b| {
        b.iter(|| {
            let e = lock.try_acquire().expect_err("held elsewhere");
            assert_eq!(e.kind(), ErrorKind::WouldBlock);
            black_box(e)
        })
    });
    g.bench_function("sync_try_acquire", |b| {
        b.iter(|| {
            let e = sync_lock.try_acquire().expect_err("held elsewhere");
            assert_eq!(e.kind(), ErrorKind::WouldBlock);
            black_box(e)
        })
    });
    g.finish();
    holder.unlock().expect("unlock");
}

/// A record as long as the one a soft lock writes (`<pid>\n<host>\n<start token>\n`).
const RAW_RECORD: &[u8] =
    b"123456\nbench-host\n1073835049881293781025910551699810555211103140765235866536\n";

/// The floor of a soft lock: exclusive create, write the record, remove, close.
fn raw_create_excl_once(path: &Path) {
    use std::io::Write;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create the marker");
    file.write_all(RAW_RECORD).expect("write the record");
    std::fs::remove_file(path).expect("remove the marker");
    drop(black_box(file));
}

/// Soft locks and leases on their own paths, each acquired once so that every variant
/// measures the steady state.
struct SoftLocks {
    _dir: tempfile::TempDir,
    raw: std::path::PathBuf,
    soft: SoftFileLock,
    lease: SoftFileLease,
}

impl SoftLocks {
    fn new() -> SoftLocks {
        let dir = tempfile::tempdir().expect("temp dir");
        let soft = SoftFileLock::new(dir.path().join("soft.lock"));
        let lease = SoftFileLease::builder(dir.path().join("lease.lock"))
            .duration(Duration::from_secs(30))
            .build()
            .expect("lease options");
        drop(soft.try_acquire().expect("first acquisition"));
        drop(lease.try_acquire().expect("first acquisition"));
        SoftLocks {
            raw: dir.path().join("raw.lock"),
            _dir: dir,
            soft,
            lease,
        }
    }

    fn soft_async(&self) {
        drop(black_box(block_on(self.soft.acquire()).expect("acquire")));
    }

    fn soft_try(&self) {
        drop(black_box(self.soft.try_acquire().expect("try_acquire")));
    }

    fn lease_async(&self) {
        drop(black_box(block_on(self.lease.acquire()).expect("acquire")));
    }

    fn lease_try(&self) {
        drop(black_box(self.lease.try_acquire().expect("try_acquire")));
    }
}

/// The floor of a shared OS lock: open, lock shared without waiting, unlock, close.
fn raw_flock_shared_once(path: &Path) {
    let file = open_rw(path);
    file.try_lock_shared().expect("uncontended");
    file.unlock().expect("unlock");
    drop(black_box(file));
}

/// Reader/writer locks on their own paths, each acquired once so that every variant
/// measures the steady state.
struct RwLocks {
    _dir: tempfile::TempDir,
    raw: std::path::PathBuf,
    raw_gate: std::path::PathBuf,
    os: RwFileLock,
    sync: blocking::RwFileLock,
    soft: SoftRwLock,
}

impl RwLocks {
    fn new() -> RwLocks {
        let dir = tempfile::tempdir().expect("temp dir");
        let os = RwFileLock::new(dir.path().join("rw.db"));
        drop(os.try_write().expect("first acquisition"));
        let soft = SoftRwLock::new(dir.path().join("soft-rw.lock"));
        drop(soft.try_write().expect("first acquisition"));
        RwLocks {
            soft,
            raw: dir.path().join("raw.db"),
            raw_gate: dir.path().join("raw.db.gate"),
            sync: blocking::RwFileLock::from(os.clone()),
            os,
            _dir: dir,
        }
    }

    fn variants(&self) -> Vec<Batch<'_>> {
        vec![
            (
                "rw/raw_flock_shared",
                Box::new(|n| timed(n, || raw_flock_shared_once(&self.raw))),
            ),
            (
                "rw/raw_gate_and_data",
                Box::new(|n| {
                    timed(n, || {
                        raw_flock_shared_once(&self.raw_gate);
                        raw_flock_shared_once(&self.raw);
                    })
                }),
            ),
            (
                "rw/read_async_block_on",
                Box::new(|n| timed(n, || drop(black_box(block_on(self.os.read()).unwrap())))),
            ),
            (
                "rw/read_try",
                Box::new(|n| timed(n, || drop(black_box(self.os.try_read().unwrap())))),
            ),
            (
                "rw/read_sync",
                Box::new(|n| timed(n, || drop(black_box(self.sync.read().unwrap())))),
            ),
            (
                "rw/write_async_block_on",
                Box::new(|n| timed(n, || drop(black_box(block_on(self.os.write()).unwrap())))),
            ),
            (
                "rw/write_try",
                Box::new(|n| timed(n, || drop(black_box(self.os.try_write().unwrap())))),
            ),
            (
                "rw/write_sync",
                Box::new(|n| timed(n, || drop(black_box(self.sync.write().unwrap())))),
            ),
            (
                "rw/soft_read_async_block_on",
                Box::new(|n| timed(n, || drop(black_box(block_on(self.soft.read()).unwrap())))),
            ),
            (
                "rw/soft_write_async_block_on",
                Box::new(|n| timed(n, || drop(black_box(block_on(self.soft.write()).unwrap())))),
            ),
        ]
    }
}

fn rw(c: &mut Criterion) {
    let locks = RwLocks::new();
    let mut g = c.benchmark_group("rw");
    for (name, run) in locks.variants() {
        let id = name.trim_start_matches("rw/");
        g.bench_function(id, |b| b.iter_custom(&run));
    }
    g.finish();
}

fn soft(c: &mut Criterion) {
    let locks = SoftLocks::new();
    let mut g = c.benchmark_group("soft");
    g.bench_function("raw_create_excl", |b| {
        b.iter(|| raw_create_excl_once(&locks.raw))
    });
    g.bench_function("soft_async_block_on", |b| b.iter(|| locks.soft_async()));
    g.bench_function("soft_try_acquire", |b| b.iter(|| locks.soft_try()));
    g.bench_function("lease_async_block_on", |b| b.iter(|| locks.lease_async()));
    g.bench_function("lease_try_acquire", |b| b.iter(|| locks.lease_try()));
    g.finish();
}

/// Acquisitions and hand-offs (acquisitions that follow one by the other party) per
/// hand-off benchmark, summed over every sample.
static HANDOFFS: Mutex<BTreeMap<&'static str, (u64, u64)>> = Mutex::new(BTreeMap::new());

/// Who held the lock last, to count hand-offs from inside the critical section, and the start
/// gate of the two parties.
///
/// Once both parties have queued for the lock, the crate's FIFO queue forces strict
/// alternation: a releasing party that acquires again queues behind the other one. Before
/// that, a party whose task sits unpolled in an executor queue (an uncontended acquisition
/// never yields, so a task looping on one can keep its worker to itself), or whose thread is
/// not scheduled, would let the other party acquire alone. So party 0 takes the lock first and
/// keeps it until party 1 runs: party 1 then queues behind it in the same poll (or the same
/// few instructions on its thread) in which it signals.
struct Turns {
    /// Set by party 1 right before its first acquisition.
    started: AtomicBool,
    last: AtomicUsize,
    switches: AtomicUsize,
}

impl Turns {
    fn new() -> Arc<Turns> {
        Arc::new(Turns {
            started: AtomicBool::new(false),
            last: AtomicUsize::new(usize::MAX),
            switches: AtomicUsize::new(0),
        })
    }

    /// Party 1: about to acquire for the first time.
    fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// Party 0, while holding the lock before its loop: whether party 1 is running.
    fn other_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Called while holding the lock.
    fn enter(&self, me: usize) {
        let before = self.last.swap(me, Ordering::Relaxed);
        if before != me && before != usize::MAX {
            self.switches.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record(&self, name: &'static str, acquisitions: u64) {
        let switches = self.switches.load(Ordering::Relaxed) as u64;
        let mut stats = HANDOFFS.lock().unwrap();
        let entry = stats.entry(name).or_default();
        entry.0 += acquisitions;
        entry.1 += switches;
    }
}

/// Splits `iters` acquisitions between two parties.
fn split(iters: u64) -> [u64; 2] {
    [iters / 2, iters - iters / 2]
}

async fn async_party(lock: FileLock, me: usize, n: u64, turns: Arc<Turns>) {
    if me == 0 {
        let first = lock.acquire().await.expect("acquire");
        while !turns.other_started() {
            futures_lite::future::yield_now().await;
        }
        drop(first);
    } else {
        turns.start();
    }
    for _ in 0..n {
        let guard = lock.acquire().await.expect("acquire");
        turns.enter(me);
        drop(guard);
    }
}

/// Two threads running `party(me, n)`, timed from the moment both are ready.
fn on_two_threads(iters: u64, party: impl Fn(usize, u64) + Sync) -> Duration {
    let ready = Barrier::new(3);
    std::thread::scope(|s| {
        for (me, n) in split(iters).into_iter().enumerate() {
            let (ready, party) = (&ready, &party);
            s.spawn(move || {
                ready.wait();
                party(me, n);
            });
        }
        ready.wait();
        let start = Instant::now();
        // The scope joins both threads before it returns.
        start
    })
    .elapsed()
}

fn handoff(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("handoff.lock");
    let lock = FileLock::new(&path);
    drop(lock.try_acquire().expect("first acquisition"));

    let mut g = c.benchmark_group("handoff");
    // Kernel hand-off: two threads each opening the file and blocking in `flock(LOCK_EX)`.
    g.bench_function("raw_flock_threads", |b| {
        b.iter_custom(|iters| {
            let turns = Turns::new();
            let t = on_two_threads(iters, |me, n| raw_party(&path, me, n, &turns));
            turns.record("handoff/raw_flock_threads", iters);
            t
        })
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    g.bench_function("tokio_mt2", |b| {
        b.iter_custom(|iters| {
            let turns = Turns::new();
            let t = rt.block_on(async {
                let start = Instant::now();
                let [na, nb] = split(iters);
                let a = tokio::spawn(async_party(lock.clone(), 0, na, turns.clone()));
                let b = tokio::spawn(async_party(lock.clone(), 1, nb, turns.clone()));
                a.await.expect("task");
                b.await.expect("task");
                start.elapsed()
            });
            turns.record("handoff/tokio_mt2", iters);
            t
        })
    });
    drop(rt);
    let ex = smol::Executor::new();
    let (stop, stopped) = smol::channel::unbounded::<()>();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| block_on(ex.run(stopped.recv())));
        }
        g.bench_function("smol_2threads", |b| {
            b.iter_custom(|iters| {
                let turns = Turns::new();
                let start = Instant::now();
                let [na, nb] = split(iters);
                let a = ex.spawn(async_party(lock.clone(), 0, na, turns.clone()));
                let b = ex.spawn(async_party(lock.clone(), 1, nb, turns.clone()));
                block_on(async {
                    a.await;
                    b.await;
                });
                let t = start.elapsed();
                turns.record("handoff/smol_2threads", iters);
                t
            })
        });
        drop(stop);
    });
    let sync_lock = blocking::FileLock::from(lock.clone());
    g.bench_function("sync_threads", |b| {
        b.iter_custom(|iters| {
            let turns = Turns::new();
            let t = on_two_threads(iters, |me, n| {
                if me == 0 {
                    let first = sync_lock.acquire().expect("acquire");
                    while !turns.other_started() {
                        std::thread::yield_now();
                    }
                    drop(first);
                } else {
                    turns.start();
                }
                for _ in 0..n {
                    let guard = sync_lock.acquire().expect("acquire");
                    turns.enter(me);
                    drop(guard);
                }
            });
            turns.record("handoff/sync_threads", iters);
            t
        })
    });
    g.finish();
}

fn raw_party(path: &Path, me: usize, n: u64, turns: &Turns) {
    if me == 0 {
        let first = open_rw(path);
        first.lock().expect("lock");
        while !turns.other_started() {
            std::thread::yield_now();
        }
    } else {
        turns.start();
    }
    for _ in 0..n {
        let file = open_rw(path);
        file.lock().expect("lock");
        turns.enter(me);
        file.unlock().expect("unlock");
    }
}

fn print_handoffs() {
    let stats = HANDOFFS.lock().unwrap();
    if stats.is_empty() {
        return;
    }
    println!("\nhand-off share (acquisitions that took the lock from the other party):");
    for (name, (acquisitions, switches)) in stats.iter() {
        let pct = 100.0 * *switches as f64 / (*acquisitions).max(1) as f64;
        println!("  {name:<28} {pct:5.1}% of {acquisitions} acquisitions");
    }
}

/// One variant of the interleaved comparison: runs `n` operations and returns the time.
type Batch<'a> = (&'static str, Box<dyn Fn(u64) -> Duration + 'a>);

/// Times `n` runs of `op`.
fn timed(n: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed()
}

/// Runs the variants in turn, a batch of each per round, and prints each one's median time
/// per operation and its median ratio to the first variant *within the same round*.
///
/// Criterion measures one benchmark after another, so on a busy machine a ratio between two
/// of its lines can mix a quiet moment with a busy one. Here every round measures all
/// variants within a few milliseconds, and the per-round ratios cancel the drift.
fn interleaved(title: &str, rounds: usize, batch: u64, variants: &[Batch<'_>]) {
    let mut per_op = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        // Rotate the order so that no variant always runs right after the same one.
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let t = (variants[i].1)(batch);
            per_op[i].push(t.as_nanos() as f64 / batch as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{title}, interleaved ({rounds} rounds x {batch} ops; medians; ratio to {} in the same round)",
        variants[0].0
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        let ratios = (0..rounds).map(|r| per_op[i][r] / per_op[0][r]).collect();
        println!(
            "  {name:<36} {:>8.0} ns/op  {:>5.2}x",
            median(per_op[i].clone()),
            median(ratios),
        );
    }
}

/// The interleaved comparisons, run after Criterion's benchmarks in `cargo bench` (not in
/// `--test` or `--list` mode). `BENCH_INTERLEAVED_ROUNDS=0` skips them.
fn interleaved_all() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rounds = std::env::var("BENCH_INTERLEAVED_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(41);
    if rounds == 0 {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("interleaved.lock");
    let lock = FileLock::new(&path);
    let sync_lock = blocking::FileLock::new(&path);
    let reopening = FileLock::builder(&path)
        .keep_open(false)
        .build()
        .expect("build");
    drop(lock.try_acquire().expect("first acquisition"));
    #[cfg(unix)]
    let kept = open_rw(&path);
    let batch = 1000;

    let mut variants: Vec<Batch<'_>> = vec![(
        "uncontended/raw_flock",
        Box::new(|n| timed(n, || raw_flock_once(&path))),
    )];
    #[cfg(unix)]
    variants.extend([
        (
            "uncontended/raw_lib_syscalls",
            Box::new(|n| timed(n, || raw_lib_syscalls_once(&path))) as Box<dyn Fn(u64) -> _>,
        ),
        (
            "uncontended/raw_fstat_after_lock",
            Box::new(|n| timed(n, || raw_fstat_after_lock_once(&path))),
        ),
        (
            "uncontended/raw_kept_open_syscalls",
            Box::new(|n| timed(n, || raw_kept_open_syscalls_once(&kept, &path))),
        ),
    ]);
    variants.extend([
        (
            "uncontended/async_block_on",
            Box::new(|n| {
                timed(n, || {
                    drop(black_box(block_on(lock.acquire()).expect("acquire")))
                })
            }) as Box<dyn Fn(u64) -> _>,
        ),
        (
            "uncontended/async_in_one_block_on",
            Box::new(|n| {
                block_on(async {
                    let start = Instant::now();
                    for _ in 0..n {
                        drop(black_box(lock.acquire().await.expect("acquire")));
                    }
                    start.elapsed()
                })
            }),
        ),
        (
            "uncontended/async_block_on_keep_open_false",
            Box::new(|n| {
                timed(n, || {
                    drop(black_box(block_on(reopening.acquire()).expect("acquire")))
                })
            }),
        ),
        (
            "uncontended/try_acquire",
            Box::new(|n| timed(n, || drop(black_box(lock.try_acquire().expect("try"))))),
        ),
        (
            "uncontended/sync",
            Box::new(|n| timed(n, || drop(black_box(sync_lock.acquire().expect("acquire"))))),
        ),
    ]);
    interleaved("uncontended", rounds, batch, &variants);

    let holder = open_rw(&path);
    holder.lock().expect("hold the lock");
    let contended: Vec<Batch<'_>> = vec![
        (
            "contended_try/raw_flock",
            Box::new(|n| {
                timed(n, || {
                    let file = open_rw(&path);
                    assert!(matches!(file.try_lock(), Err(TryLockError::WouldBlock)));
                    drop(black_box(file));
                })
            }),
        ),
        (
            "contended_try/async_try_acquire",
            Box::new(|n| timed(n, || drop(black_box(lock.try_acquire().expect_err("held"))))),
        ),
        (
            "contended_try/sync_try_acquire",
            Box::new(|n| {
                timed(n, || {
                    drop(black_box(sync_lock.try_acquire().expect_err("held")));
                })
            }),
        ),
    ];
    interleaved("contended_try", rounds, batch, &contended);
    holder.unlock().expect("unlock");

    // Soft locks cost tens of microseconds and leases more: smaller batches, same rounds.
    let locks = SoftLocks::new();
    let soft: Vec<Batch<'_>> = vec![
        (
            "soft/raw_create_excl",
            Box::new(|n| timed(n, || raw_create_excl_once(&locks.raw))),
        ),
        (
            "soft/soft_async_block_on",
            Box::new(|n| timed(n, || locks.soft_async())),
        ),
        (
            "soft/soft_try_acquire",
            Box::new(|n| timed(n, || locks.soft_try())),
        ),
        (
            "soft/lease_async_block_on",
            Box::new(|n| timed(n, || locks.lease_async())),
        ),
        (
            "soft/lease_try_acquire",
            Box::new(|n| timed(n, || locks.lease_try())),
        ),
    ];
    interleaved("soft", rounds, 100, &soft);

    let locks = RwLocks::new();
    interleaved("rw", rounds, 100, &locks.variants());
}

criterion_group!(benches, uncontended, contended_try, handoff, soft, rw);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_handoffs();
    interleaved_all();
}
