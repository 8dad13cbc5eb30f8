//! Platforms without a call that swaps two names in one step.

use std::io;
use std::path::Path;

/// There is no exchange here: always `Ok(false)`, so the caller falls back.
pub(crate) fn exchange(_a: &Path, _b: &Path) -> io::Result<bool> {
    Ok(false)
}
