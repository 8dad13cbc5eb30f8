//! Record storage under `<lock>.rw/` (port of `_soft_rw/_storage.py`).
//!
//! Every record lives in one of the two protocol directories, `<root>/gen` and
//! `<root>/holders`. Each operation opens the root and then the record's directory without
//! following a symbolic link, checks who owns what it opened, and works inside what it
//! opened (`openat`, `linkat`, `renameat`, ... on Unix), as Python's `dir_fd` calls do. No
//! descriptor outlives the call, so a log removed and started again by name is found on the
//! next call.
//!
//! Python passes whole path strings and splits them again; every path it passes is
//! `<root>/<gen|holders>/<name>`, so here an operation names its [`Area`] and the record's
//! name instead.
//!
//! Where Unix calls are missing (Windows), operations go by path through std, and each
//! directory of a record path is held open for the length of the call (on Windows an open
//! handle blocks a rename of the directory, and with it a swap for a junction), as Python's
//! `pin_directories` does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::protocol::{GENERATIONS_DIRECTORY, HOLDERS_DIRECTORY, MAX_RECORD_SIZE};
use crate::Error;

use crate::sys::dir::{self as imp, Kind, Stat};

/// Protocol directories are private to this account (before the umask).
const DIRECTORY_MODE: u32 = 0o700;
/// Records are private to this account (before the umask).
const FILE_MODE: u32 = 0o600;
/// Windows refuses an open with `EACCES` while another process deletes the file or holds it
/// without sharing; both clear within moments, so an open is retried this long first.
const WINDOWS_OPEN_GRACE: Duration = Duration::from_millis(500);
/// The pause between those retries.
const WINDOWS_OPEN_RETRY: Duration = Duration::from_millis(2);
/// Python's `raise_if_hard_links_unsupported` reason.
const NO_HARD_LINKS: &str = "filesystem does not support atomic no-replace hard-link publication";

/// One of the two protocol directories under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Area {
    /// `gen/`: snapshots, `epoch`, `HEAD` and commit temporaries.
    Generations,
    /// `holders/`: one liveness record per participant.
    Holders,
}

impl Area {
    fn name(self) -> &'static str {
        match self {
            Area::Generations => GENERATIONS_DIRECTORY,
            Area::Holders => HOLDERS_DIRECTORY,
        }
    }
}

/// Why a storage or protocol step failed, in Python's exception classes: the protocol
/// reacts differently to each.
#[derive(Debug)]
pub(super) enum Fault {
    /// An `OSError`.
    Os(io::Error),
    /// Python's `TreeReplacedError`: a protocol directory is a symbolic link, not a
    /// directory, or belongs to another account. Not an `OSError`.
    Replaced(String),
    /// Python's `SoftFileLockProtocolError` (an `OSError` too): state the protocol will not
    /// interpret, about one record (`record`) or the lock as a whole.
    Protocol {
        record: Option<String>,
        reason: Cow<'static, str>,
    },
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        Fault::Os(e)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Os(e) => write!(f, "{e}"),
            Fault::Replaced(message) => f.write_str(message),
            Fault::Protocol {
                record: None,
                reason,
            } => f.write_str(reason),
            Fault::Protocol {
                record: Some(record),
                reason,
            } => write!(f, "claim {record:?}: {reason}"),
        }
    }
}

impl Fault {
    /// A `SoftFileLockProtocolError`.
    pub(super) fn protocol(record: Option<String>, reason: impl Into<Cow<'static, str>>) -> Fault {
        Fault::Protocol {
            record,
            reason: reason.into(),
        }
    }

    /// Python's `FileNotFoundError` (`ENOENT`).
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, Fault::Os(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// Python's `FileExistsError` (`EEXIST`).
    pub(super) fn is_exists(&self) -> bool {
        matches!(self, Fault::Os(e) if e.kind() == io::ErrorKind::AlreadyExists)
    }

    /// The crate's error for this fault on the lock at `lock` (the user's path). A replaced
    /// tree is a [`Protocol`](crate::ErrorKind::Protocol) error, with Python's wording.
    pub(super) fn into_error(self, lock: &Path) -> Error {
        match self {
            Fault::Os(e) => Error::io(lock, e),
            other => Error::protocol(lock, other.to_string()),
        }
    }
}

/// Which way a record is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Python's `_MISSING_ERRNOS`: `ENOENT`, and `ESTALE`, which an NFS client reports for a file
/// a peer unlinked out from under its cached handle.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::StaleNetworkFileHandle
    )
}

