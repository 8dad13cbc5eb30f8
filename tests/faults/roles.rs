//! Child-process roles of the fault suite, and the parent's side of them.
//!
//! Role `holder` (KIND, PATH, optional MILLIS, optional FAULT) takes one lock of a soft kind
//! on command. FAULT arms the crate's fault points in the child (it becomes the child's
//! `ASYNC_FILELOCK_FAULT`, see `src/fault.rs`), so a child can be killed or stopped at an
//! exact step of a protocol. Commands, one per line on stdin, each answered by one line:
//!
//! - `try`: one attempt; `HELD <n>` (n: the lease fence or the rw generation, else 0),
//!   `BUSY`, or `ERR <kind> <message>`;
//! - `acquire`: waits (with [`HANG`] as a hang detector) and answers like `try`;
//! - `release`: `RELEASED` or `ERR ...`;
//! - `compromise`: `INTACT` or `COMPROMISED <reason>` (leases and rw locks);
//! - `sleep`: sleeps for [`HANG`] (a hold's heartbeat goes on), then `SLEPT`.
//!
//! End of input ends the child.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_filelock::{
    Error, ErrorKind, LeaseCompromise, SoftFileLease, SoftFileLeaseGuard, SoftFileLock,
    SoftFileLockGuard, SoftRwLock, SoftRwReadGuard, SoftRwWriteGuard, StrictSoftFileLock,
    StrictSoftFileLockGuard,
};
use futures_lite::future::block_on;

use crate::child::{self, say, Proc, ROLE_VAR};
use crate::common::HANG;

/// Plays this process's role if it is one of the fault suite's; returns whether it was.
pub fn entry() -> bool {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return false;
    };
    match role.as_str() {
        "holder" => holder(),
        "cancel" => crate::cancel::role(),
        #[cfg(unix)]
        "nofile" => crate::fs::nofile_role(),
        #[cfg(unix)]
        "eintr" => crate::fs::eintr_role(),
        _ => return false,
    }
    true
}

/// The lock kinds the `holder` role takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Soft,
    /// A [`SoftFileLease`] whose duration is the MILLIS argument.
    Lease,
    Strict,
    /// A [`SoftRwLock`] reader or writer; its stale threshold is MILLIS (heartbeat: a third).
    RwRead,
    RwWrite,
}

impl Kind {
    /// Every kind, as the scenarios that cover them all iterate them.
    pub const ALL: [Kind; 5] = [
        Kind::Soft,
        Kind::Lease,
        Kind::Strict,
        Kind::RwRead,
        Kind::RwWrite,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Soft => "soft",
            Kind::Lease => "lease",
            Kind::Strict => "strict",
            Kind::RwRead => "rw-read",
            Kind::RwWrite => "rw-write",
        }
    }

    fn from_name(name: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or_else(|| panic!("unknown lock kind {name:?}"))
    }
}

/// A lock of one of the [`Kind`]s, as this process (parent or child) takes it.
#[derive(Debug)]
pub enum Lock {
    Soft(SoftFileLock),
    Lease(SoftFileLease),
    Strict(StrictSoftFileLock),
    Rw(SoftRwLock, bool),
}

/// A hold of a [`Lock`]; dropping it releases.
#[derive(Debug)]
pub enum Guard {
    Soft(SoftFileLockGuard),
    Lease(SoftFileLeaseGuard),
    Strict(StrictSoftFileLockGuard),
    Read(SoftRwReadGuard),
    Write(SoftRwWriteGuard),
}

impl Lock {
    /// The lock of `kind` at `path`; `millis` is the lease duration or rw stale threshold.
    pub fn new(kind: Kind, path: &Path, millis: u64) -> Lock {
        let span = Duration::from_millis(millis);
        match kind {
            Kind::Soft => Lock::Soft(SoftFileLock::new(path)),
            Kind::Lease => Lock::Lease(
                SoftFileLease::builder(path)
                    .duration(span)
                    .build()
                    .expect("valid lease options"),
            ),
            Kind::Strict => Lock::Strict(StrictSoftFileLock::new(path)),
            Kind::RwRead | Kind::RwWrite => Lock::Rw(
                SoftRwLock::builder(path)
                    .stale_threshold(span)
                    .heartbeat_interval(span / 3)
                    .backoff(async_filelock::Backoff::fixed(span / 10))
                    .build()
                    .expect("valid rw options"),
                kind == Kind::RwWrite,
            ),
        }
    }

    /// One attempt.
    pub fn try_acquire(&self) -> Result<Guard, Error> {
        Ok(match self {
            Lock::Soft(l) => Guard::Soft(l.try_acquire()?),
            Lock::Lease(l) => Guard::Lease(l.try_acquire()?),
            Lock::Strict(l) => Guard::Strict(l.try_acquire()?),
            Lock::Rw(l, false) => Guard::Read(l.try_read()?),
            Lock::Rw(l, true) => Guard::Write(l.try_write()?),
        })
    }

