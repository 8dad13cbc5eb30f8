//! Holders killed with `SIGKILL` at every step of each soft protocol. For each step, the
//! scenario checks the documented rule: a successor gets in at once when the dead holder's
//! record proves it dead, only after the expiry or stale threshold when the rule is a lease,
//! and never without `break_lock`/`force_break` when the rule is fail-closed — and then the
//! lock works again.

use std::path::Path;
use std::time::{Duration, Instant};

use async_filelock::{ErrorKind, SoftFileLock, StrictSoftFileLock};

use crate::child::assert_fails;
use crate::common::{lock_path, tmp, HANG};
use crate::roles::{ask, held, spawn_holder, Kind, Lock};

/// Lease duration and rw stale threshold of these scenarios.
const SPAN: Duration = Duration::from_millis(800);

fn span_millis() -> u64 {
    SPAN.as_millis() as u64
}

/// Starts a holder of `kind` armed to die at `point`, makes it try the lock, and waits until
/// it died by `SIGKILL`; returns its pid.
fn killed_at(kind: Kind, path: &Path, point: &str, command: &str) -> u32 {
    let mut child = spawn_holder(kind, path, span_millis(), &format!("{point}=kill"));
    child.send(command);
    let status = child.wait();
    assert_killed(status, point);
    child.id()
}

#[track_caller]
fn assert_killed(status: std::process::ExitStatus, point: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the child should have died at {point}: {status}"
        );
    }
    #[cfg(not(unix))]
    assert!(!status.success(), "the child should have died at {point}");
}

/// A holder of `kind` that took the lock and was then killed, leaving its record behind.
fn killed_holding(kind: Kind, path: &Path) {
    let mut child = spawn_holder(kind, path, span_millis(), "");
    held(&ask(&mut child, "acquire"));
    child.kill();
    child.wait();
}

/// Takes the lock in this process within [`HANG`], checks one more attempt from another
/// process is refused while held, and releases; returns how long the wait took.
fn successor_gets_in(kind: Kind, path: &Path) -> Duration {
    let lock = Lock::new(kind, path, span_millis());
    let start = Instant::now();
    let guard = lock
        .acquire(HANG)
        .unwrap_or_else(|e| panic!("the successor must get in: {e}"));
    let waited = start.elapsed();
    let mut rival = spawn_holder(exclusive(kind), path, span_millis(), "");
    assert_eq!(ask(&mut rival, "try"), "BUSY", "the successor holds alone");
    guard.release().expect("release");
    held(&ask(&mut rival, "try"));
    assert_eq!(ask(&mut rival, "release"), "RELEASED");
    waited
}

/// The kind that conflicts with every hold of `kind`.
fn exclusive(kind: Kind) -> Kind {
    match kind {
        Kind::RwRead => Kind::RwWrite,
        k => k,
    }
}

/// Names in the lock's directory other than the lock itself and its fence counter.
fn leftovers(path: &Path) -> Vec<String> {
    let base = path.file_name().unwrap().to_str().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != base && *n != format!("{base}.fence"))
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// SoftFileLock

/// Killed after creating its marker but before writing it: an empty marker is what a
/// writer shows while it writes, so it is held until `break_lock` (Python's rule).
#[test]
fn soft_killed_before_writing_its_marker_holds_until_broken() {
    let dir = tmp();
    let path = lock_path(&dir, "soft-created.lock");
    killed_at(Kind::Soft, &path, "soft.created", "try");
    assert_eq!(std::fs::read(&path).expect("the marker stays"), b"");

    let lock = SoftFileLock::new(&path);
    assert_fails(lock.try_acquire(), ErrorKind::WouldBlock, &path);
    let err = assert_fails(
        futures_lite::future::block_on(lock.acquire().timeout(SPAN)),
        ErrorKind::Timeout,
        &path,
    );
    assert!(
        err.to_string().contains("recorded no pid"),
        "the timeout says why the lock is held: {err}"
    );
    assert!(lock.break_lock().expect("break"), "break_lock removes it");
    successor_gets_in(Kind::Soft, &path);
    assert_eq!(leftovers(&path), Vec::<String>::new());
}

