//! Swapping two names in one step: `renameat2(RENAME_EXCHANGE)` on Linux,
//! `renamex_np(RENAME_SWAP)` on Apple systems.

use std::io;
use std::path::Path;

use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

/// Exchanges the names `a` and `b`. `Ok(false)` where the file system cannot (NFS, SMB,
/// overlayfs, old kernels), so the caller falls back.
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    loop {
        return match rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::INTR) => continue,
            // (ENOTSUP and EOPNOTSUPP are one value on some systems, so compare, not match.)
            Err(e)
                if [
                    Errno::INVAL,
                    Errno::NOSYS,
                    Errno::XDEV,
                    Errno::NOTSUP,
                    Errno::OPNOTSUPP,
                ]
                .contains(&e) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        };
    }
}
