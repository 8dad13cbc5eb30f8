#!/usr/bin/env python3
"""A pass-through FUSE file system that can report a user over quota (EDQUOT).

    quotafs.py BACKING MOUNTPOINT

Every call is passed to the directory BACKING, except while the file BACKING/.quota exists
(it is hidden from the mount): then its first word says which limit is reached,

- ``blocks``: writes and truncations that grow a file fail with EDQUOT, as on a file system
  whose user has used up its block quota (an empty file can still be created);
- ``inodes``: creating any file, directory, link or symbolic link fails with EDQUOT, as once
  the inode quota is used up (and writes fail too, as with no blocks).

The fault suite (tests/faults/fs.rs) uses it because the kernels it runs on may lack quota
support on every file system a test can mount (tmpfs quotas need CONFIG_TMPFS_QUOTA, ext4's
need CONFIG_QFMT_V2). Runs in the foreground until unmounted. Needs fusepy and libfuse2,
which scripts/setup installs.
"""

import errno
import os
import sys

from fuse import FUSE, FuseOSError, Operations

CONTROL = ".quota"


class QuotaFS(Operations):
    def __init__(self, root):
        self.root = os.path.realpath(root)

    def _path(self, path):
        if path.lstrip("/") == CONTROL:
            raise FuseOSError(errno.ENOENT)
        return os.path.join(self.root, path.lstrip("/"))

    def _limit(self):
        try:
            with open(os.path.join(self.root, CONTROL)) as f:
                return f.read().split()[0]
        except (OSError, IndexError):
            return None

    def _no_blocks(self):
        if self._limit() in ("blocks", "inodes"):
            raise FuseOSError(errno.EDQUOT)

    def _no_inodes(self):
        if self._limit() == "inodes":
            raise FuseOSError(errno.EDQUOT)

    # Metadata.
    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path)) if fh is None else os.fstat(fh)
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                "st_atime", "st_mtime", "st_ctime")
        return {k: getattr(st, k) for k in keys}

    def access(self, path, mode):
        if not os.access(self._path(path), mode, follow_symlinks=False):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode, follow_symlinks=False)

    def chown(self, path, uid, gid):
        os.chown(self._path(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        os.utime(self._path(path), times, follow_symlinks=False)

    def readdir(self, path, fh):
        names = [n for n in os.listdir(self._path(path)) if not (path == "/" and n == CONTROL)]
        return [".", ".."] + names

    def readlink(self, path):
        return os.readlink(self._path(path))

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    # Names: each needs an inode.
    def mknod(self, path, mode, dev):
        self._no_inodes()
        os.mknod(self._path(path), mode, dev)

    def mkdir(self, path, mode):
        self._no_inodes()
        os.mkdir(self._path(path), mode)

    def symlink(self, name, target):
        self._no_inodes()
        os.symlink(target, self._path(name))

    def link(self, target, name):
        self._no_inodes()
        os.link(self._path(name), self._path(target))

    def create(self, path, mode, fi=None):
        self._no_inodes()
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def rmdir(self, path):
        os.rmdir(self._path(path))

    def unlink(self, path):
        os.unlink(self._path(path))

    def rename(self, old, new):
        os.rename(self._path(old), self._path(new))

    # Contents.
    def open(self, path, flags):
        return os.open(self._path(path), flags & ~os.O_CREAT)

    def read(self, path, length, offset, fh):
        return os.pread(fh, length, offset)

    def write(self, path, data, offset, fh):
        if data:
            self._no_blocks()
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        current = os.fstat(fh).st_size if fh is not None else os.lstat(self._path(path)).st_size
        if length > current:
            self._no_blocks()
        if fh is None:
            os.truncate(self._path(path), length)
        else:
            os.ftruncate(fh, length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        return 0


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    # No attribute or name caching: the lock protocols compare identities and link counts
    # right after changing them.
    FUSE(QuotaFS(sys.argv[1]), sys.argv[2], foreground=True, nothreads=False, use_ino=True,
         default_permissions=True, attr_timeout=0, entry_timeout=0, negative_timeout=0)


if __name__ == "__main__":
    main()
