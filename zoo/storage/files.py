"""Atomic file writes and checksums: a reader never sees a half-written file under its final name."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "sha256_of"]


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
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
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
