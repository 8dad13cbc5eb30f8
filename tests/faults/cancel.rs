//! Cancellation at every await point of every acquire future: with the lock held by another
//! process, an acquisition of each kind is polled once, twice, … and dropped; afterwards this
//! process has no more descriptors than before, nothing of the cancelled attempts is left on
//! disk, and once the holder lets go another process gets the lock at once (nothing of this
//! process took it on the cancelled futures' behalf).
//!
//! The counts are taken in a child process that runs only this scenario, so that the other
//! tests of this binary, running in parallel, do not disturb them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_filelock::{
    Error, FileLock, SoftFileLease, SoftFileLock, SoftRwLock, StrictSoftFileLock,
};
use futures_lite::future::{block_on, poll_once};

use crate::child::{say, Proc};
use crate::common::{foreign_hold, lock_path, open_fds, tmp};
use crate::roles::{ask, held, spawn_holder, Kind};

/// The most polls an acquisition gets before it is dropped.
const MAX_POLLS: usize = 5;
/// The pause between polls: long enough for a retry timer and a pool attempt to run.
const PAUSE: Duration = Duration::from_millis(15);

type Acquisition<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// The acquisitions under test, each with how another process holds its lock.
#[derive(Debug, Clone, Copy)]
enum Target {
    Hard { shared: bool },
    Soft(Kind),
}

const TARGETS: [Target; 7] = [
    Target::Hard { shared: false },
    Target::Hard { shared: true },
    Target::Soft(Kind::Soft),
    Target::Soft(Kind::Lease),
    Target::Soft(Kind::Strict),
    Target::Soft(Kind::RwRead),
    Target::Soft(Kind::RwWrite),
];

/// The locks a target acquires through.
enum Locks {
    Hard(FileLock, bool),
    Soft(SoftFileLock),
    Lease(SoftFileLease),
    Strict(StrictSoftFileLock),
    Rw(SoftRwLock, bool),
}

impl Locks {
    fn new(target: Target, path: &Path) -> Locks {
        match target {
            Target::Hard { shared } => Locks::Hard(FileLock::new(path), shared),
            Target::Soft(Kind::Soft) => Locks::Soft(SoftFileLock::new(path)),
            Target::Soft(Kind::Lease) => Locks::Lease(
                SoftFileLease::builder(path)
                    .duration(Duration::from_secs(30))
                    .build()
                    .unwrap(),
            ),
            Target::Soft(Kind::Strict) => Locks::Strict(StrictSoftFileLock::new(path)),
            Target::Soft(kind) => Locks::Rw(
                SoftRwLock::builder(path)
                    .heartbeat_interval(Duration::from_secs(1))
                    .stale_threshold(Duration::from_secs(30))
                    .build()
                    .unwrap(),
                kind == Kind::RwWrite,
            ),
        }
    }

    fn acquire(&self) -> Acquisition<'_> {
        match self {
            Locks::Hard(l, false) => Box::pin(async { l.acquire().await.map(drop) }),
            Locks::Hard(l, true) => Box::pin(async { l.acquire_shared().await.map(drop) }),
            Locks::Soft(l) => Box::pin(async { l.acquire().await.map(drop) }),
            Locks::Lease(l) => Box::pin(async { l.acquire().await.map(drop) }),
            Locks::Strict(l) => Box::pin(async { l.acquire().await.map(drop) }),
            Locks::Rw(l, false) => Box::pin(async { l.read().await.map(drop) }),
            Locks::Rw(l, true) => Box::pin(async { l.write().await.map(drop) }),
        }
    }
}

/// Every file and directory under `dir`, but the records that legitimately change with each
/// hold (a lease's fence counter, a soft rw lock's generation snapshots).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".fence") || name == "gen" {
                continue;
            }
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// Another process's hold of `target`'s lock (a soft holder child, or for hard locks an OS
/// lock outside this crate's queue, which looks the same to it).
enum Holder {
    Hard(std::fs::File),
    Soft(Proc),
}