/// Python's `PermissionError` (`EACCES`, `EPERM`).
fn is_permission(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

fn foreign_message(path: &Path, uid: u32) -> String {
    format!(
        "{} belongs to uid {uid}, not to this process's account or the parent's owner",
        path.display()
    )
}

/// The directory holding `path` (`.` for a bare name), as `Path(path).parent` gives it.
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Python's `OsFiles`: records under one lock's protocol root, opened without following
/// symbolic links, in directories this account controls.
#[derive(Debug)]
pub(super) struct Files {
    root: PathBuf,
    state: Mutex<State>,
}

/// What `prepare` and the directory checks remember between calls.
#[derive(Debug, Default)]
struct State {
    prepared: bool,
    /// The directories already admitted, by path: their (device, inode) when checked.
    identities: HashMap<PathBuf, (u64, u64)>,
}

impl Files {
    /// Storage for the protocol root `root` (`<canonical lock>.rw`). No I/O.
    pub(super) fn new(root: PathBuf) -> Files {
        Files {
            root,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file's bytes (at most [`MAX_RECORD_SIZE`] + 1 of them), `None` when it does not
    /// exist, or empty when it is not a regular file. A FIFO planted at the name does not
    /// block the open.
    pub(super) fn read(&self, area: Area, name: &str) -> Result<Option<Vec<u8>>, Fault> {
        let Some(file) = self.open(area, name, Access::Read)? else {
            return Ok(None);
        };
        if imp::fstat(&file)?.kind != Kind::File {
            return Ok(Some(Vec::new()));
        }
        let mut data = Vec::with_capacity(256);
        (&file)
            .take(MAX_RECORD_SIZE as u64 + 1)
            .read_to_end(&mut data)?;
        Ok(Some(data))
    }

    /// Python's `_open`: missing is the one answer a caller acts on without failing. On
    /// Windows a refused open is usually another process mid-delete, so it is retried through
    /// a short grace, after which the file counts as on its way out: missing.
    fn open(&self, area: Area, name: &str, access: Access) -> Result<Option<File>, Fault> {
        let mut deadline: Option<Instant> = None;
        loop {
            let attempt = self.directory(area).and_then(|dir| {
                let name = OsStr::new(name);
                match access {
                    Access::Read => dir.open_read(name),
                    Access::Write => dir.open_write(name),
                }
                .map_err(Fault::Os)
            });
            match attempt {
                Ok(file) => return Ok(Some(file)),
                Err(Fault::Os(e)) if is_missing(&e) => return Ok(None),
                Err(Fault::Os(e)) if cfg!(windows) && is_permission(&e) => {
                    let now = Instant::now();
                    match deadline {
                        None => deadline = Some(now + WINDOWS_OPEN_GRACE),
                        Some(end) if now >= end => return Ok(None),
                        Some(_) => {}
                    }
                    std::thread::sleep(WINDOWS_OPEN_RETRY);
                }
                Err(fault) => return Err(fault),
            }
        }
    }

    /// Opens the root and then `area`'s directory, each without following a symbolic link and
    /// each checked for ownership (Python's `_directory` at depth 2).
    fn directory(&self, area: Area) -> Result<imp::Dir, Fault> {
        let root = self.open_directory(None, &self.root)?;
        self.open_directory(Some(&root), &self.root.join(area.name()))
    }

    /// Opens `path` (relative to `parent` when given) as a directory without following a
    /// symbolic link, and admits it.
    fn open_directory(&self, parent: Option<&imp::Dir>, path: &Path) -> Result<imp::Dir, Fault> {
        let opened = match parent {
            None => imp::Dir::pin(path),
            Some(parent) => parent.pin_child(path.file_name().unwrap_or(path.as_os_str())),
        };
        let dir = opened.map_err(|e| {
            if imp::refused_directory(&e) {
                Fault::Replaced(format!(
                    "{} is not a directory or is a symlink; refusing to use it",
                    path.display()
                ))
            } else {
                Fault::Os(e)
            }
        })?;
        self.admit(&dir, path, parent)?;
        Ok(dir)
    }

    /// Python's `_admit`: a directory other than the one last checked may belong to another
    /// account (the tree can be renamed aside and recreated while this object lives), so the
    /// ownership check holds for what is open now.
    fn admit(&self, dir: &imp::Dir, path: &Path, parent: Option<&imp::Dir>) -> Result<(), Fault> {
        let found = dir.stat()?;
        if self.state().identities.get(path) == Some(&found.id) {
            return Ok(());
        }
        let above = match parent {
            Some(parent) => parent.stat()?,
            None => imp::stat(parent_of(path))?,
        };
        if let Some(uid) = imp::foreign_owner(&found, &above) {
            return Err(Fault::Replaced(foreign_message(path, uid)));
        }
        self.state().identities.insert(path.to_path_buf(), found.id);
        Ok(())
    }

    /// Creates the file exclusively with `data` written in full and returns its (device,
    /// inode), which [`overwrite`](Files::overwrite) checks the name still leads to.
    /// `durable` flushes it to stable storage first. A `FileExistsError` when it exists.
    pub(super) fn create(
        &self,
        area: Area,
        name: &str,
        data: &[u8],
        durable: bool,
    ) -> Result<(u64, u64), Fault> {
        let file = self
            .directory(area)?
            .create_write_only(OsStr::new(name), FILE_MODE)?;
        let written = (|| {
            (&file).write_all(data)?;
            if durable {
                file.sync_all()?;
            }
            imp::fstat(&file)
        })();
        match written {
            Ok(stat) => Ok(stat.id),
            Err(e) => {
                drop(file);
                // The name is unique to this call, so removing it cannot take a record from
                // anyone else.
                self.unlink(area, name)?;
                Err(Fault::Os(e))
            }
        }
    }

    /// Removes the file, tolerating one that is already gone, and one the system refuses to
    /// remove (Windows, while another process holds it open): a later participant repeats
    /// the cleanup.
    pub(super) fn unlink(&self, area: Area, name: &str) -> Result<(), Fault> {
        let removed = self
            .directory(area)
            .and_then(|dir| dir.unlink(OsStr::new(name)).map_err(Fault::Os));
        match removed {
            Err(Fault::Os(e)) if is_missing(&e) || is_permission(&e) => Ok(()),
            other => other,
        }
    }

    /// Hard-links `source` to `target` without replacing; `true` when `target` names
    /// `source`'s file afterwards. The file's identity decides, not the call's result: an NFS
    /// retransmit can report a link that landed as failed. A file system without hard links
    /// is a protocol error.
    pub(super) fn link(&self, area: Area, source: &str, target: &str) -> Result<bool, Fault> {
        let dir = self.directory(area)?;
        let (source, target) = (OsStr::new(source), OsStr::new(target));
        let failure = match dir.link(source, target) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
            Err(e) if imp::hard_link_unsupported(&e) => {
                return Err(Fault::protocol(None, NO_HARD_LINKS));
            }
            Err(e) => Some(e),
        };
        let linked = dir.lstat(source).ok().map(|s| s.id);
        if linked.is_some() && linked == dir.lstat(target).ok().map(|s| s.id) {
            return Ok(true);
        }
        // Any other error on a link that did not land is a fault, not a peer winning.
        match failure {
            Some(e) => Err(Fault::Os(e)),
            None => Ok(false),
        }
    }

    /// Renames `source` over `target` atomically; `false` when the system refused (Windows
    /// refuses while a reader holds `target` open; callers tolerate a target one behind).
    pub(super) fn replace(&self, area: Area, source: &str, target: &str) -> Result<bool, Fault> {
        let renamed = self.directory(area).and_then(|dir| {
            dir.rename(OsStr::new(source), OsStr::new(target))
                .map_err(Fault::Os)
        });
        match renamed {
            Ok(()) => Ok(true),
            Err(Fault::Os(e)) if is_permission(&e) => Ok(false),
            Err(fault) => Err(fault),
        }
    }

    /// Rewrites from offset zero the file [`create`](Files::create) returned `identity` for;
    /// `false` when the name no longer leads to that file (gone, replaced, a second name for
    /// it, or a FIFO without a reader).
    pub(super) fn overwrite(
        &self,
        area: Area,
        name: &str,
        data: &[u8],
        identity: (u64, u64),
    ) -> Result<bool, Fault> {
        let file = match self.open(area, name, Access::Write) {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(false),
            Err(Fault::Os(e)) if imp::no_reader(&e) => return Ok(false),
            Err(fault) => return Err(fault),
        };
        // The protocol never links holder records, so a second name marks a file that
        // inherited a removed record's inode number.
        let opened = imp::fstat(&file)?;
        if opened.kind != Kind::File
            || opened.id != identity
            || opened.nlink.is_some_and(|n| n != 1)
        {
            return Ok(false);
        }
        (&file).write_all(data)?;
        Ok(true)
    }

    /// The names in `area`'s directory, or none when it does not exist.
    pub(super) fn listdir(&self, area: Area) -> Result<Vec<OsString>, Fault> {
        match self
            .directory(area)
            .and_then(|dir| dir.names().map_err(Fault::Os))
        {
            Err(fault) if fault.is_not_found() => Ok(Vec::new()),
            other => other,
        }
    }

    /// Creates the protocol directories (and the lock's missing parent directories),
    /// refusing anything at those paths that is not a real directory this account controls.
    /// Done once; `force` repeats it after a write found a directory missing.
    pub(super) fn prepare(&self, force: bool) -> Result<(), Fault> {
        {
            let mut state = self.state();
            if state.prepared && !force {
                return Ok(());
            }
            if force {
                state.identities.clear();
            }
        }
        std::fs::create_dir_all(parent_of(&self.root))?;
        // The root itself, by its whole path (Python's depth 0).
        match imp::mkdir(&self.root, DIRECTORY_MODE) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(Fault::Os(e)),
            _ => {}
        }
        let found = imp::lstat(&self.root)?;
        let above = imp::stat(parent_of(&self.root))?;
        self.settle(&self.root, &found, &above)?;
        // gen/ and holders/, inside the opened root (depth 1).
        for area in [Area::Generations, Area::Holders] {
            let path = self.root.join(area.name());
            let root = self.open_directory(None, &self.root)?;
            let name = OsStr::new(area.name());
            match root.mkdir(name, DIRECTORY_MODE) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(Fault::Os(e)),
                _ => {}
            }
            // mkdir has no O_NOFOLLOW, so check what the name resolves to before the lock
            // creates anything in it.
            let found = root.lstat(name)?;
            let above = root.stat()?;
            self.settle(&path, &found, &above)?;
        }
        self.state().prepared = true;
        Ok(())
    }

    /// `prepare`'s check of one directory, remembering it once it passes.
    fn settle(&self, path: &Path, found: &Stat, above: &Stat) -> Result<(), Fault> {
        if found.kind != Kind::Directory || found.reparse {
            return Err(Fault::Replaced(format!(
                "{} exists but is not a directory or is a symlink; refusing to use it",
                path.display()
            )));
        }
        if let Some(uid) = imp::foreign_owner(found, above) {
            return Err(Fault::Replaced(foreign_message(path, uid)));
        }
        self.state().identities.insert(path.to_path_buf(), found.id);
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A holder or generation file of any size reads as at most the cap plus one byte,
        /// so the parsers see an oversized record as such without it being read whole.
        #[test]
        fn records_are_read_up_to_one_byte_past_the_cap(
            size in prop_oneof![
                0..64usize,
                MAX_RECORD_SIZE - 64..=MAX_RECORD_SIZE + 64,
                MAX_RECORD_SIZE..2 * MAX_RECORD_SIZE,
            ],
            fill in any::<u8>(),
            area in prop_oneof![Just(Area::Generations), Just(Area::Holders)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("data.lock.rw");
            let files = Files::new(root.clone());
            files.prepare(false).unwrap();
            let data = vec![fill; size];
            std::fs::write(root.join(area.name()).join("record"), &data).unwrap();
            let read = files.read(area, "record").unwrap().unwrap();
            prop_assert_eq!(read.len(), size.min(MAX_RECORD_SIZE + 1));
            prop_assert!(read.iter().all(|&b| b == fill));
            prop_assert!(read.capacity() <= 2 * (MAX_RECORD_SIZE + 1));
        }
    }
}
