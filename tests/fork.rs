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