    /// Waits at most `limit`.
    pub fn acquire(&self, limit: Duration) -> Result<Guard, Error> {
        block_on(async {
            Ok(match self {
                Lock::Soft(l) => Guard::Soft(l.acquire().timeout(limit).await?),
                Lock::Lease(l) => Guard::Lease(l.acquire().timeout(limit).await?),
                Lock::Strict(l) => Guard::Strict(l.acquire().timeout(limit).await?),
                Lock::Rw(l, false) => Guard::Read(l.read().timeout(limit).await?),
                Lock::Rw(l, true) => Guard::Write(l.write().timeout(limit).await?),
            })
        })
    }
}

impl Guard {
    /// The lease fence or the rw generation; 0 for the other kinds.
    pub fn number(&self) -> u64 {
        match self {
            Guard::Lease(g) => g.fence(),
            Guard::Read(g) => g.generation(),
            Guard::Write(g) => g.generation(),
            Guard::Soft(_) | Guard::Strict(_) => 0,
        }
    }

    /// How the hold was lost, for the kinds that can lose one.
    pub fn compromise(&self) -> Option<LeaseCompromise> {
        match self {
            Guard::Lease(g) => g.compromise(),
            Guard::Read(g) => g.compromise(),
            Guard::Write(g) => g.compromise(),
            Guard::Soft(_) | Guard::Strict(_) => None,
        }
    }

    /// Releases the hold, reporting errors.
    pub fn release(self) -> Result<(), Error> {
        match self {
            Guard::Soft(g) => g.release(),
            Guard::Lease(g) => g.release(),
            Guard::Strict(g) => g.release(),
            Guard::Read(g) => g.release(),
            Guard::Write(g) => g.release(),
        }
    }
}

/// The answer line for the result of an attempt.
fn answer(r: Result<Guard, Error>, held: &mut Option<Guard>) -> String {
    match r {
        Ok(g) => {
            let line = format!("HELD {}", g.number());
            *held = Some(g);
            line
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => "BUSY".into(),
        Err(e) => error_line(&e),
    }
}

fn error_line(e: &Error) -> String {
    // One line per answer.
    format!("ERR {:?} {e}", e.kind()).replace('\n', " ")
}

/// Role `holder`; see the module docs.
fn holder() {
    if let Ok(fault) = std::env::var(format!("{}FAULT", child::ARG_PREFIX)) {
        // Before the first fault point reads it; this process has no other threads yet.
        std::env::set_var("ASYNC_FILELOCK_FAULT", fault);
    }
    let kind = Kind::from_name(&child::arg("kind"));
    let path = PathBuf::from(child::arg("path"));
    let millis = std::env::var(format!("{}MILLIS", child::ARG_PREFIX))
        .map(|m| m.parse().expect("MILLIS is a number"))
        .unwrap_or(1000);
    let lock = Lock::new(kind, &path, millis);
    let mut held: Option<Guard> = None;
    loop {
        let command = child::read_line();
        let line = match command.as_str() {
            "" => return,
            "try" => answer(lock.try_acquire(), &mut held),
            "acquire" => answer(lock.acquire(HANG), &mut held),
            "release" => match held.take().expect("release without a hold").release() {
                Ok(()) => "RELEASED".into(),
                Err(e) => error_line(&e),
            },
            "compromise" => match held.as_ref().and_then(Guard::compromise) {
                None => "INTACT".into(),
                Some(c) => format!("COMPROMISED {}", c.reason().as_str()),
            },
            "sleep" => {
                // Keeps the process (and a hold's heartbeat) alive without reading stdin.
                std::thread::sleep(HANG);
                "SLEPT".into()
            }
            other => panic!("holder: unknown command {other:?}"),
        };
        say(&line);
    }
}

// ---------------------------------------------------------------------------------------------
// The parent's side.

/// A child playing `holder` for `kind` at `path`, with fault points armed by `fault` ("" for
/// none) and `millis` as its lease duration or stale threshold.
pub fn spawn_holder(kind: Kind, path: &Path, millis: u64, fault: &str) -> Proc {
    let millis = millis.to_string();
    let kind = kind.name();
    let mut args: Vec<(&str, &dyn AsRef<std::ffi::OsStr>)> =
        vec![("kind", &kind), ("path", &path), ("millis", &millis)];
    if !fault.is_empty() {
        args.push(("fault", &fault));
    }
    Proc::child("holder", &args)
}

/// Sends `command` to a holder child and returns its answer.
pub fn ask(proc: &mut Proc, command: &str) -> String {
    proc.send(command);
    proc.next_line()
}

/// The fence or generation of a `HELD <n>` answer; panics on any other answer.
#[track_caller]
pub fn held(answer: &str) -> u64 {
    answer
        .strip_prefix("HELD ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected HELD <n>, got {answer:?}"))
}

/// Waits until a child stopped by `<point>=wait:<dir>` reached the point.
pub fn wait_reached(dir: &Path, point: &str) {
    let reached = dir.join(format!("{point}.reached"));
    let start = Instant::now();
    while !reached.exists() {
        assert!(start.elapsed() < HANG, "the child never reached {point}");
        // Polling for a file with a bound: a hang detector, not a way to order steps.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lets a child stopped at `point` go on.
pub fn resume(dir: &Path, point: &str) {
    std::fs::write(dir.join(format!("{point}.go")), b"").expect("write the go file");
}

/// The `wait:` fault spec for `point` in `dir`.
pub fn stop_at(point: &str, dir: &Path) -> String {
    format!("{point}=wait:{}", dir.display())
}
