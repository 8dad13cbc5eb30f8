//! Leases and their fencing tokens when a holder stalls in the middle of taking the lease:
//! past its duration, a successor takes over; the stalled process must then neither hold the
//! lease beside the successor nor ever obtain a fence at or below one already handed out.

use std::time::Duration;

use async_filelock::SoftFileLease;

use crate::common::{lock_path, tmp, HANG};
use crate::roles::{ask, held, resume, spawn_holder, stop_at, wait_reached, Kind};

/// The lease duration of these scenarios: short, since each waits for one expiry.
const DURATION: Duration = Duration::from_millis(600);

fn lease(path: &std::path::Path) -> SoftFileLease {
    SoftFileLease::builder(path)
        .duration(DURATION)
        .timeout(HANG)
        .build()
        .expect("valid lease options")
}

fn millis() -> u64 {
    DURATION.as_millis() as u64
}

/// A holder stalled between creating its marker and advancing the fence is taken over once
/// its marker aged past the duration; when it resumes, its attempt must fail (the path no
/// longer names its marker), not report a hold beside the successor's.
#[test]
#[cfg_attr(
    windows,
    ignore = "Windows refuses to take over a live holder's open marker (see the crate docs)"
)]
fn a_holder_stalled_before_its_fence_is_superseded_not_doubled() {
    let dir = tmp();
    let path = lock_path(&dir, "stall.lock");
    let point = "lease.before-fence";
    let mut child = spawn_holder(Kind::Lease, &path, millis(), &stop_at(point, dir.path()));
    child.send("try");
    wait_reached(dir.path(), point);

    let successor = lease(&path);
    let guard = futures_lite::future::block_on(successor.acquire()).expect("take over");
    resume(dir.path(), point);
    assert_eq!(
        child.next_line(),
        "BUSY",
        "the stalled holder must not hold the lease beside its successor"
    );
    assert!(!guard.is_compromised(), "the successor keeps its lease");
    let successor_fence = guard.fence();
    guard.release().expect("release");

    // The lock is usable afterwards, and the fence still grows.
    let fence = held(&ask(&mut child, "try"));
    assert!(
        fence > successor_fence,
        "fence {fence} after the successor's {successor_fence}"
    );
    assert_eq!(ask(&mut child, "release"), "RELEASED");
}

/// A holder stalled after reading the fence counter, while two successors take the lease in
/// turn, must not roll the counter back when it resumes: every fence handed out after the
/// stall exceeds every fence before it.
#[test]
#[cfg_attr(
    windows,
    ignore = "Windows refuses to take over a live holder's open marker (see the crate docs)"
)]
fn a_holder_stalled_inside_the_fence_counter_never_rolls_it_back() {
    let dir = tmp();
    let path = lock_path(&dir, "rollback.lock");
    let point = "lease.fence-read";
    let mut stalled = spawn_holder(Kind::Lease, &path, millis(), &stop_at(point, dir.path()));
    stalled.send("try");
    wait_reached(dir.path(), point);

    // The first successor takes the expired lease over and lets go; the second holds.
    let lock = lease(&path);
    let first = futures_lite::future::block_on(lock.acquire()).expect("take over");
    let first_fence = first.fence();
    first.release().expect("release");
    let second = futures_lite::future::block_on(lock.acquire()).expect("acquire");
    let second_fence = second.fence();
    assert!(second_fence > first_fence);

    resume(dir.path(), point);
    assert_eq!(
        stalled.next_line(),
        "BUSY",
        "the stalled holder lost its turn"
    );
    second.release().expect("release");

    let fence = held(&ask(&mut stalled, "acquire"));
    assert!(
        fence > second_fence,
        "a fence handed out after {second_fence} must exceed it, got {fence}"
    );
    assert_eq!(ask(&mut stalled, "release"), "RELEASED");
    let last = futures_lite::future::block_on(lock.acquire()).expect("acquire");
    assert!(last.fence() > fence);
}
