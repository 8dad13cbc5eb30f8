//! File operations for soft-lock markers where Unix calls are missing (Windows, and any
//! other platform std supports), written against std alone.
//!
//! Windows has no inode numbers std exposes on stable Rust, so a marker's identity is its
//! creation time, which is as precise as the file system keeps it (100 ns on NTFS).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Windows refuses to delete a file that is still open.
pub(crate) const REMOVE_WHILE_OPEN: bool = false;

pub(crate) fn create(path: &Path, _mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    super::harden(&mut options);
    options.open(path)
}

pub(crate) fn apply_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    super::harden(&mut options);
    options.open(path)
}

/// Nothing to pin: a file open elsewhere cannot be renamed or deleted here anyway.
pub(crate) fn pin(path: &Path) -> io::Result<Option<(File, u64)>> {
    std::fs::symlink_metadata(path)?;
    Ok(None)
}

fn nanos(t: io::Result<std::time::SystemTime>) -> i128 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

pub(crate) fn id(meta: &Metadata) -> (u64, u64) {
    (0, nanos(meta.created()) as u64)
}

pub(crate) fn change_key(meta: &Metadata) -> (i128, u64, i128) {
    (nanos(meta.modified()), id(meta).1, meta.len() as i128)
}

pub(crate) fn judged_key(meta: &Metadata) -> (i128, u64) {
    let k = change_key(meta);
    (k.0, k.1)
}

pub(crate) fn linked(_file: &File) -> io::Result<bool> {
    Ok(true)
}

pub(crate) fn write_at_start(mut file: &File, data: &[u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    file.write_all(data)
}

pub(crate) fn check_writable(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        Ok(meta) if meta.permissions().readonly() => {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
        _ => Ok(()),
    }
}
