//! Windows: `LockFileEx` (through std's `File::try_lock`) on a handle opened without following
//! reparse points and without `FILE_SHARE_DELETE`.
//!
//! Because no handle to a lock file allows deletion, nobody can delete or rename the file while
//! anyone has it open. The path therefore still names the file we locked, and no identity check
//! is needed after locking (Unix needs one).
//!
//! Opening a file can block (antivirus filters, network shares), so async callers run attempts
//! on the `blocking` pool. An attempt owns the handle it opens; if its future was dropped while
//! it ran, the pool drops the result, and dropping a `Held` closes the handle, which releases
//! the lock.

use std::fs::{File, Metadata, OpenOptions, TryLockError};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Attempt;
use crate::Error;

pub(crate) const ATTEMPT_BLOCKS: bool = true;

// From the Windows SDK (winnt.h, winerror.h).
const FILE_SHARE_READ: u32 = 0x1;
const FILE_SHARE_WRITE: u32 = 0x2;
const FILE_SHARE_DELETE: u32 = 0x4;
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SHARING_VIOLATION: i32 = 32;
const ERROR_DELETE_PENDING: i32 = 303;

/// An open lock file on which this process holds a `LockFileEx` lock.
#[derive(Debug)]
pub(crate) struct Held {
    file: File,
}

/// How often, and how far apart, an open refused with "access denied" on an existing lock
/// file is retried within one attempt before it counts as a real permission error. A file
/// being deleted answers that way until its last handle closes, which takes microseconds;
/// Python filelock waits the same way (250 × 2 ms at most).
const DENIED_RETRIES: u32 = 50;
const DENIED_PAUSE: Duration = Duration::from_millis(2);

/// The path as given: canonicalizing would open the file system, which can block, on the
/// polling thread. Aliases through junctions still exclude each other through the OS lock.
pub(crate) fn queue_key(path: &Path) -> PathBuf {
    path.to_path_buf()
}

/// What an acquisition keeps between attempts: nothing. Windows has no close notification
/// this crate watches, so reopening costs no wake-up storm, and a handle kept open (without
/// `FILE_SHARE_DELETE`) would stop a holder's delete-on-release.
pub(crate) type Keep = ();

/// What a lock keeps open between holds: nothing. A handle kept open without
/// `FILE_SHARE_DELETE` would stop other processes from deleting the file (their
/// delete-on-release), and opening it with that sharing would let the file be deleted under a
/// holder; an open also raises no event anyone waits for, so the cache would win little.
#[derive(Debug, Default)]
pub(crate) struct Cache;

