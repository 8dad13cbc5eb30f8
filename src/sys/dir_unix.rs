//! Unix directory handles for the soft locks' protocol directories (`strict`'s claim
//! directories, `rw`'s record storage): every operation inside a directory goes through a
//! descriptor of it opened without following a symbolic link, as Python's `dir_fd` calls do.
//!
//! A descriptor already keeps the directory it names, so the pinning variants (`Dir::pin`,
//! [`Dir::pin_child`]) are the plain opens here, and [`Dir::unlink_retrying`] is
//! [`Dir::unlink`]: they differ only where Unix calls are missing (`dir_other.rs`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

#[path = "dir_common.rs"]
mod common;
pub(crate) use common::{foreign_owner, Kind, Stat};

/// Retries a call `EINTR` interrupted.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits as _)
}

/// Owner uid and mode bits.
#[allow(clippy::unnecessary_cast)]
fn owner(st: &rustix::fs::Stat) -> (u32, u32) {
    (st.st_uid as u32, st.st_mode as u32)
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn convert(st: &rustix::fs::Stat) -> Stat {
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Directory,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Stat {
        kind,
        id: (st.st_dev as u64, st.st_ino as u64),
        nlink: Some(st.st_nlink as u64),
        owner: Some(owner(st)),
        mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        size: st.st_size as u64,
        reparse: false,
    }
}

/// An open directory, and the path it was opened by (for messages).
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens `path` as a directory, failing on a symbolic link as its last component.
    pub(crate) fn open(path: &Path) -> io::Result<Dir> {
        let fd = retry(|| rustix::fs::openat(CWD, path, dir_flags(), Mode::empty()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens `path` as a directory held open while the value lives: [`Dir::open`].
    pub(crate) fn pin(path: &Path) -> io::Result<Dir> {
        Dir::open(path)
    }

    /// The path this directory was opened by.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `name` inside this one, failing on a symbolic link.
    pub(crate) fn open_child(&self, name: &OsStr) -> io::Result<Dir> {
        let fd = retry(|| rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()))?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// Opens the directory `name` inside this one, held open: [`Dir::open_child`].
    pub(crate) fn pin_child(&self, name: &OsStr) -> io::Result<Dir> {
        self.open_child(name)
    }

    /// The entries of this directory, less `.` and `..`.
    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// `lstat` of `name` inside this directory.
    pub(crate) fn lstat(&self, name: &OsStr) -> io::Result<Stat> {
        retry(|| rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)).map(|s| convert(&s))
    }

    /// `fstat` of this directory.
    pub(crate) fn stat(&self) -> io::Result<Stat> {
        retry(|| rustix::fs::fstat(&self.fd)).map(|s| convert(&s))
    }

    /// Creates `name` exclusively for reading and writing, never through a link; `bits`
    /// less the umask.
    pub(crate) fn create_read_write(&self, name: &OsStr, bits: u32) -> io::Result<File> {
        self.create(name, OFlags::RDWR, bits)
    }

    /// Creates `name` exclusively for writing, never through a link; `bits` less the umask.
    pub(crate) fn create_write_only(&self, name: &OsStr, bits: u32) -> io::Result<File> {
        self.create(name, OFlags::WRONLY, bits)
    }

    fn create(&self, name: &OsStr, access: OFlags, bits: u32) -> io::Result<File> {
        let flags = access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        retry(|| rustix::fs::openat(&self.fd, name, flags, mode(bits))).map(File::from)
    }

    /// Opens `name` for reading without following a link or blocking on a FIFO.
    pub(crate) fn open_read(&self, name: &OsStr) -> io::Result<File> {
        self.open_file(name, OFlags::RDONLY)
    }

    /// Opens `name` for writing without following a link or blocking on a FIFO (a write
    /// open of one without a reader fails with `ENXIO`: see [`no_reader`]).
    pub(crate) fn open_write(&self, name: &OsStr) -> io::Result<File> {
        self.open_file(name, OFlags::WRONLY)
    }

    fn open_file(&self, name: &OsStr, access: OFlags) -> io::Result<File> {
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        retry(|| rustix::fs::openat(&self.fd, name, flags, Mode::empty())).map(File::from)
    }

    /// A hard link that never replaces (and never follows a link at `source`).
    pub(crate) fn link(&self, source: &OsStr, target: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::linkat(&self.fd, source, &self.fd, target, AtFlags::empty()))
    }

    /// Renames `source` over `target`, both inside this directory.
    pub(crate) fn rename(&self, source: &OsStr, target: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::renameat(&self.fd, source, &self.fd, target))
    }

    /// Removes the file `name` inside this directory.
    pub(crate) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()))
    }

    /// Removes the file `name`, riding out a peer's open where that blocks it: [`Dir::unlink`].
    pub(crate) fn unlink_retrying(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name)
    }

    /// Creates the directory `name` inside this one; `bits` less the umask.
    pub(crate) fn mkdir(&self, name: &OsStr, bits: u32) -> io::Result<()> {
        retry(|| rustix::fs::mkdirat(&self.fd, name, mode(bits)))
    }
}

