"""Bytes are used only once checked: shard checksums, verified-file stamps, and the zoo's cache folder.

A shard's bytes are checked against the SHA-256 in ``zoo.json`` before symzoo first reads them.
Hashing every file on every load would cost as much as the load, so a verified file is remembered
by its stat stamp (size, mtime, ctime, inode): while the stamp is unchanged the file is trusted; a
file that changed in any way is hashed again. The memory-mapped weight caches are remembered the
same way, so a cache is used only while it is the file built from verified shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.errors import first_line
from zoo.storage.files import atomic_write_text, sha256_of
from zoo.storage.format import SHARD_HEADER_KEY, STATUSES, model_id_of, split_of
from zoo.storage.manifest import SHARD_PATH, Manifest, ShardInfo, ZooFormatError

__all__ = [
    "CACHE_DIR", "ShardChecker", "VerifiedFiles", "cache_dir", "file_stamp", "fixed_digest", "footer_header", "shard_header",
    "unlisted_shard_problem",
]

CACHE_DIR = ".cache"


def cache_dir(zoo_dir: Path) -> Path:
    """``ZOO/.cache``, or a folder under ``$SYMZOO_CACHE`` (``~/.cache/symzoo``) when the zoo is not
    writable or its ``.cache`` is not a real folder (symzoo never writes through a link)."""
    local = Path(zoo_dir) / CACHE_DIR
    try:
        if Path(zoo_dir).is_dir() and not local.is_symlink():  # an HDF5 export: the user cache
            local.mkdir(exist_ok=True)
            if local.is_dir() and os.access(local, os.W_OK):
                return local
    except OSError:
        pass
    fallback = Path(os.environ.get("SYMZOO_CACHE", Path.home() / ".cache" / "symzoo"))
    fallback = fallback / hashlib.sha256(str(Path(zoo_dir).resolve()).encode()).hexdigest()[:16]
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def file_stamp(path: Path) -> list[int] | None:
    """What changes whenever a file's bytes do; ``None`` for a missing file or a link."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


class VerifiedFiles:
    """Files known to hold given bytes (named by a digest), remembered by stamp in ``verified.json``."""

    FILE = "verified.json"

    def __init__(self, folder: Path) -> None:
        self.path = folder / self.FILE
        try:
            entries = json.loads(self.path.read_text())
            self._entries: dict[str, list] = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            self._entries = {}
        self._dirty = False

    def knows(self, path: Path, digest: str, part: str = "") -> bool:
        """Whether ``path`` (or its ``part``, e.g. one HDF5 dataset) was verified to hold ``digest``
        and has not changed since."""
        stamp = file_stamp(path)
        return stamp is not None and self._entries.get(f"{path}#{part}" if part else str(path)) == [*stamp, digest]

    def remember(self, path: Path, digest: str, stamp: list[int] | None = None, part: str = "") -> None:
        stamp = file_stamp(path) if stamp is None else stamp
        if stamp is not None:
            self._entries[f"{path}#{part}" if part else str(path)] = [*stamp, digest]
            self._dirty = True

    def save(self) -> None:
        if self._dirty:
            try:
                atomic_write_text(self.path, json.dumps(self._entries), durable=False, step="cache")
            except OSError:  # a cache: without it the next load hashes again
                pass
            self._dirty = False


