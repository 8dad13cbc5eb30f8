//! Unix: `flock(2)` on a lock file opened without following symbolic links.
//!
//! One attempt is: open (never creating through a symlink, never truncating, close-on-exec,
//! non-blocking) → `fstat` (a regular file, or refuse) → `flock(LOCK_NB)` → `lstat` the path
//! again and check that it still names the inode we locked. A holder that deletes the file
//! (delete-on-release) unlinks it while it still holds the lock, so a waiter that locked the
//! old inode sees the mismatch and starts over on the new file.
//!
//! Every call here returns promptly: the open is `O_NONBLOCK` (a FIFO, or a file with a lease
//! held on it, cannot stall it) and the lock request is `LOCK_NB`.
//!
//! A lock may keep its file open between holds ([`Cache`]): the next attempt is then
//! `flock(LOCK_NB)` → `lstat` on that descriptor, and a release `flock(LOCK_UN)`. The
//! identity check stays whole (the cached descriptor keeps its inode alive, so a path that
//! names an inode with the same device and number names this very file), and the cache is
//! only reused by the process that opened it (a forked child shares the open file
//! description, and locking it would join the parent's hold).
//!
//! Waiters in other processes learn of a release from the file's close (`sys::watch`), which a
//! cached descriptor never raises. So on Linux a waiter announces itself with a shared POSIX
//! record lock on the whole file while it waits, and a releaser tests for one (`F_GETLK`, one
//! call, after unlocking): when someone waits, the releaser closes the file as before.
//! POSIX record locks and `flock` locks are independent on local file systems, but not on
//! NFS or SMB (there `flock` is built on record locks), so announcing, and with it the cache,
//! is limited to local file systems known to keep them apart ([`announces`]).

use std::fs::{File, TryLockError};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rustix::fs::{FileType, FlockOperation, Mode, OFlags, Stat};
use rustix::io::Errno;
use rustix::process::{Flock, FlockOffsetType, FlockType};

use super::Attempt;
use crate::Error;

/// Attempts are non-blocking system calls: run them on the task that polls.
pub(crate) const ATTEMPT_BLOCKS: bool = false;

/// The permissions a lock file is created with when the caller sets none (the umask applies).
const DEFAULT_MODE: u32 = 0o666;

/// How many times one attempt starts over when the path was replaced under it before it
/// reports contention and lets the waiting loop back off.
const REPLACED_RETRIES: usize = 8;

/// An open lock file on which this process holds a `flock`.
#[derive(Debug)]
pub(crate) struct Held {
    file: File,
    /// Device and inode of the locked file.
    id: (u64, u64),
    /// The process that took the lock. A child forked while the lock was held shares the
    /// open file description; it must neither unlock nor delete the parent's lock.
    owner: u32,
    /// Whether waiters on this file announce themselves (see [`announces`]); asked once per
    /// open file, when first needed.
    announcing: Option<bool>,
}

/// The lock file a lock keeps open between holds, so that the next acquisition needs no
/// `open` (see the module docs). Holds at most one idle descriptor; dropping it closes it.
#[derive(Debug, Default)]
pub(crate) struct Cache(Mutex<Option<Cached>>);

#[derive(Debug)]
struct Cached {
    file: File,
    id: (u64, u64),
    /// The process that opened it: in a forked child the descriptor shares the parent's
    /// open file description, so the child must not lock it.
    owner: u32,
    announcing: Option<bool>,
}

impl Cache {
    /// The idle descriptor, if this process (`pid`) put one there.
    fn take(&self, pid: u32) -> Option<Cached> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        // Closing a descriptor inherited from the parent leaves the parent's open file
        // description (and any lock on it) alone.
        (cached.owner == pid).then_some(cached)
    }

    /// Keeps `cached` unless another idle descriptor is kept already (then it is closed).
    fn put(&self, cached: Cached) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(cached);
        }
    }
}

/// The lock file a waiting acquisition keeps open between its attempts.
///
/// Reopening it for every attempt would close it after every failed one, and a close is
/// what other waiters watch for (a holder's release): waiters would wake each other in a
/// storm. Kept open, only holders and departing waiters close it.
#[derive(Debug)]
pub(crate) struct Kept {
    file: File,
    id: (u64, u64),
    announcing: Option<bool>,
    /// This waiter holds its announcement (a shared record lock, see the module docs).
    announced: bool,
}

/// What an acquisition keeps between attempts (see [`Kept`]).
pub(crate) type Keep = Option<Kept>;

