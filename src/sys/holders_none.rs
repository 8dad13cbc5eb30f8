//! Platforms whose kernel does not say who holds a file lock (or where this crate does not
//! ask yet): no answer rather than a guess.

use std::path::Path;

use crate::Holder;

/// Always `None`: this platform cannot tell.
pub(crate) fn holders(_path: &Path) -> Option<Vec<Holder>> {
    None
}