/// Creates the directory `path`; `bits` less the umask.
pub(crate) fn mkdir(path: &Path, bits: u32) -> io::Result<()> {
    retry(|| rustix::fs::mkdir(path, mode(bits)))
}

/// `lstat` of `path`.
pub(crate) fn lstat(path: &Path) -> io::Result<Stat> {
    retry(|| rustix::fs::lstat(path)).map(|s| convert(&s))
}

/// `stat` of `path` (following links, as Python's `Path.stat`).
pub(crate) fn stat(path: &Path) -> io::Result<Stat> {
    retry(|| rustix::fs::stat(path)).map(|s| convert(&s))
}

/// `fstat` of an open file.
pub(crate) fn fstat(file: &File) -> io::Result<Stat> {
    retry(|| rustix::fs::fstat(file)).map(|s| convert(&s))
}

/// This process's effective uid.
fn effective_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}

/// Narrows the directory `path` (relative to `parent` when given) to `bits` and sets its
/// sticky bit, when this account owns it, so only a claim's owner can remove it even where
/// the mode lets others write. On failure, what could not be done and why.
pub(crate) fn settle_mode(
    parent: Option<&Dir>,
    path: &Path,
    bits: u32,
) -> Result<(), (&'static str, io::Error)> {
    let at = parent.map_or(CWD, |p| p.fd.as_fd());
    let fd = retry(|| rustix::fs::openat(at, path, dir_flags(), Mode::empty()))
        .map_err(|e| ("cannot open", e))?;
    let found = retry(|| rustix::fs::fstat(&fd)).map_err(|e| ("cannot set the mode of", e))?;
    let (uid, current) = owner(&found);
    let settled = (current & 0o7000) | (current & bits & 0o777) | 0o1000;
    if Some(uid) == effective_uid() && settled != current & 0o7777 {
        retry(|| rustix::fs::fchmod(&fd, mode(settled)))
            .map_err(|e| ("cannot set the mode of", e))?;
    }
    Ok(())
}

/// `ENOSYS`, `EXDEV`, `ENOTSUP`: the file system cannot hard-link.
pub(crate) fn hard_link_unsupported(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::NOSYS | Errno::XDEV | Errno::NOTSUP)
    )
}

/// `ESTALE`: an NFS client's cached handle names a file a peer removed.
pub(crate) fn is_stale_handle(e: &io::Error) -> bool {
    Errno::from_io_error(e) == Some(Errno::STALE)
}

/// What an open of a directory without following links ([`Dir::pin`], [`Dir::pin_child`])
/// reports for a symbolic link or a non-directory: `ELOOP`, `EMLINK` (FreeBSD), `ENOTDIR`.
/// (NetBSD's `EFTYPE` is not recognised: there such a directory fails the call as an I/O
/// error instead.)
pub(crate) fn refused_directory(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::LOOP | Errno::MLINK | Errno::NOTDIR)
    )
}

/// `ENXIO`: a write open of a FIFO that has no reader.
pub(crate) fn no_reader(e: &io::Error) -> bool {
    Errno::from_io_error(e) == Some(Errno::NXIO)
}