/// Killed after writing its marker: the record names a dead pid on this host, so the next
/// contender takes the lock over in its first attempt.
#[test]
fn soft_killed_after_writing_its_marker_is_taken_over_at_once() {
    let dir = tmp();
    let path = lock_path(&dir, "soft-written.lock");
    killed_at(Kind::Soft, &path, "soft.written", "try");
    let guard = SoftFileLock::new(&path)
        .try_acquire()
        .expect("a dead owner's marker is taken over in one attempt");
    drop(guard);
    successor_gets_in(Kind::Soft, &path);
    assert_eq!(leftovers(&path), Vec::<String>::new());
}

/// A breaker killed at either step of its exchange with a dead owner's marker: the next
/// contender still gets in. A breaker killed before its exchange leaves its own prepared
/// marker under its break name, which blocks nobody (nothing sweeps it either); after the
/// exchange nothing is left once the successor released.
#[test]
#[cfg_attr(
    windows,
    ignore = "Windows has no exchange: a breaker renames the marker aside"
)]
fn soft_breaker_killed_mid_exchange_leaves_the_lock_usable() {
    for point in ["soft.break.before-exchange", "soft.break.exchanged"] {
        let dir = tmp();
        let path = lock_path(&dir, "soft-break.lock");
        killed_holding(Kind::Soft, &path);
        let breaker = killed_at(Kind::Soft, &path, point, "try");
        successor_gets_in(Kind::Soft, &path);
        let left = leftovers(&path);
        if point == "soft.break.before-exchange" {
            let prefix = format!("soft-break.lock.break.{breaker}.");
            assert!(
                left.len() == 1 && left[0].starts_with(&prefix),
                "only the dead breaker's prepared marker is left: {left:?}"
            );
        } else {
            assert_eq!(
                left,
                Vec::<String>::new(),
                "after a breaker killed at {point}"
            );
        }
    }
}

/// A live holder is never broken: a contender that finds a live owner's marker waits.
#[test]
fn soft_live_holder_is_never_broken() {
    let dir = tmp();
    let path = lock_path(&dir, "soft-live.lock");
    let mut holder = spawn_holder(Kind::Soft, &path, span_millis(), "");
    held(&ask(&mut holder, "acquire"));
    let lock = SoftFileLock::new(&path);
    assert_fails(
        futures_lite::future::block_on(lock.acquire().timeout(SPAN)),
        ErrorKind::Timeout,
        &path,
    );
    assert_eq!(ask(&mut holder, "release"), "RELEASED");
    successor_gets_in(Kind::Soft, &path);
}

// ---------------------------------------------------------------------------------------------
// SoftFileLease

/// Killed at any step after its record is written (before advancing the fence, or while
/// holding, at a heartbeat): the dead pid is proof, so a successor takes over at once,
/// without waiting out the lease.
#[test]
fn lease_killed_after_writing_its_record_is_taken_over_at_once() {
    for (point, command) in [
        ("soft.written", "try"),
        ("lease.before-fence", "try"),
        ("lease.fence-read", "try"),
        ("lease.heartbeat", "try"),
    ] {
        let dir = tmp();
        let path = lock_path(&dir, "lease-killed.lock");
        let mut child = spawn_holder(Kind::Lease, &path, span_millis(), &format!("{point}=kill"));
        child.send(command);
        if point == "lease.heartbeat" {
            // Held first; the first heartbeat kills it.
            held(&child.next_line());
            child.send("sleep");
        }
        assert_killed(child.wait(), point);
        let lock = Lock::new(Kind::Lease, &path, span_millis());
        let guard = lock
            .try_acquire()
            .unwrap_or_else(|e| panic!("a lease killed at {point} is taken over at once: {e}"));
        guard.release().expect("release");
        successor_gets_in(Kind::Lease, &path);
    }
}

