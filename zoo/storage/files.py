"""Atomic file writes and checksums: a reader never sees a half-written file under its final name."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from zoo.errors import SymzooError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, writers are not guarded
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "atomic_write_text", "fsync_dir", "sha256_of", "DirectoryLock", "DirectoryBusyError"]


def atomic_write(path: Path, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, fsync it, then rename it into place.

    ``durable=False`` skips the fsyncs: for caches that can be rebuilt, where only atomicity matters.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the renames into ``path`` durable (a rename is only on disk once its directory is)."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DirectoryBusyError(SymzooError):
    """Another process holds the directory's write lock."""


class DirectoryLock:
    """An exclusive write lock on ``directory/.lock``, so that two processes never add to the same
    zoo at once (both would train the missing models and store them twice).

    ``flock`` locks belong to the open file: the OS drops them when the holder exits, even by
    ``kill -9``, so a lock file left behind never blocks the next run.
    """

    FILE = ".lock"

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / self.FILE
        self._handle: int | None = None

    def acquire(self) -> DirectoryLock:
        if fcntl is None or self._handle is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise DirectoryBusyError(f"{self.path.parent}: process {holder} is writing here; "
                                     "wait for it to finish or stop it, then run again") from None
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing the file drops the lock
            self._handle = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
