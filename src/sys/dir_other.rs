//! Directory handles where Unix calls are missing (Windows, and any other platform std
//! supports): path-based operations through std. There are no modes, no owner or sticky bit,
//! no link count, and a file's identity is what `sys::marker` reads from a handle (on
//! Windows the volume serial number and file index, which a hard link shares).
//!
//! The two users of this layer check directories differently here, and each keeps its way:
//!
//! - [`Dir::open`] and [`Dir::open_child`] (`strict`'s claim directories) check that the path
//!   is a directory and hold nothing open; files in them are opened sharing delete, so a
//!   claim's owner can remove it while a peer reads it, and [`Dir::unlink_retrying`] rides
//!   out a peer's open;
//! - [`Dir::pin`] and [`Dir::pin_child`] (`rw`'s record storage) hold each directory open for
//!   the value's life (on Windows an open handle blocks a rename of the directory, and with it
//!   a swap for a junction), as Python's `pin_directories` does, and refuse a junction or
//!   symbolic link with `NotADirectory` ([`refused_directory`]).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

#[path = "dir_common.rs"]
mod common;
pub(crate) use common::{foreign_owner, Kind, Stat};

#[cfg(windows)]
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

use super::marker::Meta;

fn convert(meta: &Meta) -> Stat {
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        Kind::Symlink
    } else if file_type.is_dir() {
        Kind::Directory
    } else if file_type.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    let mtime_ns = meta
        .modified()
        .map_or(0, |t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        });
    #[cfg(windows)]
    let reparse = {
        use std::os::windows::fs::MetadataExt;
        const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
        meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0
    };
    #[cfg(not(windows))]
    let reparse = false;
    Stat {
        kind,
        id: super::marker::id(meta),
        // Not exposed by std here: an unpublished record then ages out by its mtime.
        nlink: None,
        owner: None,
        mtime_ns,
        size: meta.len(),
        reparse,
    }
}

/// Opens a file without following a final reparse point.
fn options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    }
    options
}

/// Holds `path` open as a directory (Python's `pin_directory`): a junction, a symbolic
/// link or anything but a directory is refused with `NotADirectory`.
fn pin(path: &Path) -> io::Result<Option<File>> {
    let not_a_directory = || {
        io::Error::new(
            io::ErrorKind::NotADirectory,
            format!(
                "{} is a junction or symlink, not a directory",
                path.display()
            ),
        )
    };
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_LIST_DIRECTORY: u32 = 0x0001;
        const FILE_READ_ATTRIBUTES: u32 = 0x0080;
        const SYNCHRONIZE: u32 = 0x0010_0000;
        const FILE_SHARE_READ: u32 = 0x1;
        const FILE_SHARE_WRITE: u32 = 0x2;
        const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
        let handle = OpenOptions::new()
            .access_mode(FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES | SYNCHRONIZE)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)?;
        let found = convert(&super::marker::fstat(&handle)?);
        if found.kind != Kind::Directory || found.reparse {
            return Err(not_a_directory());
        }
        Ok(Some(handle))
    }
    #[cfg(not(windows))]
    {
        if !std::fs::symlink_metadata(path)?.is_dir() {
            return Err(not_a_directory());
        }
        Ok(None)
    }
}

/// `path` is a directory itself, not a link to one.
fn real_directory(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} is not a real directory",
            path.display()
        )))
    }
}

/// A directory by path, held open while the value lives when it was pinned (where the
/// platform can).
pub(crate) struct Dir {
    path: PathBuf,
    _pin: Option<File>,
}

// The same operations as the Unix `Dir`'s, by path.
impl Dir {
    /// `path`, when it is a directory (or a link to one); nothing is held open.
    pub(crate) fn open(path: &Path) -> io::Result<Dir> {
        if !std::fs::metadata(path)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Ok(Dir {
            path: path.to_path_buf(),
            _pin: None,
        })
    }

