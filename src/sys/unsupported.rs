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

pub(crate) fn try_lock(
    path: &Path,
    _shared: bool,
    _mode: Option<u32>,
    _keep: &mut Keep,
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

    pub(crate) fn release(self, _path: &Path, _delete: bool) -> Result<(), Error> {
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

/// No process API: every pid counts as alive (fail closed).
pub(crate) fn process_alive(_pid: u32) -> io::Result<bool> {
    Ok(true)
}

/// Without any OS lock, a lock that may fall back always does.
pub(crate) fn lacks_flock(_e: &Error, fallback: crate::SoftFallback) -> bool {
    fallback != crate::SoftFallback::Never
}
