//! File operations for soft-lock markers where Unix calls are missing (Windows, and any
//! other platform std supports), written against std and the platform module's
//! `identify_path`/`identify_file`.
//!
//! A marker's identity is what the platform reads from a handle: on Windows the volume
//! serial number and file index (`GetFileInformationByHandle`), which hard links share and
//! no other file on the volume has while the file exists.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Deref;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// A file's metadata together with its identity, which std's `Metadata` does not expose
/// here on stable Rust.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    meta: Metadata,
    id: (u64, u64),
}

impl Deref for Meta {
    type Target = Metadata;

    fn deref(&self) -> &Metadata {
        &self.meta
    }
}

impl Meta {
    fn new((meta, id): (Metadata, (u64, u64))) -> Meta {
        Meta { meta, id }
    }
}

/// What `path` names, never through a final link or reparse point.
pub(crate) fn lstat(path: &Path) -> io::Result<Meta> {
    super::identify_path(path, false).map(Meta::new)
}

/// What `path` names, through a final link.
pub(crate) fn stat(path: &Path) -> io::Result<Meta> {
    super::identify_path(path, true).map(Meta::new)
}

/// The open `file`.
pub(crate) fn fstat(file: &File) -> io::Result<Meta> {
    super::identify_file(file).map(Meta::new)
}

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

/// Volume and file index (see the module's notes).
pub(crate) fn id(meta: &Meta) -> (u64, u64) {
    meta.id
}

/// What changes whenever a marker is written, touched or recreated: modification time,
/// file index and size.
pub(crate) fn change_key(meta: &Meta) -> (i128, u64, i128) {
    (nanos(meta.modified()), meta.id.1, meta.len() as i128)
}

/// Modification time and file index, Python's "same marker as judged" test.
pub(crate) fn judged_key(meta: &Meta) -> (i128, u64) {
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
