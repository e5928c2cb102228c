"""Atomic file writes and checksums: a reader never sees a half-written file under its final name."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from zoo.errors import SymzooError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, writers are not guarded
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CRASH_AT", "atomic_write", "atomic_write_text", "crash_point", "fsync_dir", "sha256_of", "refuse_symlink",
    "DirectoryLock", "DirectoryBusyError",
]

# Fault injection for tests: ``SYMZOO_CRASH_AT=N`` SIGKILLs this process at the N-th call of
# :func:`crash_point`, i.e. at the N-th step boundary of a commit (``N:prefix`` counts only the
# points whose name starts with ``prefix``). Deterministic, unlike killing from outside on a timer.
CRASH_AT = "SYMZOO_CRASH_AT"


def crash_point(name: str) -> None:
    """A step boundary where a crash must leave the zoo recoverable; see :data:`CRASH_AT`.

    The countdown lives in the environment (no module state), so worker processes started after
    it was set inherit the remaining count.
    """
    setting = os.environ.get(CRASH_AT)
    if not setting:
        return
    count, _, prefix = setting.partition(":")
    if not name.startswith(prefix):
        return
    remaining = int(count) - 1
    os.environ[CRASH_AT] = f"{remaining}:{prefix}" if prefix else str(remaining)
    if remaining == 0:
        os.kill(os.getpid(), signal.SIGKILL)


def refuse_symlink(path: Path) -> None:
    """symzoo creates files only in real directories of the zoo: a link could point anywhere."""
    if Path(path).is_symlink():
        raise SymzooError(f"{path} is a symbolic link; symzoo does not write through links: "
                          "remove it (or replace it by a real folder) and run again")


TMP_PREFIX = "."  # temp files are hidden: ``.NAME.tmp-PID-TID``; a reopened zoo deletes those left by a crash


def atomic_write(path: Path, write: Callable[[Path], None], *, durable: bool = True, step: str = "write") -> None:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, fsync it, then rename it into place.

    ``durable=False`` skips the fsyncs: for caches that can be rebuilt, where only atomicity matters.
    ``step`` names the :func:`crash_point` before and after the rename.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.unlink(missing_ok=True)  # a planted link under this name must not be written through
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        crash_point(f"{step}.written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    crash_point(f"{step}.renamed")
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the renames into ``path`` durable (a rename is only on disk once its directory is)."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str, *, durable: bool = True, step: str = "write") -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text), durable=durable, step=step)


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
        try:  # O_NOFOLLOW: a .lock planted as a link must not truncate what it points to
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                refuse_symlink(self.path)
            raise
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
