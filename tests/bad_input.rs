//! Bad lock paths: each is refused with the right `ErrorKind` at once (the lock's timeout is
//! 30 s; the error must come in well under 5 s, so nothing retries), the error names the path,
//! and nothing else on disk changes. Every way to ask is tried: the async methods under every
//! runtime, and the blocking wrappers.

mod common;
#[path = "common/inproc.rs"]
mod inproc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_filelock::{blocking, Error, ErrorKind, FileLock};
use common::{tmp, RUNTIMES};
use inproc::*;

/// The lock's own limit: a retry loop would run into it.
const PATIENT: Duration = Duration::from_secs(30);
/// The error must come well before that.
const PROMPT: Duration = Duration::from_secs(5);

type Outcome = (&'static str, Result<(), Error>, Duration);

/// One way to ask a blocking lock.
type BlockingCall = fn(&blocking::FileLock) -> Result<blocking::FileLockGuard, Error>;

/// Runs every kind of acquisition of `path` once (async under every runtime, and blocking)
/// and returns what each gave and how long it took.
fn every_acquisition(path: &Path) -> Vec<Outcome> {
    let mut out = Vec::new();
    for rt in RUNTIMES {
        let p = path.to_path_buf();
        out.extend(rt.run(async move {
            let lock = FileLock::builder(&p)
                .timeout(PATIENT)
                .build()
                .expect("build");
            let mut out: Vec<Outcome> = Vec::new();
            for (what, acq) in [
                ("acquire", lock.acquire()),
                ("acquire_shared", lock.acquire_shared()),
                ("acquire().timeout", lock.acquire().timeout(PATIENT)),
                (
                    "acquire_shared().timeout",
                    lock.acquire_shared().timeout(PATIENT),
                ),
            ] {
                let start = Instant::now();
                let r = no_hang(what, acq).await.map(drop);
                out.push((what, r, start.elapsed()));
            }
            let start = Instant::now();
            out.push(("try_acquire", lock.try_acquire().map(drop), start.elapsed()));
            let start = Instant::now();
            let r = lock.try_acquire_shared().map(drop);
            out.push(("try_acquire_shared", r, start.elapsed()));
            out
        }));
    }
    let lock = blocking::FileLock::builder(path)
        .timeout(PATIENT)
        .build()
        .expect("build");
    let calls: [(&str, BlockingCall); 6] = [
        ("blocking acquire", |l| l.acquire()),
        ("blocking acquire_shared", |l| l.acquire_shared()),
        ("blocking acquire_timeout", |l| l.acquire_timeout(PATIENT)),
        ("blocking acquire_shared_timeout", |l| {
            l.acquire_shared_timeout(PATIENT)
        }),
        ("blocking try_acquire", |l| l.try_acquire()),
        ("blocking try_acquire_shared", |l| l.try_acquire_shared()),
    ];
    for (what, call) in calls {
        let start = Instant::now();
        let r = call(&lock).map(drop);
        out.push((what, r, start.elapsed()));
        assert!(!lock.is_locked());
    }
    out
}

/// Every acquisition of `path` fails promptly with one of `kinds`, naming `path`, and the
/// tree under `watch` is left exactly as it was.
fn assert_rejected(path: &Path, kinds: &[ErrorKind], watch: Option<&Path>) {
    let before = watch.map(snapshot);
    for (what, r, took) in every_acquisition(path) {
        let err = r.expect_err(&format!("{what} on {path:?} should fail"));
        assert!(
            kinds.contains(&err.kind()),
            "{what} on {path:?}: {:?} is not one of {kinds:?} ({err})",
            err.kind()
        );
        assert!(
            took < PROMPT,
            "{what} on {path:?} took {took:?}: it retried"
        );
        assert_eq!(err.path(), Some(path), "{what}: {err}");
        assert!(
            err.to_string().contains(&format!("{path:?}")),
            "{what}: the message does not name the path: {err}"
        );
    }
    if let (Some(dir), Some(before)) = (watch, before) {
        assert_eq!(snapshot(dir), before, "something under {dir:?} changed");
    }
}

#[test]
fn a_directory_is_not_a_lock_file() {
    let dir = tmp();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::write(d.join("inside"), b"keep").expect("write");
    assert_rejected(&d, &[ErrorKind::NotAFile], Some(dir.path()));
    assert_rejected(dir.path(), &[ErrorKind::NotAFile], Some(dir.path()));
}

#[test]
fn the_empty_path_is_invalid() {
    assert_rejected(Path::new(""), &[ErrorKind::InvalidInput], None);
}

#[test]
fn a_nul_byte_is_invalid_and_creates_nothing() {
    let dir = tmp();
    std::fs::write(dir.path().join("a"), b"keep").expect("write");
    assert_rejected(
        &dir.path().join("a\0b.lock"),
        &[ErrorKind::InvalidInput],
        Some(dir.path()),
    );
    // In a directory component, where the parent would otherwise be created.
    assert_rejected(
        &dir.path().join("sub\0dir").join("x.lock"),
        &[ErrorKind::InvalidInput],
        Some(dir.path()),
    );
    assert_rejected(
        &dir.path().join("a").join("\0"),
        &[ErrorKind::InvalidInput],
        Some(dir.path()),
    );
}

#[test]
fn a_trailing_separator_is_invalid_and_creates_nothing() {
    let dir = tmp();
    std::fs::create_dir(dir.path().join("d")).expect("mkdir");
    let with_slash = |name: &str| -> PathBuf {
        let mut s = dir.path().join(name).into_os_string();
        s.push("/");
        PathBuf::from(s)
    };
    // Nothing there yet: neither a file nor a directory may appear.
    assert_rejected(
        &with_slash("x.lock"),
        &[ErrorKind::InvalidInput],
        Some(dir.path()),
    );
    assert_rejected(
        &with_slash("new/x.lock"),
        &[ErrorKind::InvalidInput],
        Some(dir.path()),
    );
    // An existing directory.
    assert_rejected(
        &with_slash("d"),
        &[ErrorKind::InvalidInput],
        Some(dir.path()),
    );
}

/// Missing parent directories are created, by every kind of acquisition.
#[test]
fn a_missing_parent_is_created() {
    let dir = tmp();
    let mut n = 0;
    for rt in RUNTIMES {
        for shared in [false, true] {
            n += 1;
            let path = dir.path().join(format!("r{n}")).join("a/b").join("x.lock");
            let p = path.clone();
            let start = Instant::now();
            rt.run(async move {
                let lock = FileLock::builder(&p)
                    .timeout(PATIENT)
                    .build()
                    .expect("build");
                let g = if shared {
                    lock.acquire_shared().await
                } else {
                    lock.acquire().await
                }
                .expect("the parent is created");
                assert_eq!(g.path(), p);
                assert!(!foreign_can_lock(&p), "really locked");
            });
            assert!(start.elapsed() < PROMPT);
            assert!(path.is_file(), "{path:?}");
            assert_free(&path);
        }
    }
    // try_acquire creates it too.
    let path = dir.path().join("try/a/x.lock");
    drop(FileLock::new(&path).try_acquire().expect("try_acquire"));
    assert!(path.is_file());
    // And the blocking wrappers.
    for (i, shared) in [false, true].into_iter().enumerate() {
        let path = dir.path().join(format!("blocking{i}/a/x.lock"));
        let lock = blocking::FileLock::builder(&path)
            .timeout(PATIENT)
            .build()
            .expect("build");
        let g = if shared {
            lock.acquire_shared()
        } else {
            lock.acquire()
        }
        .expect("the parent is created");
        assert!(path.is_file());
        drop(g);
        assert_free(&path);
    }
    let path = dir.path().join("blocking-try/a/x.lock");
    drop(
        blocking::FileLock::new(&path)
            .try_acquire()
            .expect("try_acquire"),
    );
    assert!(path.is_file());
}

#[cfg(unix)]
mod unix {
    use super::*;

    /// A symbolic link to an existing file is refused, and the file it points to keeps its
    /// content and mode (it is never opened, locked, created or chmod-ed through the link).
    #[test]
    fn a_symlink_to_a_file_is_refused_and_the_victim_untouched() {
        let dir = tmp();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim's data\n").expect("write");
        set_mode(&victim, 0o640);
        let link = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        assert_rejected(&link, &[ErrorKind::NotAFile], Some(dir.path()));
        // With an explicit mode and delete-on-release too.
        let lock = FileLock::builder(&link)
            .mode(0o600)
            .delete_on_release(true)
            .timeout(PATIENT)
            .build()
            .expect("build");
        let err = lock.try_acquire().expect_err("a symlink");
        assert_eq!(err.kind(), ErrorKind::NotAFile);
        assert_eq!(file_mode(&victim), 0o640);
        assert_eq!(std::fs::read(&victim).expect("read"), b"victim's data\n");
        assert!(foreign_can_lock(&victim), "the victim is not locked");
        // A relative link as well.
        let rel = dir.path().join("rel.lock");
        std::os::unix::fs::symlink("victim", &rel).expect("symlink");
        assert_rejected(&rel, &[ErrorKind::NotAFile], Some(dir.path()));
    }

    /// A dangling symbolic link is refused, and its target is not created.
    #[test]
    fn a_dangling_symlink_is_refused_and_its_target_not_created() {
        let dir = tmp();
        let target = dir.path().join("target-that-must-not-appear");
        let link = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_rejected(&link, &[ErrorKind::NotAFile], Some(dir.path()));
        assert!(!target.exists());
        let lock = FileLock::builder(&link).mode(0o600).build().expect("build");
        assert_eq!(
            lock.try_acquire().expect_err("dangling").kind(),
            ErrorKind::NotAFile
        );
        assert!(!target.exists());
        // A dangling link whose target's directory is missing: no directory appears either.
        let deep = dir.path().join("deep.lock");
        std::os::unix::fs::symlink(dir.path().join("nodir/target"), &deep).expect("symlink");
        assert_rejected(&deep, &[ErrorKind::NotAFile], Some(dir.path()));
    }

    #[test]
    fn a_symlink_to_a_directory_is_refused() {
        let dir = tmp();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        let link = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&d, &link).expect("symlink");
        assert_rejected(&link, &[ErrorKind::NotAFile], Some(dir.path()));
    }

    /// A FIFO is refused at once: opening it never waits for a writer or reader.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tmp();
        let fifo = dir.path().join("x.lock");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo failed");
        assert_rejected(&fifo, &[ErrorKind::NotAFile], Some(dir.path()));
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tmp();
        let sock = dir.path().join("x.lock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert_rejected(&sock, &[ErrorKind::NotAFile], Some(dir.path()));
    }

    #[test]
    fn a_device_is_refused() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let null = Path::new("/dev/null");
        let before = std::fs::metadata(null).expect("stat /dev/null");
        assert!(before.file_type().is_char_device());
        assert_rejected(null, &[ErrorKind::NotAFile], None);
        let after = std::fs::metadata(null).expect("stat /dev/null");
        assert!(after.file_type().is_char_device());
        assert_eq!(after.mode(), before.mode());
        assert_eq!(after.rdev(), before.rdev());
    }

    /// A path under a regular file (ENOTDIR) fails at once, and the file is untouched. (The
    /// kind is InvalidInput today; Io or NotAFile would be fair too, so all are accepted.)
    #[test]
    fn a_path_under_a_regular_file_fails_at_once() {
        let dir = tmp();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"keep").expect("write");
        assert_rejected(
            &file.join("x.lock"),
            &[ErrorKind::InvalidInput, ErrorKind::Io, ErrorKind::NotAFile],
            Some(dir.path()),
        );
        assert_rejected(
            &file.join("sub/x.lock"),
            &[ErrorKind::InvalidInput, ErrorKind::Io, ErrorKind::NotAFile],
            Some(dir.path()),
        );
    }

    /// A directory this process may not write: PermissionDenied at once, for the lock file
    /// and for a parent that would have to be created. Skipped when the process bypasses
    /// permissions (root), where it cannot fail the way it means to.
    #[test]
    fn a_read_only_directory_is_permission_denied() {
        if bypasses_permissions() {
            eprintln!("skipped: this process bypasses file permissions (root?)");
            return;
        }
        let dir = tmp();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).expect("mkdir");
        std::fs::write(ro.join("other"), b"keep").expect("write");
        set_mode(&ro, 0o555);
        let result = std::panic::catch_unwind(|| {
            assert_rejected(
                &ro.join("x.lock"),
                &[ErrorKind::PermissionDenied],
                Some(dir.path()),
            );
            assert_rejected(
                &ro.join("sub").join("x.lock"),
                &[ErrorKind::PermissionDenied],
                Some(dir.path()),
            );
        });
        set_mode(&ro, 0o755);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