class ShardChecker:
    """Checks a zoo's shards against ``zoo.json`` before their bytes are used: each file's checksum,
    and the zoo header in its footer against ``header`` (:func:`shard_header` of ``zoo.json``), so a
    hand-edited ``zoo.json`` (another activation, variant, layout) is caught too."""

    def __init__(self, zoo_dir: Path, header: str) -> None:
        self.zoo_dir = Path(zoo_dir)
        self.header = header.encode()
        self._header_digest = hashlib.sha256(self.header).hexdigest()[:16]
        self._known: VerifiedFiles | None = None

    @property
    def known(self) -> VerifiedFiles:
        if self._known is None:
            self._known = VerifiedFiles(cache_dir(self.zoo_dir))
        return self._known

    def verify(self, shards: Iterable[ShardInfo]) -> None:
        """Raise :class:`ZooFormatError` naming the first shard that is missing or damaged."""
        try:
            for shard in shards:
                self._verify(shard)
        finally:
            self.known.save()

    def _verify(self, shard: ShardInfo) -> None:
        path = self.zoo_dir / shard.path
        key = f"{shard.sha256}:{self._header_digest}"
        if self.known.knows(path, key):
            return
        stamp = file_stamp(path)
        if stamp is None:
            raise ZooFormatError(f"{path}: shard listed in zoo.json is missing (or not a plain file); "
                                 f"`symzoo repair {self.zoo_dir}` drops it so that its models can be made again")
        if stamp[0] != shard.bytes or sha256_of(path) != shard.sha256:
            raise ZooFormatError(f"{path}: checksum mismatch, the file is damaged; `symzoo repair {self.zoo_dir}` "
                                 "moves it to quarantine so that its models can be made again")
        if footer_header(path) not in (None, self.header):
            raise ZooFormatError(f"{path}: written for another zoo than zoo.json describes (the zoo header in its "
                                 f"footer differs); a foreign file: `symzoo repair {self.zoo_dir}` moves it to "
                                 "quarantine; an edited zoo.json: move it away and `symzoo repair` rebuilds it")
        if file_stamp(path) == stamp:  # unchanged while it was checked
            self.known.remember(path, key, stamp)


def footer_header(path: Path) -> bytes | None:
    """The zoo header a shard carries in its footer (``None`` for shards from before headers)."""
    try:
        return (pq.read_schema(path).metadata or {}).get(SHARD_HEADER_KEY)
    except (pa.ArrowException, OSError) as err:
        raise ZooFormatError(f"{path}: not a readable Parquet file ({first_line(err)})") from None


def fixed_digest(fixed: tuple[torch.Tensor, torch.Tensor]) -> str:
    """A digest of a zoo's masks and fixed values (of their content, not of the file holding them)."""
    mask, values = fixed
    digest = hashlib.sha256(mask.to(torch.bool).numpy().tobytes())
    digest.update(values.to(torch.float32).numpy().tobytes())
    return digest.hexdigest()


def shard_header(manifest: Manifest, fixed: tuple[torch.Tensor, torch.Tensor]) -> str:
    """The JSON every shard of this zoo carries in its footer: the zoo's header and masks digest."""
    return json.dumps({**manifest.header(), "fixed_digest": fixed_digest(fixed)})  # key order kept: it orders columns


def unlisted_shard_problem(path: Path, arrow_schema: pa.Schema, taken: set[int]) -> str | None:
    """Why a file in ``data/`` that ``zoo.json`` does not list cannot be one of this zoo's shards;
    ``None`` if it can. ``arrow_schema`` carries the zoo's header (:func:`shard_header`);
    ``taken`` holds the indices already stored. Files from before shards carried a header are
    judged by their rows alone."""
    match = SHARD_PATH.fullmatch(f"{path.parent.name}/{path.name}")
    if not match or path.is_symlink() or not path.is_file():
        return "not a plain file named SPLIT-KEY-TAG.parquet"
    try:
        table = pq.read_table(path, columns=["index", "model_id", "status"])
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        return f"not a readable Parquet file ({first_line(err)})"
    footer = (schema.metadata or {}).get(SHARD_HEADER_KEY)
    if schema != arrow_schema:
        return "its columns differ from this zoo's"
    if footer is not None and footer != (arrow_schema.metadata or {}).get(SHARD_HEADER_KEY):
        return "it was written for another zoo (its header differs from this zoo's)"
    indices = table.column("index").to_pylist()
    model_ids = table.column("model_id").to_pylist()
    if any(model_id_of(i) != m for i, m in zip(indices, model_ids)):
        return "its model ids do not match their indices"
    if any(split_of(m) != match["split"] for m in model_ids):
        return f"it holds models of another split than '{match['split']}'"
    if len(set(indices)) != len(indices) or taken.intersection(indices):
        return "it holds models this zoo already has"
    if not set(table.column("status").to_pylist()) <= set(STATUSES):
        return f"status values other than {STATUSES}"
    return None
