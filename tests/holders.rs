//! Who holds a hard lock: a child process holds it, and the parent's `holders()`, and the
//! `WouldBlock` and `Timeout` errors it gets, name the child's pid and command line (on
//! Linux; elsewhere `holders()` is `None` and errors name nobody).

// Most of the helpers serve the Linux tests.
#![cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(unused))]

#[path = "common/child.rs"]
#[macro_use]
mod child;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_filelock::{blocking, ErrorKind, FileLock, Holder, RwFileLock};

use child::{arg, flag, read_line, say, Mode, Proc};
use common::{lock_path, tmp, Runtime};

/// The entry point of child processes; does nothing in a normal run.
#[test]
fn child_entry() {
    if std::env::var(child::ROLE_VAR).as_deref() == Ok("rw-hold") {
        rw_hold();
    } else {
        child::entry();
    }
}

/// Role `rw-hold` (PATH, WRITE): holds an `RwFileLock` for writing or reading; prints HELD,
/// waits for a line, releases, prints RELEASED.
fn rw_hold() {
    let lock = RwFileLock::new(PathBuf::from(arg("path")));
    let hold: Box<dyn Send> = if flag("write") {
        Box::new(futures_lite::future::block_on(lock.write()).expect("child: write"))
    } else {
        Box::new(futures_lite::future::block_on(lock.read()).expect("child: read"))
    };
    say("HELD");
    read_line();
    drop(hold);
    say("RELEASED");
}

const SHORT: Duration = Duration::from_millis(100);

fn holding_child(path: &Path, mode: Mode) -> Proc {
    let mut c = Proc::child(
        "hold",
        &[("path", &path), ("shared", &"0"), ("mode", &mode.name())],
    );
    c.expect("WAITING");
    c.expect("HELD");
    c
}

/// The child's test binary, as its command line names it.
fn exe_name() -> String {
    let exe = std::env::current_exe().unwrap();
    exe.file_name().unwrap().to_str().unwrap().to_owned()
}

fn assert_names_child(holders: &[Holder], child: &Proc, context: &dyn std::fmt::Debug) {
    assert_eq!(
        holders.len(),
        1,
        "{context:?}: {holders:?}; /proc/locks: {:?}",
        std::fs::read_to_string("/proc/locks")
    );
    assert_eq!(holders[0].pid(), child.id());
    let command = holders[0].command().expect("the child's command line");
    assert!(
        command.contains(&exe_name()) && command.contains(child::CHILD_TEST),
        "{command:?}"
    );
}

fn release(mut c: Proc) {
    c.send("release");
    c.expect("RELEASED");
    c.wait_success();
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn holders_names_a_child_holding_the_lock() {
    let dir = tmp();
    let path = lock_path(&dir, "held.lock");
    let lock = FileLock::new(&path);
    assert_eq!(lock.holders(), Some(Vec::new()), "no file yet");
    let c = holding_child(&path, Mode::Async(Runtime::BlockOn));
    assert_names_child(&lock.holders().unwrap(), &c, &"holders()");
    assert!(!lock.holders().unwrap()[0].is_shared());
    assert_names_child(
        &blocking::FileLock::new(&path).holders().unwrap(),
        &c,
        &"blocking holders()",
    );
    release(c);
    assert_eq!(lock.holders(), Some(Vec::new()), "released");
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn would_block_and_timeout_errors_name_the_holder() {
    let dir = tmp();
    let path = lock_path(&dir, "held.lock");
    let c = holding_child(&path, Mode::Blocking);
    let pid = c.id();
    let lock = FileLock::new(&path);

    let err = lock.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert_names_child(err.holders(), &c, &err);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "the lock on {path:?} is held elsewhere, by pid {pid}: "
        )),
        "{text}"
    );
    assert_eq!(
        err.holder(),
        Some(err.holders()[0].to_string().as_str()),
        "{err:?}"
    );

    for rt in common::RUNTIMES {
        let acquire = lock.acquire().timeout(SHORT);
        let err = rt.run(acquire).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{rt:?}");
        assert_names_child(err.holders(), &c, &err);
        let text = err.to_string();
        let start = "timed out after ";
        let held = format!(
            "waiting for the lock on {path:?} (held by pid {pid}: {})",
            err.holders()[0].command().unwrap()
        );
        assert!(text.starts_with(start) && text.ends_with(&held), "{text}");
    }

    let err = blocking::FileLock::new(&path)
        .acquire_timeout(SHORT)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_names_child(err.holders(), &c, &err);
    assert!(
        err.to_string().contains(&format!("(held by pid {pid}: ")),
        "{err}"
    );
    release(c);

    // Once the child let go, a waiter queued behind a holder in this process names nobody.
    let guard = lock.try_acquire().unwrap();
    let err = FileLock::new(&path).try_acquire().unwrap_err();
    assert!(err.holders().is_empty(), "{err:?}");
    drop(guard);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn rw_holders_are_the_readers_or_the_writer() {
    let dir = tmp();
    let path = lock_path(&dir, "data.db");
    let lock = RwFileLock::new(&path);
    for write in [true, false] {
        let mut c = Proc::child(
            "rw-hold",
            &[("path", &path), ("write", &if write { "1" } else { "0" })],
        );
        c.expect("HELD");
        let holders = lock.holders().unwrap();
        assert_names_child(&holders, &c, &"holders()");
        assert_eq!(holders[0].is_shared(), !write);
        assert_names_child(
            &blocking::RwFileLock::new(&path).holders().unwrap(),
            &c,
            &"blocking holders()",
        );
        let err = lock.try_write().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        assert_names_child(err.holders(), &c, &err);
        let err = futures_lite::future::block_on(lock.write().timeout(SHORT)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(
            err.to_string()
                .contains(&format!("(held by pid {}: ", c.id())),
            "{err}"
        );
        release(c);
    }
    assert_eq!(lock.holders(), Some(Vec::new()));
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[test]
fn elsewhere_nobody_is_named() {
    let dir = tmp();
    let path = lock_path(&dir, "held.lock");
    let c = holding_child(&path, Mode::Blocking);
    let lock = FileLock::new(&path);
    assert_eq!(lock.holders(), None);
    let err = lock.try_acquire().unwrap_err();
    assert!(err.holders().is_empty() && err.holder().is_none(), "{err}");
    release(c);
}