fn hold(target: Target, path: &Path) -> Holder {
    match target {
        Target::Hard { .. } => Holder::Hard(foreign_hold(path)),
        Target::Soft(kind) => {
            let kind = if kind == Kind::RwRead {
                Kind::RwWrite
            } else {
                kind
            };
            let mut child = spawn_holder(kind, path, 30_000, "");
            held(&ask(&mut child, "acquire"));
            Holder::Soft(child)
        }
    }
}

fn let_go(holder: Holder) -> Option<Proc> {
    match holder {
        Holder::Hard(file) => {
            drop(file);
            None
        }
        Holder::Soft(mut child) => {
            assert_eq!(ask(&mut child, "release"), "RELEASED");
            Some(child)
        }
    }
}

/// Open descriptors of this process, where the platform can count them (Linux's
/// `/proc/self/fd`; under Wine that would count the emulator's, so elsewhere: 0).
fn descriptors() -> usize {
    if cfg!(target_os = "linux") {
        open_fds()
    } else {
        0
    }
}

/// The scenario for one target, in a fresh directory.
fn cancel_at_every_poll(target: Target) {
    let dir = tmp();
    let path = lock_path(&dir, "cancel.lock");
    // One hold and release first creates what the protocol keeps between holds.
    let_go(hold(target, &path));
    let before = tree(dir.path());
    let holder = hold(target, &path);
    let while_held = tree(dir.path());
    let locks = Locks::new(target, &path);
    // A first cancelled acquisition sets up what this process keeps for all its locks (the
    // blocking pool, a watch descriptor); the count is taken after it.
    block_on(async {
        let mut acquisition = locks.acquire();
        assert!(poll_once(&mut acquisition).await.is_none());
    });
    let fds = descriptors();
    for polls in 1..=MAX_POLLS {
        block_on(async {
            let mut acquisition = locks.acquire();
            for _ in 0..polls {
                assert!(
                    poll_once(&mut acquisition).await.is_none(),
                    "{target:?}: acquired while held elsewhere"
                );
                async_io::Timer::after(PAUSE).await;
            }
        });
        assert!(
            descriptors() <= fds,
            "{target:?}: dropped after {polls} polls, {} descriptors open, {fds} before",
            descriptors()
        );
    }
    settled(dir.path(), &while_held, target);
    match let_go(holder) {
        // Another process gets the lock at once: nothing here holds it.
        Some(mut rival) => {
            held(&ask(&mut rival, "try"));
            assert_eq!(ask(&mut rival, "release"), "RELEASED");
        }
        // For a hard lock, an OS lock outside the crate stands for the other process.
        None => {
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.try_lock()
                .unwrap_or_else(|e| panic!("{target:?}: the OS lock is not free: {e}"));
        }
    }
    assert_eq!(
        tree(dir.path()),
        before,
        "{target:?}: the cancelled acquisitions left nothing behind"
    );
    assert!(
        descriptors() <= fds,
        "{target:?}: descriptors after the release"
    );
}

/// How long attempts abandoned on the blocking pool may take to finish (Windows).
const POOL_GRACE: Duration = Duration::from_secs(30);

/// Checks that the cancelled acquisitions withdrew everything they published: the tree is as
/// the holder alone made it.
///
/// Where attempts run inline (Unix), dropping the future withdrew its claim before the drop
/// returned, so this holds at once. Where they run on the blocking pool (Windows), an attempt
/// in flight when its future was dropped runs to its end, and what it returns (a published
/// claim, or a late success) is withdrawn or released as soon as it does, as the crate
/// documents; under Wine a soft rw attempt takes up to a second, so the check waits for
/// those attempts, a bounded time, before it requires the same.
fn settled(dir: &Path, while_held: &[PathBuf], target: Target) {
    let deadline = Instant::now() + POOL_GRACE;
    while cfg!(windows) && tree(dir) != while_held && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        tree(dir),
        while_held,
        "{target:?}: the cancelled acquisitions withdrew what they published"
    );
}

/// Role `cancel`: runs the scenario for every target in this process, prints DONE.
pub fn role() {
    for target in TARGETS {
        cancel_at_every_poll(target);
    }
    say("DONE");
}

#[test]
fn dropping_any_acquisition_after_any_poll_leaves_nothing() {
    let mut child = Proc::child("cancel", &[]);
    child.expect("DONE");
    child.wait_success();
}
