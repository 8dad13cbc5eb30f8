//! The fault-injection suite: holders killed at every step of each protocol, lock files
//! deleted or replaced under waiters and holders, full and read-only filesystems, signal storms,
//! descriptor exhaustion, hostile markers, and cancellation at every poll. Each scenario checks
//! that no two holders overlap, that the lock is usable afterwards, and that any error is typed
//! and names the path.
//!
//! Cross-process scenarios re-execute this test binary as child processes (see
//! `common/child.rs`); steps are ordered only by handshakes, and timeouts are hang detectors.

#[path = "../common/child.rs"]
#[macro_use]
mod child;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/inproc.rs"]
mod inproc;

/// The roles this binary's child processes play beyond those of `child::entry`.
mod roles;

mod cancel;
#[cfg(unix)]
mod fs;
mod kill;
mod lease;
#[cfg(unix)]
mod security;

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    if roles::entry() {
        return;
    }
    child::entry();
}
