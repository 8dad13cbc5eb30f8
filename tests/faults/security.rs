//! The attacks that hit Python filelock, each tried on every lock kind: a symbolic link
//! planted where the lock (or one of its side files) will be, so that following it would
//! create, truncate or chmod a victim; a file of someone else's at the lock path, which a
//! contender must never truncate; and a dead owner's marker in a sticky directory that
//! belongs to another account.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use async_filelock::FileLock;

use crate::child::Proc;
use crate::common::{lock_path, tmp};
use crate::roles::{ask, held, Kind, Lock};

/// The names a kind creates beside (or at) its lock path.
fn side_names(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Soft => &[""],
        Kind::Lease => &["", ".fence"],
        Kind::Strict => &["", ".filelock"],
        Kind::RwRead | Kind::RwWrite => &[".rw"],
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What a victim looks like: content, mode, inode, link count.
fn fingerprint(path: &Path) -> (Vec<u8>, u32, u64, u64) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        meta.mode(),
        meta.ino(),
        meta.nlink(),
    )
}

/// A symlink at the lock path or at any side file, pointing at a victim file (or at a name
/// that does not exist yet): one attempt of every kind neither writes, truncates nor chmods
/// the victim, nor creates the dangling target.
#[test]
fn planted_symlinks_are_never_followed() {
    for kind in Kind::ALL {
        for suffix in side_names(kind) {
            for dangling in [false, true] {
                let dir = tmp();
                let path = lock_path(&dir, "planted.lock");
                let victim = lock_path(&dir, "victim");
                if !dangling {
                    std::fs::write(&victim, b"precious\n").unwrap();
                    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600))
                        .unwrap();
                }
                let before = (!dangling).then(|| fingerprint(&victim));
                std::os::unix::fs::symlink(&victim, with_suffix(&path, suffix)).unwrap();
                let r = Lock::new(kind, &path, 30_000).try_acquire();
                if let Err(e) = &r {
                    let base = path.file_name().unwrap().to_str().unwrap();
                    assert!(
                        e.to_string().contains(base),
                        "{kind:?} {suffix:?}: the error names the lock: {e}"
                    );
                }
                drop(r);
                match before {
                    Some(before) => assert_eq!(
                        fingerprint(&victim),
                        before,
                        "{kind:?}: a symlink at {suffix:?} led to the victim"
                    ),
                    None => assert!(
                        std::fs::symlink_metadata(&victim).is_err(),
                        "{kind:?}: a dangling symlink at {suffix:?} created its target"
                    ),
                }
            }
        }
    }
}

/// Someone else's file at the lock path (a hard lock's file, or data that landed there) is
/// never truncated, rewritten or chmodded by one attempt of any kind (Python filelock once
/// opened lock files with `O_TRUNC`).
#[test]
fn someone_elses_file_at_the_lock_path_is_never_truncated() {
    let kinds = Kind::ALL.map(Some).into_iter().chain([None]);
    for kind in kinds {
        let dir = tmp();
        let path = lock_path(&dir, "theirs.lock");
        std::fs::write(&path, b"their data\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = fingerprint(&path);
        match kind {
            Some(kind) => drop(Lock::new(kind, &path, 30_000).try_acquire()),
            None => drop(FileLock::new(&path).try_acquire()),
        }
        assert_eq!(fingerprint(&path), before, "{kind:?}");
    }
}

/// A child playing `role` as the account `uid`, from `exe`: a copy of this test binary that
/// the account can run (the checkout's own directories may be closed to it).
fn child_as(
    exe: &Path,
    uid: u32,
    role: &str,
    args: &[(&str, &dyn AsRef<std::ffi::OsStr>)],
) -> Proc {
    Proc::child_of(exe, role, args, |cmd| {
        cmd.uid(uid).gid(uid);
    })
}

/// Copies this test binary into a directory of its own under `dir` that every account can
/// enter, and returns the copy's path.
fn runnable_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.join("faults");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// A soft marker left by a dead process of another account, in a sticky directory (as in
/// `/tmp`): a contender of a third account cannot remove or exchange it there, so it must
/// see the lock as held (or fail with an error naming it), and leave the marker intact.
/// Root may break it, as root may remove anything.
#[test]
fn a_dead_foreign_owners_marker_in_a_sticky_directory() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run processes as two other accounts");
        return;
    }
    let bin = tmp();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = runnable_copy(bin.path());
    for kind in [Kind::Soft, Kind::Lease] {
        let dir = tmp();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = lock_path(&dir, "sticky.lock");
        let kind_name = format!("{kind:?}").to_lowercase();
        let args: [(&str, &dyn AsRef<std::ffi::OsStr>); 3] =
            [("kind", &kind_name), ("path", &path), ("millis", &"30000")];
        let mut owner = child_as(&exe, 65534, "holder", &args);
        held(&ask(&mut owner, "acquire"));
        owner.kill();
        owner.wait();
        let before = fingerprint(&path);

        let mut rival = child_as(&exe, 65533, "holder", &args);
        let answer = ask(&mut rival, "try");
        assert!(
            answer == "BUSY" || (answer.starts_with("ERR ") && answer.contains("sticky.lock")),
            "{kind:?}: another account's marker was broken in a sticky directory: {answer}"
        );
        assert_eq!(fingerprint(&path), before, "{kind:?}: the marker changed");
        drop(rival);

        // Root can and does break the dead owner's marker.
        let guard = Lock::new(kind, &path, 30_000)
            .try_acquire()
            .unwrap_or_else(|e| panic!("{kind:?}: root breaks a dead owner's marker: {e}"));
        guard.release().unwrap();
    }
}