/// Makes one non-blocking attempt to lock `path`, on the file `keep` holds if it holds one,
/// else on the one `cache` keeps; on contention, the file is left in `keep` for the next
/// attempt.
pub(crate) fn try_lock(
    path: &Path,
    shared: bool,
    mode: Option<u32>,
    keep: &mut Keep,
    cache: Option<&Cache>,
) -> Result<Attempt, Error> {
    // Asked once: the owner of a hold, and who may reuse the cache.
    let pid = std::process::id();
    for _ in 0..REPLACED_RETRIES {
        let (mut kept, created) = match keep.take() {
            Some(kept) => (kept, false),
            None => match cache.and_then(|c| c.take(pid)) {
                Some(c) => (
                    Kept {
                        file: c.file,
                        id: c.id,
                        announcing: c.announcing,
                        announced: false,
                    },
                    false,
                ),
                None => {
                    let Some((fd, st, created)) = open(path, mode)? else {
                        return Ok(Attempt::Contended);
                    };
                    let kept = Kept {
                        file: File::from(fd),
                        id: file_id(&st),
                        announcing: None,
                        announced: false,
                    };
                    (kept, created)
                }
            },
        };
        match lock_nb_at(&kept.file, shared, path) {
            Ok(true) => {}
            Ok(false) => {
                kept.announce();
                *keep = Some(kept);
                return Ok(Attempt::Contended);
            }
            Err(e) => {
                // Do not leave behind a file this attempt created for a lock it could not
                // take (a soft lock falling back on this path would read it as a holder).
                if created {
                    remove_if_same(path, kept.file.as_fd());
                }
                return Err(Error::io(path, e));
            }
        }
        if let Some(held) = locked(path, kept, pid)? {
            return Ok(Attempt::Locked(held));
        }
    }
    Ok(Attempt::Contended)
}

/// After `flock` succeeded on `kept`: the hold, if the path still names the locked file.
fn locked(path: &Path, mut kept: Kept, pid: u32) -> Result<Option<Held>, Error> {
    // The file may have been unlinked or replaced since we opened it (a holder releasing
    // with delete-on-release, or a third party). Then we hold a lock nobody else will ever
    // see: drop it (closing the file ends that lock) and open what the path names now.
    match rustix::fs::lstat(path) {
        Ok(now) if file_id(&now) == kept.id => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Error::io(path, e.into())),
    }
    kept.withdraw();
    Ok(Some(Held {
        file: kept.file,
        id: kept.id,
        owner: pid,
        announcing: kept.announcing,
    }))
}

impl Kept {
    /// Announces this waiter to holders in other processes, once, where they look (see the
    /// module docs). A failure only means a releaser may not close the file for us: the
    /// waiting loop's timer still bounds the wait.
    fn announce(&mut self) {
        if !CLOSE_WATCHED
            || self.announced
            || !*self.announcing.get_or_insert_with(|| announces(&self.file))
        {
            return;
        }
        self.announced =
            rustix::fs::fcntl_lock(&self.file, FlockOperation::NonBlockingLockShared).is_ok();
    }

    /// Withdraws the announcement, once this waiter holds the lock.
    fn withdraw(&mut self) {
        if std::mem::take(&mut self.announced) {
            let _ = rustix::fs::fcntl_lock(&self.file, FlockOperation::NonBlockingUnlock);
        }
    }
}

/// Whether a waiter in another process has announced itself on `file` (see the module docs).
fn someone_waits(file: &File) -> bool {
    let probe = Flock {
        start: 0,
        length: 0,
        pid: None,
        typ: FlockType::WriteLock,
        offset_type: FlockOffsetType::Set,
    };
    // An error means we cannot tell: close, as without a cache.
    CLOSE_WATCHED && !matches!(rustix::process::fcntl_getlk(file, &probe), Ok(None))
}

/// Whether waiters watch for a holder's close (see `sys::watch`), and so must announce
/// themselves to holders that keep the file open.
const CLOSE_WATCHED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Whether waiters announce themselves on `file`'s file system with a record lock, which
/// there is independent of `flock` (see the module docs). Off Linux, nothing watches for a
/// close, so nobody needs announcing and a cached descriptor is always fine.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(clippy::unnecessary_cast)] // `f_type`'s integer type differs between targets.
fn announces(file: &File) -> bool {
    // Local file systems whose `flock` is their own lock, apart from record locks.
    const LOCAL: [u32; 7] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0xCA45_1A4E, // bcachefs
        0x794C_7630, // overlayfs
    ];
    rustix::fs::fstatfs(file).is_ok_and(|st| LOCAL.contains(&(st.f_type as u32)))
}

/// Off Linux nothing watches for a close, so a cached descriptor hides no release.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn announces(_file: &File) -> bool {
    true
}

