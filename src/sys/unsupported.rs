//! Platforms with neither `flock` nor `LockFileEx`: every attempt reports `Unsupported`.

use std::io;
use std::path::{Path, PathBuf};

use super::Attempt;
use crate::Error;

pub(crate) const ATTEMPT_BLOCKS: bool = false;

/// Never constructed on this platform.
#[derive(Debug)]
pub(crate) enum Held {}

/// What an acquisition keeps between attempts: nothing.
pub(crate) type Keep = ();

/// What a lock keeps open between holds: nothing on this platform.
#[derive(Debug, Default)]
pub(crate) struct Cache;

pub(crate) fn try_lock(
    path: &Path,
    _shared: bool,
    _mode: Option<u32>,
    _keep: &mut Keep,
    _cache: Option<&Cache>,
) -> Result<Attempt, Error> {
    let e = io::Error::new(
        io::ErrorKind::Unsupported,
        "file locks are not supported on this platform",
    );
    Err(Error::io(path, e))
}

impl Held {
    pub(crate) fn unlock_into(self, _keep: &mut Keep) {
        match self {}
    }

    pub(crate) fn release(
        self,
        _path: &Path,
        _delete: bool,
        _cache: Option<&Cache>,
    ) -> Result<(), Error> {
        match self {}
    }
}

pub(crate) fn queue_key(path: &Path) -> PathBuf {
    path.to_path_buf()
}

pub(crate) fn harden(_options: &mut std::fs::OpenOptions) {}

pub(crate) fn host_name_raw() -> Vec<u8> {
    Vec::new()
}

/// What `path` names (through a final link with `follow`) and its identity. std exposes no
/// file index here, so the identity is the creation time (which a hard link shares).
pub(crate) fn identify_path(
    path: &Path,
    follow: bool,
) -> io::Result<(std::fs::Metadata, (u64, u64))> {
    let meta = if follow {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    Ok(by_creation(meta))
}

/// The open `file`'s metadata and identity (see [`identify_path`]).
pub(crate) fn identify_file(file: &std::fs::File) -> io::Result<(std::fs::Metadata, (u64, u64))> {
    Ok(by_creation(file.metadata()?))
}

fn by_creation(meta: std::fs::Metadata) -> (std::fs::Metadata, (u64, u64)) {
    let created = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (meta, (0, created))
}

/// No process API: every pid counts as alive (fail closed).
pub(crate) fn process_alive(_pid: u32) -> io::Result<bool> {
    Ok(true)
}

/// Without any OS lock, a lock that may fall back always does.
pub(crate) fn lacks_flock(_e: &Error, fallback: crate::SoftFallback) -> bool {
    fallback != crate::SoftFallback::Never
}