/// A holder whose heartbeat stalls (the process lives, the lease is not refreshed) keeps
/// the lease until it expires, then loses it to a successor and reports the loss.
#[test]
#[cfg_attr(
    windows,
    ignore = "Windows refuses to take over a live holder's open marker (see the crate docs)"
)]
fn lease_with_a_stalled_heartbeat_expires_and_reports_the_loss() {
    let dir = tmp();
    let path = lock_path(&dir, "lease-stall.lock");
    // A longer lease, so that "not yet expired" holds on a loaded machine.
    let duration = Duration::from_secs(3);
    let point = "lease.heartbeat";
    let mut child = spawn_holder(
        Kind::Lease,
        &path,
        duration.as_millis() as u64,
        &crate::roles::stop_at(point, dir.path()),
    );
    held(&ask(&mut child, "acquire"));
    let lock = Lock::new(Kind::Lease, &path, duration.as_millis() as u64);
    assert_fails(lock.try_acquire(), ErrorKind::WouldBlock, &path);
    crate::roles::wait_reached(dir.path(), point);
    let guard = lock.acquire(HANG).expect("the stalled lease expires");
    crate::roles::resume(dir.path(), point);
    let start = Instant::now();
    loop {
        match ask(&mut child, "compromise").as_str() {
            "INTACT" => {}
            "COMPROMISED owner-changed" => break,
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(start.elapsed() < HANG, "the loss was never reported");
        // Polling the child's state with a bound: a hang detector, not a way to order steps.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        guard.compromise().is_none(),
        "the successor's lease is intact"
    );
    guard.release().expect("release");
}

// ---------------------------------------------------------------------------------------------
// StrictSoftFileLock

/// Killed before publishing anything: its private record is not a claim, so the next
/// contender gets in (and the record is reaped).
#[test]
fn strict_killed_before_publishing_does_not_block() {
    let dir = tmp();
    let path = lock_path(&dir, "strict-private.lock");
    killed_at(Kind::Strict, &path, "strict.private-written", "try");
    successor_gets_in(Kind::Strict, &path);
}

/// Killed with a published claim (intent only, or intent and held): strict locks fail
/// closed, so every contender waits until an operator force-breaks the dead claims.
#[test]
fn strict_killed_with_a_published_claim_holds_until_force_broken() {
    for point in ["strict.intent-published", "strict.held-linked"] {
        let dir = tmp();
        let path = lock_path(&dir, "strict-claim.lock");
        killed_at(Kind::Strict, &path, point, "try");
        let lock = StrictSoftFileLock::new(&path);
        assert_fails(lock.try_acquire(), ErrorKind::WouldBlock, &path);
        assert_fails(
            futures_lite::future::block_on(lock.acquire().timeout(SPAN)),
            ErrorKind::Timeout,
            &path,
        );
        let claims = lock.claims().expect("list claims");
        assert!(!claims.is_empty(), "the dead holder's claims are listed");
        for claim in &claims {
            lock.force_break(claim.name()).expect("force_break");
        }
        successor_gets_in(Kind::Strict, &path);
    }
}

// ---------------------------------------------------------------------------------------------
// SoftRwLock

/// A writer killed at either step of a commit: a successor (reader or writer) gets in, after
/// the dead member's record stayed unchanged for the stale threshold at the latest.
#[test]
fn rw_member_killed_mid_commit_is_evicted() {
    for point in ["rw.commit-written", "rw.commit-placed"] {
        for successor in [Kind::RwRead, Kind::RwWrite] {
            let dir = tmp();
            let path = lock_path(&dir, "rw-commit.lock");
            killed_at(Kind::RwWrite, &path, point, "try");
            successor_gets_in(successor, &path);
        }
    }
}

/// A reader or writer killed while holding blocks writers (and, a writer, readers) until
/// its record goes stale, and never longer than that plus the waiter's own polling.
#[test]
fn rw_holder_killed_while_holding_is_evicted_after_the_threshold() {
    for kind in [Kind::RwRead, Kind::RwWrite] {
        let dir = tmp();
        let path = lock_path(&dir, "rw-held.lock");
        killed_holding(kind, &path);
        let waited = successor_gets_in(Kind::RwWrite, &path);
        assert!(
            waited >= SPAN / 2,
            "a dead {kind:?} member's record must stay for the stale threshold, \
             the writer got in after {waited:?}"
        );
    }
}