impl Held {
    /// Unlocks and keeps the file open in `keep`, for an acquisition that goes on waiting
    /// (closing it would wake other waiters for nothing).
    pub(crate) fn unlock_into(self, keep: &mut Keep) {
        if self.owner == std::process::id() && self.file.unlock().is_ok() {
            *keep = Some(Kept {
                file: self.file,
                id: self.id,
                announcing: self.announcing,
                announced: false,
            });
        }
    }

    /// Unlocks and closes, or with a `cache`, keeps the file there for the next hold (unless
    /// a waiter in another process needs the close to learn of the release); with `delete`,
    /// first removes the path if it still names this file (and then never caches it).
    pub(crate) fn release(
        mut self,
        path: &Path,
        delete: bool,
        cache: Option<&Cache>,
    ) -> Result<(), Error> {
        if self.owner != std::process::id() {
            // A forked child dropping an inherited guard: closing its copy of the descriptor
            // leaves the parent's lock (and file) alone; unlocking would end it.
            drop(self.file);
            return Ok(());
        }
        let mut result = Ok(());
        // Delete only as the last holder: other shared holders may still rely on this file.
        // Converting to exclusive without waiting tells (if the conversion fails, the shared
        // hold may be gone, which does not matter: we are releasing it anyway).
        if delete && matches!(lock_nb(&self.file, false), Ok(true)) {
            // Unlink while the lock is still held: a waiter that locks the old inode after
            // this point sees that the path no longer names it and starts over.
            match rustix::fs::lstat(path) {
                Ok(now) if file_id(&now) == self.id => {
                    if let Err(e) = rustix::fs::unlink(path) {
                        if e != Errno::NOENT {
                            result = Err(Error::io(path, e.into()));
                        }
                    }
                }
                // Someone else's file, or nothing: not ours to delete.
                _ => {}
            }
        }
        // An explicit unlock releases the lock even if a forked child still shares the open
        // file description; closing alone would not.
        let unlocked = loop {
            match self.file.unlock() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        if let (Some(cache), false, Ok(())) = (cache, delete, &unlocked) {
            // Unlocked first: a waiter that announces itself after this test attempts again
            // after announcing, and finds the lock free.
            if *self.announcing.get_or_insert_with(|| announces(&self.file))
                && !someone_waits(&self.file)
            {
                cache.put(Cached {
                    file: self.file,
                    id: self.id,
                    owner: self.owner,
                    announcing: self.announcing,
                });
                return result;
            }
        }
        drop(self.file);
        result.and(unlocked.map_err(|e| Error::io(path, e)))
    }
}

/// Device and inode, whose integer types differ between Unix systems.
#[allow(clippy::unnecessary_cast)]
fn file_id(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// `lock_nb`, except that tests can make chosen paths fail as a file system without locks.
fn lock_nb_at(file: &File, shared: bool, path: &Path) -> io::Result<bool> {
    #[cfg(test)]
    if let Some(errno) = test_hook::forced(path) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let _ = path;
    lock_nb(file, shared)
}

/// Whether `e` says the file system cannot take `flock` locks at all, under `fallback`.
pub(crate) fn lacks_flock(e: &Error, fallback: crate::SoftFallback) -> bool {
    use crate::SoftFallback;
    let Some(errno) = e.raw_os_error().map(Errno::from_raw_os_error) else {
        return false;
    };
    match fallback {
        SoftFallback::Never => false,
        SoftFallback::OnNoSys => errno == Errno::NOSYS,
        _ => [Errno::NOSYS, Errno::NOTSUP, Errno::OPNOTSUPP, Errno::NOLCK].contains(&errno),
    }
}

/// `flock(LOCK_NB)`, retried on `EINTR`. `Ok(false)` means another holder has it.
fn lock_nb(file: &File, shared: bool) -> io::Result<bool> {
    loop {
        let r = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        return match r {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(TryLockError::Error(e)) => Err(e),
        };
    }
}

/// Opens (creating if needed) the lock file and checks that it is a regular file.
///
/// `Ok(None)`: the open would block because another process holds a lease on the file
/// (Linux `F_SETLEASE`), which is contention like any other.
/// The flag says whether this call created the file.
fn open(path: &Path, mode: Option<u32>) -> Result<Option<(OwnedFd, Stat, bool)>, Error> {
    let base = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let mut made_parent = false;
    loop {
        let mut created = false;
        let fd = match rustix::fs::open(path, base | OFlags::RDWR, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                // Create it; O_EXCL tells us whether it was us, which decides who may chmod.
                // Creating with the requested mode means the umask can only remove bits, so
                // the file is never more open than asked for, not even until the chmod.
                let create = base | OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
                let initial = Mode::from_raw_mode(mode.unwrap_or(DEFAULT_MODE) as _);
                match rustix::fs::open(path, create, initial) {
                    Ok(fd) => {
                        if let Some(mode) = mode {
                            let exact = Mode::from_raw_mode(mode as _);
                            if let Err(e) = retry_intr(|| rustix::fs::fchmod(&fd, exact)) {
                                // Do not leave a file with the wrong mode for others to use.
                                remove_if_same(path, fd.as_fd());
                                return Err(Error::io(path, e.into()));
                            }
                        }
                        created = true;
                        fd
                    }
                    Err(Errno::EXIST) | Err(Errno::INTR) => continue,
                    Err(Errno::NOENT) if !made_parent => {
                        made_parent = true;
                        create_parent(path)?;
                        continue;
                    }
                    Err(e) => return Err(open_error(path, e)),
                }
            }
            // The file exists but we may not write it (its mode, or a read-only file
            // system): `flock` works on a read-only descriptor on local file systems.
            Err(Errno::ACCESS) | Err(Errno::ROFS) => {
                match rustix::fs::open(path, base | OFlags::RDONLY, Mode::empty()) {
                    Ok(fd) => fd,
                    // Deleted in between (a holder releasing with delete-on-release).
                    Err(Errno::INTR) | Err(Errno::NOENT) => continue,
                    Err(Errno::WOULDBLOCK) => return Ok(None),
                    Err(e) => return Err(open_error(path, e)),
                }
            }
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(open_error(path, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, e.into()))?;
        return match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok(Some((fd, st, created))),
            FileType::Directory => Err(Error::not_a_file(path, "it is a directory")),
            FileType::Fifo => Err(Error::not_a_file(path, "it is a FIFO")),
            FileType::CharacterDevice | FileType::BlockDevice => {
                Err(Error::not_a_file(path, "it is a device"))
            }
            _ => Err(Error::not_a_file(path, "it is not a regular file")),
        };
    }
}

fn open_error(path: &Path, e: Errno) -> Error {
    match e {
        // O_NOFOLLOW on a symbolic link.
        Errno::LOOP => Error::not_a_file(
            path,
            "it is a symbolic link, and lock files are never opened through one",
        ),
        Errno::ISDIR => Error::not_a_file(path, "it is a directory"),
        // Opening a socket, or a FIFO with no reader, without blocking.
        Errno::NXIO => Error::not_a_file(path, "it is a socket or a FIFO"),
        _ => Error::io(path, e.into()),
    }
}

/// Removes `path` if it still names the file open as `fd`.
fn remove_if_same(path: &Path, fd: BorrowedFd<'_>) {
    if let (Ok(now), Ok(ours)) = (rustix::fs::lstat(path), rustix::fs::fstat(fd)) {
        if file_id(&now) == file_id(&ours) {
            let _ = rustix::fs::unlink(path);
        }
    }
}

/// The name under which locks on `path` share one in-process queue: the real path of the
/// deepest existing ancestor (so `a/../b.lock` and spellings through symbolic links to
/// directories meet, even before the parent exists) followed by the rest as spelled. The
/// final component is never followed. These are quick metadata calls, made once per lock.
pub(crate) fn queue_key(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut base = path;
    while let (Some(parent), Some(name)) = (base.parent(), base.file_name()) {
        rest.push(name);
        if let Ok(real) = std::fs::canonicalize(parent) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        base = parent;
    }
    path.to_path_buf()
}

fn create_parent(path: &Path) -> Result<(), Error> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(path, e))
        }
        _ => Ok(()),
    }
}

fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// The host name as the kernel reports it (`uname`'s node name).
pub(crate) fn host_name_raw() -> Vec<u8> {
    rustix::system::uname().nodename().to_bytes().to_vec()
}

/// Whether a process with this pid exists; permission to signal it is not needed
/// (`EPERM` proves it exists).
pub(crate) fn process_alive(pid: u32) -> io::Result<bool> {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return Ok(false);
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(Errno::PERM) => Ok(true),
        Err(Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Tests make `flock` on chosen paths fail with a chosen errno.
#[cfg(test)]
pub(crate) mod test_hook {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FORCED: Mutex<Vec<(PathBuf, i32)>> = Mutex::new(Vec::new());

    pub(crate) fn force(path: &Path, errno: i32) {
        FORCED.lock().unwrap().push((path.to_path_buf(), errno));
    }

    pub(super) fn forced(path: &Path) -> Option<i32> {
        let forced = FORCED.lock().unwrap();
        forced.iter().find(|(p, _)| p == path).map(|(_, e)| *e)
    }
}