    /// Opens (pins) `path` as a directory: see [`pin`].
    pub(crate) fn pin(path: &Path) -> io::Result<Dir> {
        Ok(Dir {
            _pin: pin(path)?,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `name` inside this one, when it is a real directory (not a link);
    /// nothing is held open.
    pub(crate) fn open_child(&self, name: &OsStr) -> io::Result<Dir> {
        let path = self.path.join(name);
        real_directory(&path)?;
        Ok(Dir { path, _pin: None })
    }

    /// Opens (pins) the directory `name` inside this one: see [`pin`].
    pub(crate) fn pin_child(&self, name: &OsStr) -> io::Result<Dir> {
        Dir::pin(&self.path.join(name))
    }

    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(&self.path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    pub(crate) fn lstat(&self, name: &OsStr) -> io::Result<Stat> {
        lstat(&self.path.join(name))
    }

    pub(crate) fn stat(&self) -> io::Result<Stat> {
        stat(&self.path)
    }

    pub(crate) fn create_read_write(&self, name: &OsStr, _bits: u32) -> io::Result<File> {
        options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path.join(name))
    }

    pub(crate) fn create_write_only(&self, name: &OsStr, _bits: u32) -> io::Result<File> {
        options()
            .write(true)
            .create_new(true)
            .open(self.path.join(name))
    }

    pub(crate) fn open_read(&self, name: &OsStr) -> io::Result<File> {
        options().read(true).open(self.path.join(name))
    }

    pub(crate) fn open_write(&self, name: &OsStr) -> io::Result<File> {
        options().write(true).open(self.path.join(name))
    }

    pub(crate) fn link(&self, source: &OsStr, target: &OsStr) -> io::Result<()> {
        std::fs::hard_link(self.path.join(source), self.path.join(target))
    }

    pub(crate) fn rename(&self, source: &OsStr, target: &OsStr) -> io::Result<()> {
        std::fs::rename(self.path.join(source), self.path.join(target))
    }

    /// One attempt: a refusal (Windows, while another process holds the file open) is the
    /// caller's to judge.
    pub(crate) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    /// Windows refuses to delete a file a peer has open without sharing delete for a
    /// moment: retry ten times, doubling a millisecond.
    pub(crate) fn unlink_retrying(&self, name: &OsStr) -> io::Result<()> {
        let path = self.path.join(name);
        let mut delay = Duration::from_millis(1);
        for attempt in 0..10 {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied && attempt < 9 => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                r => return r,
            }
        }
        Ok(())
    }

    pub(crate) fn mkdir(&self, name: &OsStr, bits: u32) -> io::Result<()> {
        mkdir(&self.path.join(name), bits)
    }
}

// As the Unix functions of the same names; no modes here.
pub(crate) fn mkdir(path: &Path, _bits: u32) -> io::Result<()> {
    std::fs::create_dir(path)
}

pub(crate) fn lstat(path: &Path) -> io::Result<Stat> {
    super::marker::lstat(path).map(|m| convert(&m))
}

pub(crate) fn stat(path: &Path) -> io::Result<Stat> {
    super::marker::stat(path).map(|m| convert(&m))
}

pub(crate) fn fstat(file: &File) -> io::Result<Stat> {
    super::marker::fstat(file).map(|m| convert(&m))
}

/// No uids here.
fn effective_uid() -> Option<u32> {
    None
}

/// No modes or sticky bit here.
pub(crate) fn settle_mode(
    _parent: Option<&Dir>,
    _path: &Path,
    _bits: u32,
) -> Result<(), (&'static str, io::Error)> {
    Ok(())
}

/// `ERROR_INVALID_FUNCTION`, `ERROR_NOT_SAME_DEVICE`, `ERROR_NOT_SUPPORTED`.
pub(crate) fn hard_link_unsupported(e: &io::Error) -> bool {
    (cfg!(windows) && matches!(e.raw_os_error(), Some(1 | 17 | 50)))
        || e.kind() == io::ErrorKind::Unsupported
}

/// No NFS handles here.
pub(crate) fn is_stale_handle(_e: &io::Error) -> bool {
    false
}

/// What [`pin`] reports for a junction, a symbolic link or a non-directory.
pub(crate) fn refused_directory(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotADirectory
}

/// No FIFOs here.
pub(crate) fn no_reader(_e: &io::Error) -> bool {
    false
}
