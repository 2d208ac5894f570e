#!/usr/bin/env python3
"""cutfs: a FUSE file system that forgets what was not synced, as a machine losing power does.

Usage: cutfs.py BACKING MOUNTPOINT

Every operation passes through to BACKING, but each write and truncate first records the
bytes it overwrites. fsync/fdatasync of a file forgets that file's records: its data is
durable. When the file system is unmounted (after the process using it was killed), every
file's unsynced changes are undone, newest first: BACKING is left as a disk would be after a
power cut at the moment of the kill. Metadata operations (create, rename, unlink, mkdir) are
taken as durable at once, as a journaling file system makes them.

On exit it prints one line: how many unsynced writes it undid, in how many files. Tests use
it to check that acknowledged data was synced (durability.rs); it is not meant to be fast.
"""

import errno
import os
import sys
import threading

from fuse import FUSE, FuseOSError, Operations


class CutFs(Operations):
    def __init__(self, root):
        self.root = root
        self.mutex = threading.Lock()
        # path -> list of (offset, old bytes, old size), oldest first.
        self.pending = {}

    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _remember(self, path, offset, length):
        full = self._full(path)
        size = os.path.getsize(full)
        old = b""
        if offset < size:
            with open(full, "rb") as f:
                f.seek(offset)
                old = f.read(min(length, size - offset))
        self.pending.setdefault(path, []).append((offset, old, size))

    # Metadata: straight through.
    def getattr(self, path, fh=None):
        st = os.lstat(self._full(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                "st_size", "st_uid")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        with self.mutex:
            self.pending.pop(path, None)
            os.unlink(self._full(path))

    def rename(self, old, new):
        with self.mutex:
            os.rename(self._full(old), self._full(new))
            self.pending.pop(new, None)
            if old in self.pending:
                self.pending[new] = self.pending.pop(old)

    def link(self, target, name):
        os.link(self._full(name), self._full(target))

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    # Files.
    def open(self, path, flags):
        return os.open(self._full(path), flags & ~os.O_DIRECT if hasattr(os, "O_DIRECT") else flags)

    def create(self, path, mode, fi=None):
        return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path, size, offset, fh):
        with self.mutex:
            return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        with self.mutex:
            self._remember(path, offset, len(data))
            return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            size = os.path.getsize(self._full(path))
            self._remember(path, min(length, size), max(0, size - length))
            os.truncate(self._full(path), length)

    def fallocate(self, path, mode, offset, length, fh):
        raise FuseOSError(errno.EOPNOTSUPP)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def fsync(self, path, datasync, fh):
        with self.mutex:
            os.fsync(fh)
            self.pending.pop(path, None)
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0

    def destroy(self, path):
        """Unmounted: undo what was never synced, newest first."""
        undone = 0
        with self.mutex:
            for p, ops in self.pending.items():
                full = self._full(p)
                if not os.path.exists(full):
                    continue
                with open(full, "r+b") as f:
                    for offset, old, size in reversed(ops):
                        f.seek(offset)
                        f.write(old)
                        f.truncate(size)
                        undone += 1
            files = len(self.pending)
            self.pending.clear()
        print(f"cutfs: undid {undone} unsynced writes in {files} files", flush=True)


def main():
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(CutFs(os.path.abspath(backing)), mountpoint, foreground=True, nothreads=False,
         direct_io=True, attr_timeout=0, entry_timeout=0)


if __name__ == "__main__":
    main()
