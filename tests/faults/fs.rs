//! The file system turning hostile: the lock file replaced under a holder and a waiter, a
//! full or read-only file system, descriptor exhaustion, and markers with hostile content.
//! Every failure is a typed error naming the path, and the lock works again afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_filelock::{ErrorKind, FileLock, SoftFileLock};

use crate::child::{self, say, Proc};
use crate::common::{lock_path, tmp, HANG};
use crate::roles::{ask, held, spawn_holder, Kind, Lock};

/// How a third party replaces the lock file.
#[derive(Debug, Clone, Copy)]
enum Replacement {
    Deleted,
    RenamedOver,
    HardLinkedOver,
    Symlink,
    Fifo,
    Directory,
}

const REPLACEMENTS: [Replacement; 6] = [
    Replacement::Deleted,
    Replacement::RenamedOver,
    Replacement::HardLinkedOver,
    Replacement::Symlink,
    Replacement::Fifo,
    Replacement::Directory,
];

/// Replaces `path`; `victim` is another file of the same directory, whose content a lock
/// must never change. Returns whether the path ends up replaced as `how` says.
fn replace(path: &Path, victim: &Path, how: Replacement) -> bool {
    let dir = path.parent().unwrap();
    let staged = dir.join("staged");
    match how {
        Replacement::Deleted => std::fs::remove_file(path).unwrap(),
        Replacement::RenamedOver => {
            std::fs::write(&staged, b"").unwrap();
            std::fs::rename(&staged, path).unwrap();
        }
        Replacement::HardLinkedOver => {
            std::fs::hard_link(victim, &staged).unwrap();
            std::fs::rename(&staged, path).unwrap();
        }
        Replacement::Symlink => {
            std::os::unix::fs::symlink(victim, &staged).unwrap();
            std::fs::rename(&staged, path).unwrap();
        }
        Replacement::Fifo => {
            let made = Command::new("mkfifo").arg(&staged).status().unwrap();
            assert!(made.success());
            std::fs::rename(&staged, path).unwrap();
        }
        Replacement::Directory => {
            // No rename puts a directory over a file: remove, then create. A waiter woken
            // by the removal may create a fresh lock file first; then the directory loses.
            std::fs::remove_file(path).unwrap();
            if std::fs::create_dir(path).is_err() {
                return false;
            }
        }
    }
    true
}

/// A hard lock whose file is replaced while another process holds it and this one waits:
/// a regular file now at the path is locked afresh once the holder is gone (holders of an
/// unlinked file exclude nobody — true of every `flock` lock, which is why the crate checks
/// the path after locking); anything else is refused with a typed error; the file the old
/// holder locked and the victim a link points at are never written.
#[test]
fn a_hard_lock_file_replaced_under_a_holder_and_a_waiter() {
    for how in REPLACEMENTS {
        let dir = tmp();
        let path = lock_path(&dir, "replaced.lock");
        let victim = lock_path(&dir, "victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        let mut holder = Proc::child(
            "hold",
            &[("path", &path), ("shared", &"0"), ("mode", &"blocking")],
        );
        holder.expect("WAITING");
        holder.expect("HELD");
        let lock = FileLock::builder(&path).timeout(HANG).build().unwrap();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || futures_lite::future::block_on(lock.acquire()))
        };
        let replaced = replace(&path, &victim, how);
        holder.send("release");
        holder.expect("RELEASED");
        let got = waiter.join().unwrap();
        match how {
            _ if !replaced => drop(got.unwrap_or_else(|e| panic!("{how:?}: {e}"))),
            Replacement::Deleted | Replacement::RenamedOver | Replacement::HardLinkedOver => {
                let guard = got.unwrap_or_else(|e| panic!("{how:?}: {e}"));
                // It holds what the path names now: another process is excluded.
                let mut probe = Proc::child(
                    "probe",
                    &[("path", &path), ("shared", &"0"), ("mode", &"blocking")],
                );
                probe.expect("WOULDBLOCK");
                drop(guard);
            }
            Replacement::Symlink | Replacement::Fifo | Replacement::Directory => {
                let err = got.expect_err(&format!("{how:?} must be refused"));
                assert_eq!(err.path(), Some(path.as_path()), "{how:?}: {err}");
                assert!(
                    matches!(err.kind(), ErrorKind::NotAFile | ErrorKind::Protocol),
                    "{how:?}: {:?} {err}",
                    err.kind()
                );
            }
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n", "{how:?}");
    }
}

