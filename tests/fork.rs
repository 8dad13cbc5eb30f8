//! A child forked while a lock is held shares the lock's open file description. Dropping the
//! inherited guard in the child must neither unlock nor delete the parent's lock.

#![cfg(unix)]

mod common;
#[path = "common/inproc.rs"]
mod inproc;

use async_filelock::FileLock;
use inproc::{foreign_can_lock, isolated};

/// Forks; the child runs `child` and exits at once (without running the parent's destructors
/// or test harness), and the parent waits for it and returns its exit code.
fn fork_and_wait(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the test runs isolated on one test thread; the child only drops a guard (an
    // fstat-free close and a mutex the parent does not hold) and leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = child();
        // SAFETY: ends the child without unwinding into the parent's state.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid");
    assert!(libc::WIFEXITED(status), "the child did not exit normally");
    libc::WEXITSTATUS(status)
}

#[test]
fn a_forked_child_dropping_the_guard_leaves_the_parents_lock() {
    isolated(
        "a_forked_child_dropping_the_guard_leaves_the_parents_lock",
        || {
            let dir = common::tmp();
            for delete in [false, true] {
                let path = dir.path().join(format!("forked-{delete}.lock"));
                let lock = FileLock::builder(&path)
                    .delete_on_release(delete)
                    .build()
                    .expect("build");
                let mut guard = Some(lock.try_acquire().expect("acquire"));
                let code = fork_and_wait(|| guard.take().expect("guard").release().is_ok());
                assert_eq!(code, 0, "the child's release reported an error");
                assert!(
                    !foreign_can_lock(&path),
                    "the child's drop released the parent's lock (delete_on_release {delete})"
                );
                assert!(
                    path.exists(),
                    "the child's drop deleted the parent's lock file"
                );
                drop(guard);
                assert!(
                    foreign_can_lock(&path),
                    "the parent's own release must work"
                );
            }
        },
    );
}

/// A lock keeps its file open between holds. A child forked while that descriptor is idle
/// inherits it, and it shares the parent's open file description: locking through it would
/// join whatever hold the parent takes on it. The child must open its own.
#[test]
fn a_forked_child_does_not_lock_through_the_parents_idle_descriptor() {
    isolated(
        "a_forked_child_does_not_lock_through_the_parents_idle_descriptor",
        || {
            use std::io::{Read, Write};
            use std::os::unix::net::UnixStream;

            let dir = common::tmp();
            let path = dir.path().join("idle.lock");
            let lock = FileLock::new(&path);
            // Leaves the file open in the lock for the next hold.
            drop(lock.try_acquire().expect("acquire"));
            let (mut parent_end, mut child_end) = UnixStream::pair().expect("socketpair");
            // SAFETY: the test runs isolated on one test thread; the child takes and drops
            // the lock and talks over a socket, then leaves through `_exit`.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let ok = lock.try_acquire().is_ok_and(|guard| {
                    let told = child_end.write_all(b"H").is_ok();
                    let mut byte = [0];
                    let waited = child_end.read_exact(&mut byte).is_ok();
                    drop(guard);
                    told && waited
                });
                // SAFETY: ends the child without unwinding into the parent's state.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut byte = [0];
            parent_end
                .read_exact(&mut byte)
                .expect("the child holds the lock");
            let err = lock
                .try_acquire()
                .expect_err("the child holds the lock: the parent must not get it too");
            assert_eq!(err.kind(), async_filelock::ErrorKind::WouldBlock, "{err}");
            parent_end
                .write_all(b"R")
                .expect("tell the child to release");
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(waited, pid, "waitpid");
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the child could not take the free lock"
            );
            drop(
                lock.try_acquire()
                    .expect("free again once the child released it"),
            );
        },
    );
}
