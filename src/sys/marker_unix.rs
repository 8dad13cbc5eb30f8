//! Unix file operations for soft-lock markers and strict claims.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// A marker can be unlinked while this process keeps it open.
pub(crate) const REMOVE_WHILE_OPEN: bool = true;

/// Creates `path` exclusively for writing, never through a symbolic link, with `mode` less
/// group/other write (and less the umask).
pub(crate) fn create(path: &Path, mode: u32) -> io::Result<File> {
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NONBLOCK
        | OFlags::NOCTTY;
    let fd = retry(|| rustix::fs::open(path, flags, Mode::from_raw_mode((mode & !0o022) as _)))?;
    Ok(File::from(fd))
}

/// Applies an explicit mode past the umask (group/other write are never granted).
pub(crate) fn apply_mode(file: &File, mode: u32) -> io::Result<()> {
    let mode = Mode::from_raw_mode((mode & !0o022) as _);
    match retry(|| rustix::fs::fchmod(file, mode)) {
        // Python ignores a refused chmod (some file systems do not support it).
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        r => r,
    }
}

/// Opens `path` for reading without following a symbolic link or blocking on a FIFO.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    Ok(File::from(retry(|| {
        rustix::fs::open(path, flags, Mode::empty())
    })?))
}

/// Keeps the node at `path` allocated (so its inode number names nothing else) and returns
/// its inode number; `None` where nothing can be pinned. `NotFound` when the path is gone.
pub(crate) fn pin(path: &Path) -> io::Result<Option<(File, u64)>> {
    let flags = pin_flags() | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match retry(|| rustix::fs::open(path, flags, Mode::empty())) {
        Ok(fd) => {
            let file = File::from(fd);
            let ino = file.metadata()?.ino();
            Ok(Some((file, ino)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => Ok(None),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn pin_flags() -> OFlags {
    // O_PATH pins any node, a symlink or socket included, without read permission.
    OFlags::PATH
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pin_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NONBLOCK
}

/// A file's metadata; on Unix std's carries the identity (device and inode) itself.
pub(crate) type Meta = Metadata;

/// What `path` names, never through a final symbolic link.
pub(crate) fn lstat(path: &Path) -> io::Result<Meta> {
    std::fs::symlink_metadata(path)
}

/// The open `file`.
pub(crate) fn fstat(file: &File) -> io::Result<Meta> {
    file.metadata()
}

/// Device and inode.
pub(crate) fn id(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// What changes whenever a marker is written, touched or recreated: modification time,
/// inode and change time (which no owner can set back).
pub(crate) fn change_key(meta: &Metadata) -> (i128, u64, i128) {
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    (
        ns(meta.mtime(), meta.mtime_nsec()),
        meta.ino(),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

/// Modification time and inode, Python's "same marker as judged" test.
pub(crate) fn judged_key(meta: &Metadata) -> (i128, u64) {
    let k = change_key(meta);
    (k.0, k.1)
}

/// Whether the open file still has a name somewhere.
pub(crate) fn linked(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.nlink() > 0)
}

/// Overwrites the start of `file` with `data`.
pub(crate) fn write_at_start(file: &File, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, 0)
}

fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Whether `path` exists as a file this process could never write (not merely one a holder
/// has): a directory is `IsADirectory`, a file without write permission `PermissionDenied`.
pub(crate) fn check_writable(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        return Err(io::Error::from(io::ErrorKind::IsADirectory));
    }
    if meta.mode() & 0o200 == 0 && !meta.file_type().is_symlink() {
        use rustix::fs::{Access, AtFlags, CWD};
        let flags = AtFlags::EACCESS | AtFlags::SYMLINK_NOFOLLOW;
        if rustix::fs::accessat(CWD, path, Access::WRITE_OK, flags).is_err()
            && std::fs::symlink_metadata(path).is_ok()
        {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
    }
    Ok(())
}