/// A soft lock's marker deleted or replaced by a third party while held: the holder's
/// release removes only its own marker (it never deletes what replaced it), and reports
/// nothing worse than an error naming the path.
#[test]
fn a_soft_marker_replaced_while_held_is_never_deleted_by_its_old_holder() {
    for kind in [Kind::Soft, Kind::Lease] {
        let dir = tmp();
        let path = lock_path(&dir, "marker.lock");
        let mut holder = spawn_holder(kind, &path, 30_000, "");
        held(&ask(&mut holder, "acquire"));
        // Someone else's file now sits at the path.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not yours\n").unwrap();
        let answer = ask(&mut holder, "release");
        assert!(
            answer == "RELEASED" || answer.contains(&format!("{path:?}")),
            "{kind:?}: {answer}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"not yours\n", "{kind:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Full and read-only file systems.

/// A small tmpfs mounted for one test, unmounted when dropped; `None` (with a printed
/// reason) where this process may not mount one.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tmp();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(ok.success(), "remount {options}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the blocks of the file system under `dir` (one file written until `ENOSPC`) and,
/// with `inodes`, its inodes too (empty files created until `ENOSPC`).
fn fill(dir: &Path, inodes: bool) -> Vec<PathBuf> {
    use std::io::Write;
    let big = dir.join("filler");
    let mut f = std::fs::File::create(&big).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..1]).is_ok() {}
    let mut files = vec![big];
    if inodes {
        for i in 0.. {
            let path = dir.join(format!("filler-{i}"));
            if std::fs::File::create(&path).is_err() {
                break;
            }
            files.push(path);
            assert!(i < 100_000, "the inodes never ran out");
        }
    }
    files
}

/// The path each kind locks: its own, since a hard lock's file left at a soft lock's path
/// is an empty marker, held forever.
fn kind_path(path: &Path, kind: Kind) -> PathBuf {
    path.with_extension(format!("{kind:?}.lock").to_lowercase())
}

/// Every kind of lock at (or beside) `path`, in a full or read-only place, fails with an
/// error naming its path and carrying the system's `errno` (a hard lock may succeed where a
/// file needs no block).
fn every_kind_fails_cleanly(path: &Path, place: &str, errno: i32, hard_may_lock: bool) {
    let hard = FileLock::new(path);
    match hard.try_acquire() {
        // An empty lock file needs an inode but no block.
        Ok(_) if hard_may_lock => {}
        Ok(_) => panic!("{place}: a hard lock file cannot be created"),
        Err(e) => assert_eq!(e.path(), Some(path), "{place} hard: {e}"),
    }
    for kind in Kind::ALL {
        let path = kind_path(path, kind);
        let lock = Lock::new(kind, &path, 30_000);
        match lock.try_acquire() {
            Ok(_) => panic!("{place}: {kind:?} cannot create its files"),
            Err(e) => {
                assert_ne!(e.kind(), ErrorKind::WouldBlock, "{place} {kind:?}: {e}");
                assert_eq!(e.raw_os_error(), Some(errno), "{place} {kind:?}: {e}");
                let base = path.file_name().unwrap().to_str().unwrap();
                let named = e.to_string().contains(base);
                assert!(named, "{place} {kind:?}: the error names the lock: {e}");
            }
        }
    }
}

/// After the failures, with room again, every kind takes the lock at once.
fn every_kind_works(path: &Path, place: &str) {
    drop(
        FileLock::new(path)
            .try_acquire()
            .unwrap_or_else(|e| panic!("{place} hard: {e}")),
    );
    for kind in Kind::ALL {
        let lock = Lock::new(kind, &kind_path(path, kind), 30_000);
        let guard = lock
            .try_acquire()
            .unwrap_or_else(|e| panic!("{place} {kind:?} after the failure: {e}"));
        guard.release().unwrap();
    }
}

/// No block left (a marker can be created but not written), then no inode left either:
/// each acquisition fails with an error naming the lock, and nothing half-written (an empty
/// marker would be held forever) is left to block the holders that come once there is room.
#[test]
fn a_full_file_system_fails_cleanly_and_leaves_nothing_that_blocks() {
    for inodes in [false, true] {
        let Some(mount) = Mount::tmpfs("256k,nr_inodes=256") else {
            return;
        };
        let path = mount.path().join("full.lock");
        let place = if inodes {
            "ENOSPC (inodes)"
        } else {
            "ENOSPC (blocks)"
        };
        let fillers = fill(mount.path(), inodes);
        every_kind_fails_cleanly(&path, place, libc::ENOSPC, !inodes);
        for f in fillers {
            std::fs::remove_file(f).unwrap();
        }
        every_kind_works(&path, place);
    }
}

#[test]
fn a_read_only_file_system_fails_cleanly() {
    let Some(mount) = Mount::tmpfs("1m") else {
        return;
    };
    let path = mount.path().join("ro.lock");
    mount.remount("ro");
    every_kind_fails_cleanly(&path, "EROFS", libc::EROFS, false);
    mount.remount("rw");
    every_kind_works(&path, "EROFS");
}

/// A pass-through FUSE file system over a private directory that reports EDQUOT on demand
/// (`scripts/quotafs.py`), unmounted when dropped. The kernels this suite runs on may have
/// no quota support on any file system a test can mount, and `root` is exempt from quota
/// hard limits anyway, so this is how the suite meets a real `EDQUOT` from the system calls
/// it makes. `None` (with a printed reason) where FUSE, Python's fusepy or the mount is
/// missing, unless `ASYNC_FILELOCK_REQUIRE_FUSE` is set (CI), which makes that a failure.
struct QuotaFs {
    backing: tempfile::TempDir,
    mount: tempfile::TempDir,
    server: std::process::Child,
}

impl QuotaFs {
    fn mount() -> Option<QuotaFs> {
        let required = std::env::var_os("ASYNC_FILELOCK_REQUIRE_FUSE").is_some();
        let skip = |why: String| {
            assert!(!required, "ASYNC_FILELOCK_REQUIRE_FUSE is set, but {why}");
            eprintln!("skipped: {why}");
            None
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quotafs.py");
        let (backing, mount) = (tmp(), tmp());
        let server = Command::new("python3")
            .arg(&script)
            .arg(backing.path())
            .arg(mount.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut server = match server {
            Ok(server) => server,
            Err(e) => return skip(format!("cannot run python3 for the quota file system: {e}")),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let target = mount.path().to_str().unwrap();
            if mounts.lines().any(|l| l.split(' ').nth(4) == Some(target)) {
                return Some(QuotaFs {
                    backing,
                    mount,
                    server,
                });
            }
            if let Ok(Some(status)) = server.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                let _ = server.stderr.take().unwrap().read_to_string(&mut err);
                let last = err.lines().last().unwrap_or("").to_owned();
                return skip(format!(
                    "the quota file system did not mount ({status}): {last}"
                ));
            }
            if std::time::Instant::now() > deadline {
                let _ = server.kill();
                return skip("the quota file system did not mount within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Sets which quota is used up (`"blocks"`, `"inodes"`), or none.
    fn exhaust(&self, limit: Option<&str>) {
        let control = self.backing.path().join(".quota");
        match limit {
            Some(limit) => std::fs::write(control, limit).unwrap(),
            None => std::fs::remove_file(control).unwrap(),
        }
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(self.mount.path())
            .status();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// EDQUOT, first on blocks (a marker can be created but not written), then on inodes too:
/// each acquisition fails with an error naming the lock, and nothing half-written is left to
/// block the holders that come once the quota allows again.
#[test]
fn an_exhausted_quota_fails_cleanly_and_leaves_nothing_that_blocks() {
    for limit in ["blocks", "inodes"] {
        let Some(fs) = QuotaFs::mount() else {
            return;
        };
        let path = fs.path().join("quota.lock");
        let place = format!("EDQUOT ({limit})");
        fs.exhaust(Some(limit));
        every_kind_fails_cleanly(&path, &place, libc::EDQUOT, limit == "blocks");
        fs.exhaust(None);
        every_kind_works(&path, &place);
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptor exhaustion.

/// Role `nofile` (DIR): with `RLIMIT_NOFILE` lowered to the descriptors already open, every
/// kind fails with an error naming the path; with the limit restored, every kind works.
/// Prints DONE.
pub fn nofile_role() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let dir = PathBuf::from(child::arg("dir"));
    let path = dir.join("nofile.lock");
    // Each kind once, so its once-per-process setup (watch, pool) is in place.
    every_kind_works(&path, "before");
    let saved = getrlimit(Resource::Nofile);
    // The lowest free descriptor number: below it every number is taken, so a limit equal
    // to it leaves no descriptor to open.
    let lowest = {
        use std::os::fd::AsRawFd;
        std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(lowest),
            maximum: saved.maximum,
        },
    )
    .unwrap();
    let hard = FileLock::new(&path);
    let err = hard.try_acquire().expect_err("no descriptor left");
    assert_eq!(err.path(), Some(path.as_path()), "{err}");
    for kind in [Kind::Soft, Kind::Lease, Kind::Strict, Kind::RwWrite] {
        let r = Lock::new(kind, &kind_path(&path, kind), 30_000).try_acquire();
        let e = r.expect_err("no descriptor left");
        assert_ne!(e.kind(), ErrorKind::WouldBlock, "{kind:?}: {e}");
        assert!(
            e.to_string().contains("nofile."),
            "{kind:?}: the error names the lock: {e}"
        );
    }
    setrlimit(Resource::Nofile, saved).unwrap();
    every_kind_works(&path, "after EMFILE");
    say("DONE");
}

#[test]
fn descriptor_exhaustion_fails_cleanly() {
    let dir = tmp();
    let mut child = Proc::child("nofile", &[("dir", &dir.path())]);
    child.expect("DONE");
    child.wait_success();
}

// ---------------------------------------------------------------------------------------------
// Hostile marker content.

/// Markers anyone could have written: a soft lock never panics on them, holds off while the
/// content could name a live holder (pid 1 on this host is one), and takes over garbage
/// once it stayed unchanged for the malformed-marker age.
#[test]
fn hostile_markers_never_panic_and_garbage_heals() {
    let host = {
        // The host field of a record this host writes, from a real marker of ours.
        let dir = tmp();
        let path = lock_path(&dir, "probe.lock");
        let guard = SoftFileLock::new(&path).try_acquire().unwrap();
        let owner = SoftFileLock::new(&path).owner().unwrap().unwrap();
        drop(guard);
        owner.host().to_string()
    };
    let huge = "9".repeat(40);
    let big = vec![b'x'; 1 << 20];
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // (what, content, whether a live holder might own it)
        ("pid 1", format!("1\n{host}\n").into_bytes(), true),
        ("pid 0", format!("0\n{host}\n").into_bytes(), false),
        ("negative pid", format!("-5\n{host}\n").into_bytes(), false),
        ("huge pid", format!("{huge}\n{host}\n").into_bytes(), false),
        ("truncated", b"12".to_vec(), false),
        ("binary", vec![0xff, 0, 0xfe, 10, 0x80, 0], false),
        ("oversized", big, false),
    ];
    for (what, content, live) in cases {
        let dir = tmp();
        let path = lock_path(&dir, "hostile.lock");
        std::fs::write(&path, &content).unwrap();
        let lock = SoftFileLock::builder(&path)
            .timeout(Duration::from_secs(6))
            .build()
            .unwrap();
        let owner = lock.owner();
        assert!(owner.is_ok(), "{what}: owner() fails: {owner:?}");
        match futures_lite::future::block_on(lock.acquire()) {
            Ok(guard) => {
                assert!(!live, "{what}: a possibly live holder was broken");
                drop(guard);
            }
            Err(e) => {
                assert!(live, "{what}: garbage must heal: {e}");
                assert_eq!(e.kind(), ErrorKind::Timeout, "{what}: {e}");
                assert_eq!(e.path(), Some(path.as_path()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signal storms.

/// Role `eintr`: with a handler for `SIGUSR1` installed and a thread sending this process
/// one every 100 µs, every kind waits for a holder in another process and gets the lock
/// once it lets go, async and blocking: an interrupted system call is retried, never
/// reported. Prints DONE.
pub fn eintr_role() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = PathBuf::from(child::arg("dir"));
    let caught = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, caught.clone())
        .expect("install a SIGUSR1 handler");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let me = rustix::process::getpid();
            while !stop.load(Ordering::Relaxed) {
                let _ = rustix::process::kill_process(me, rustix::process::Signal::USR1);
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    for kind in Kind::ALL {
        let path = kind_path(&dir.join("storm.lock"), kind);
        let holder_kind = if kind == Kind::RwRead {
            Kind::RwWrite
        } else {
            kind
        };
        let mut holder = spawn_holder(holder_kind, &path, 30_000, "");
        held(&ask(&mut holder, "acquire"));
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || Lock::new(kind, &path, 30_000).acquire(HANG))
        };
        // Let the waiter wait through a few thousand signals before the holder lets go.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ask(&mut holder, "release"), "RELEASED");
        let guard = waiter
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{kind:?} under a signal storm: {e}"));
        guard.release().unwrap();
    }
    // The hard lock, async and blocking.
    let path = dir.join("storm-hard.lock");
    for blocking in [false, true] {
        let mut holder = Proc::child(
            "hold",
            &[("path", &path), ("shared", &"0"), ("mode", &"blocking")],
        );
        holder.expect("WAITING");
        holder.expect("HELD");
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                if blocking {
                    async_filelock::blocking::FileLock::new(&path)
                        .acquire_timeout(HANG)
                        .map(drop)
                } else {
                    futures_lite::future::block_on(FileLock::new(&path).acquire().timeout(HANG))
                        .map(drop)
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        holder.send("release");
        holder.expect("RELEASED");
        waiter
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("hard (blocking: {blocking}) under a signal storm: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    assert!(caught.load(Ordering::Relaxed), "no signal was handled");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 1000, "only {sent} signals were sent");
    say(&format!("DONE {sent}"));
}

#[test]
fn a_signal_storm_interrupts_nothing() {
    let dir = tmp();
    let mut child = Proc::child("eintr", &[("dir", &dir.path())]);
    let done = child.next_line();
    assert!(done.starts_with("DONE "), "{done}");
    eprintln!("signals sent during the waits: {}", &done[5..]);
    child.wait_success();
}
