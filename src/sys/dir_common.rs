//! What `sys::dir` is the same on every platform: the metadata it reports and the ownership
//! rule built on it. Each platform file of `sys::dir` includes this as a submodule and
//! re-exports it; the platform's `effective_uid` is all it asks of its parent.

/// What a file is, as `lstat` (or `fstat`) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

/// The parts of a `stat` result the soft locks' protocols decide on, the same on every
/// platform.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) kind: Kind,
    /// Device and inode (on Windows what `sys::marker::id` uses).
    pub(crate) id: (u64, u64),
    /// The link count, where the platform exposes it.
    pub(crate) nlink: Option<u64>,
    /// Owner uid and mode bits, where the platform has them.
    pub(crate) owner: Option<(u32, u32)>,
    /// Modification time in nanoseconds since the Unix epoch (before it: negative).
    pub(crate) mtime_ns: i128,
    pub(crate) size: u64,
    /// A Windows reparse point (junction, symbolic link, ...).
    pub(crate) reparse: bool,
}

/// The uid owning `found` when another account controls it under a sticky parent (Python's
/// `foreign_directory_owner`): the sticky bit stops others from renaming this account's
/// directory away, so one that another account owns there is outside the lock's control.
/// Without the sticky bit anyone who can create the directory can also rename this account's
/// own one away, so a refusal there would change nothing. Never on platforms without owners.
pub(crate) fn foreign_owner(found: &Stat, parent: &Stat) -> Option<u32> {
    let ((uid, _), (parent_uid, parent_mode)) = (found.owner?, parent.owner?);
    if parent_mode & 0o1000 == 0 {
        return None;
    }
    let euid = super::effective_uid()?;
    (uid != euid && uid != parent_uid).then_some(uid)
}