pub(crate) fn try_lock(
    path: &Path,
    shared: bool,
    _mode: Option<u32>,
    _keep: &mut Keep,
    _cache: Option<&Cache>,
) -> Result<Attempt, Error> {
    let Some(file) = open(path)? else {
        return Ok(Attempt::Contended);
    };
    let r = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match r {
        Ok(()) => Ok(Attempt::Locked(Held { file })),
        Err(TryLockError::WouldBlock) => Ok(Attempt::Contended),
        Err(TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

impl Held {
    /// Releases the lock; Windows keeps nothing between attempts (see [`Keep`]).
    pub(crate) fn unlock_into(self, _keep: &mut Keep) {
        drop(self);
    }

    /// Unlocks and closes; with `delete`, then tries to remove the file.
    ///
    /// Never fails on Windows: closing the handle releases the lock whatever `UnlockFile`
    /// says, and a failed deletion means someone else has the file open, which is fine.
    pub(crate) fn release(
        self,
        path: &Path,
        delete: bool,
        _cache: Option<&Cache>,
    ) -> Result<(), Error> {
        // Wine's UnlockFile can report ERROR_LOCK_VIOLATION for a lock the handle holds; closing
        // the handle releases the lock in every case, so the unlock result is not an error.
        let _ = self.file.unlock();
        drop(self.file);
        if delete {
            // Fails harmlessly with a sharing violation while anyone else has the file open, so
            // it only succeeds when nobody is using the lock.
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// Opens (creating if needed) the lock file and checks that it is a regular file.
/// `Ok(None)`: a transient condition that counts as contention.
fn open(path: &Path) -> Result<Option<File>, Error> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    let mut made_parent = false;
    let mut denied = 0;
    let file = loop {
        match options.open(path) {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made_parent => {
                made_parent = true;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(path, e))?;
                }
            }
            Err(e) => match classify(path, e)? {
                Refused::Busy => return Ok(None),
                Refused::Denied(e) => {
                    denied += 1;
                    if denied > DENIED_RETRIES {
                        return Err(Error::io(path, e));
                    }
                    std::thread::sleep(DENIED_PAUSE);
                }
            },
        }
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.file_type().is_symlink() {
        return Err(Error::not_a_file(
            path,
            "it is a symbolic link or junction, and lock files are never opened through one",
        ));
    }
    if !meta.is_file() {
        return Err(Error::not_a_file(path, "it is not a regular file"));
    }
    Ok(Some(file))
}

/// An open refused for a reason that may pass.
enum Refused {
    /// Someone else has the file open without sharing, or it is being deleted: contention.
    Busy,
    /// "Access denied" on an existing regular file: a file being deleted, or a real denial.
    Denied(io::Error),
}

/// Sorts an open failure into a real error or one that may pass. Access denied on a directory,
/// a symbolic link or junction, or a read-only file is final.
fn classify(path: &Path, e: io::Error) -> Result<Refused, Error> {
    match e.raw_os_error() {
        Some(ERROR_SHARING_VIOLATION) | Some(ERROR_DELETE_PENDING) => Ok(Refused::Busy),
        Some(ERROR_ACCESS_DENIED) => match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(Error::not_a_file(path, "it is a directory")),
            Ok(m) if m.file_type().is_symlink() => Err(Error::not_a_file(
                path,
                "it is a symbolic link or junction, and lock files are never opened through one",
            )),
            Ok(m) if m.permissions().readonly() => Err(Error::io(path, e)),
            Ok(_) => Ok(Refused::Denied(e)),
            // Gone by now: it was being deleted.
            Err(m) if m.kind() == io::ErrorKind::NotFound => Ok(Refused::Busy),
            Err(_) => Err(Error::io(path, e)),
        },
        _ => Err(Error::io(path, e)),
    }
}

/// Opens without following reparse points and without letting others delete the file.
pub(crate) fn harden(options: &mut OpenOptions) {
    options
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
}

/// The computer name. (Python's `socket.gethostname()` asks Winsock, which reports the DNS
/// host name; on most machines the two differ at most in letter case. A Python peer then
/// reads our markers as another host's, which it never breaks: safe, but slower to recover.)
pub(crate) fn host_name_raw() -> Vec<u8> {
    std::env::var("COMPUTERNAME")
        .unwrap_or_default()
        .into_bytes()
}

/// Whether process `pid` still runs, by its exit status (a handle some other process keeps
/// to an exited process does not keep it alive); see [`windows_api::process_alive`].
pub(crate) fn process_alive(pid: u32) -> io::Result<bool> {
    super::windows_api::process_alive(pid)
}

/// The metadata and identity (volume serial number, file index) of what `path` names,
/// through a final reparse point only with `follow`. Read from a handle opened for no data
/// access and sharing everything, as std's own `metadata` opens one, so it never stands in
/// the way of a holder, a reader or a deletion.
pub(crate) fn identify_path(path: &Path, follow: bool) -> io::Result<(Metadata, (u64, u64))> {
    let flags = if follow {
        FILE_FLAG_BACKUP_SEMANTICS
    } else {
        FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT
    };
    let file = OpenOptions::new()
        .access_mode(0)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(flags)
        .open(path)?;
    identify_file(&file)
}

/// The metadata and identity of the open `file`.
pub(crate) fn identify_file(file: &File) -> io::Result<(Metadata, (u64, u64))> {
    Ok((file.metadata()?, super::windows_api::file_id(file)?))
}

/// Windows has no file systems without `LockFileEx` that report it distinctly: never fall
/// back.
pub(crate) fn lacks_flock(_e: &Error, _fallback: crate::SoftFallback) -> bool {
    false
}
