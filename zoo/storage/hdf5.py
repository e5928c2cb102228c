"""HDF5 export of a zoo, and reading it back through the same loader API as the Parquet shards.

File layout: one dataset per column, rows ordered by split (``train``, ``validation``, ``test``)
with the row range of each split in the ``split_offsets`` attribute; weight-sized columns are
``(N, P)`` float32 chunked along models (null checkpoints are NaN rows); the manifest is stored as
JSON in the ``manifest`` attribute, masks and fixed values as datasets. The ``checksums`` attribute
holds a SHA-256 of every dataset's values and of the other attributes: readers check a dataset
before first using it, and ``symzoo verify zoo.h5`` checks them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch

from zoo.storage.files import atomic_write
from zoo.storage.integrity import VerifiedFiles, cache_dir, file_stamp
from zoo.storage.format import SPLITS
from zoo.storage.manifest import Manifest, ZooFormatError
from zoo.storage.reader import Format, Zoo, _as_format

if TYPE_CHECKING:
    from zoo.storage.verify import VerifyReport

__all__ = ["export_hdf5", "Hdf5Zoo"]

_FORMAT = "symzoo-hdf5"
_CHUNK_BYTES = 4 << 20
_CHECKSUMS = "checksums"
_ATTRS = "@attributes"  # the checksum entry of the attributes (manifest, split offsets, columns)


def _digest(dataset: h5py.Dataset) -> str:
    """SHA-256 of a dataset's shape, type and values, read in slices (weights never all in memory)."""
    digest = hashlib.sha256(json.dumps([list(dataset.shape), str(dataset.dtype)]).encode())
    if not dataset.shape:
        digest.update(np.asarray(dataset[()]).tobytes())
    elif dataset.dtype.kind == "O":  # strings and curves: each value with its length
        for value in dataset[:]:
            if isinstance(value, str):
                value = value.encode()
            raw = value if isinstance(value, bytes) else np.asarray(value, dtype=np.float32).tobytes()
            digest.update(len(raw).to_bytes(8, "little") + raw)
    else:
        rows = 16 * (dataset.chunks[0] if dataset.chunks else 4096)
        for start in range(0, dataset.shape[0], rows):
            digest.update(np.ascontiguousarray(dataset[start : start + rows]).tobytes())
    return digest.hexdigest()


def _attrs_digest(f: h5py.File) -> str:
    return hashlib.sha256(json.dumps([str(f.attrs[k]) for k in ("format", "manifest", "split_offsets", "columns")]).encode()).hexdigest()


def export_hdf5(zoo_dir: str | Path, out: str | Path) -> Path:
    """Write every row of a zoo directory to one HDF5 file (atomically); returns its path."""
    zoo = Zoo(zoo_dir)
    out = Path(out)
    columns = zoo.columns()
    vectors = set(zoo.vector_columns())
    total = zoo.num_rows()
    size = zoo.layout.size

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = _FORMAT
            f.attrs["manifest"] = zoo.manifest.to_json()
            mask, values = zoo.fixed
            f.create_dataset("trainable_mask", data=mask.numpy())
            f.create_dataset("fixed_values", data=values.numpy())
            chunk_rows = max(1, min(total, _CHUNK_BYTES // (4 * size))) if total else 1
            for name in vectors:
                f.create_dataset(name, shape=(total, size), dtype="float32", chunks=(chunk_rows, size))
            offsets, start = {}, 0
            numeric: dict[str, list[np.ndarray]] = {}
            objects: dict[str, list[Any]] = {}  # strings and curves
            for split in SPLITS:
                n = zoo.num_rows(split)
                offsets[split] = [start, start + n]
                if not n:
                    continue
                for name in vectors:  # streamed through the memory-mapped cache, never all in RAM
                    source = zoo.load(split, [name])[name]
                    step = chunk_rows * 16
                    for i in range(0, n, step):
                        f[name][start + i : start + min(n, i + step)] = source[i : i + step]
                for name, value in zoo.load(split, [c for c in columns if c not in vectors]).items():
                    if isinstance(value, list):
                        objects.setdefault(name, []).extend(value)
                    else:
                        numeric.setdefault(name, []).append(value)
                start += n
            for name, parts in numeric.items():
                f.create_dataset(name, data=np.concatenate(parts))
            for name, values in objects.items():
                if _is_curve(name):
                    column = f.create_dataset(name, shape=(len(values),), dtype=h5py.vlen_dtype(np.float32))
                    for i, curve in enumerate(values):
                        column[i] = np.asarray(curve, dtype=np.float32)
                else:
                    f.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
            f.attrs["split_offsets"] = json.dumps(offsets)
            f.attrs["columns"] = json.dumps(columns)
            f.attrs[_CHECKSUMS] = json.dumps({_ATTRS: _attrs_digest(f), **{name: _digest(f[name]) for name in f}})

    atomic_write(out, write)
    return out


def _is_curve(name: str) -> bool:
    return name.startswith("curve_")


class Hdf5Zoo(Zoo):
    """A zoo exported to HDF5, read with the same API (and results) as its Parquet original."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ZooFormatError(f"{self.path}: no such HDF5 file")
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != _FORMAT:
                    raise ZooFormatError(f"{self.path}: not a symzoo HDF5 export (attribute 'format' is missing)")
                if _CHECKSUMS not in f.attrs:
                    raise ZooFormatError(f"{self.path}: exported without checksums (by an older symzoo), so its bytes "
                                         "cannot be checked; export the zoo again")
                self._checksums = json.loads(f.attrs[_CHECKSUMS])
                if self._checksums.get(_ATTRS) != _attrs_digest(f):
                    raise ZooFormatError(f"{self.path}: checksum mismatch in its attributes (manifest, split offsets, "
                                         "columns); the file is damaged: export the zoo again")
                self.manifest = Manifest.from_data(json.loads(f.attrs["manifest"]), f"{self.path} manifest")
                self._offsets = json.loads(f.attrs["split_offsets"])
                self._columns = json.loads(f.attrs["columns"])
        except (OSError, KeyError, ValueError) as err:
            raise ZooFormatError(f"{self.path}: not a readable symzoo HDF5 export ({err})") from None
        self._verified: set[str] = set()

    @cached_property
    def _known(self) -> VerifiedFiles:
        return VerifiedFiles(cache_dir(self.path))

    def _check(self, f: h5py.File, name: str, trust_stamps: bool = True) -> h5py.Dataset:
        """The dataset ``name``, its checksum checked on first use (and remembered while the file's
        stat stamp is unchanged, as for Parquet shards; ``verify`` trusts no stamp)."""
        expected = self._checksums.get(name)
        trusted = trust_stamps and (name in self._verified or bool(expected and self._known.knows(self.path, expected, name)))
        if not trusted:
            stamp = file_stamp(self.path)
            if name not in f or expected != _digest(f[name]):
                raise ZooFormatError(f"{self.path}: checksum mismatch in dataset '{name}'; the file is damaged: "
                                     "export the zoo again")
            if stamp is not None and file_stamp(self.path) == stamp:
                self._known.remember(self.path, expected, stamp, name)
                self._known.save()
        self._verified.add(name)
        return f[name]

    @cached_property
    def fixed(self) -> tuple[torch.Tensor, torch.Tensor]:
        with h5py.File(self.path, "r") as f:
            return (torch.from_numpy(self._check(f, "trainable_mask")[:].astype(bool)),
                    torch.from_numpy(self._check(f, "fixed_values")[:]))

    def columns(self) -> list[str]:
        return list(self._columns)

    def load(self, split: str = "train", columns: Sequence[str] | None = None, format: Format = "numpy") -> dict[str, Any]:
        self._check_split(split)
        names = list(columns) if columns is not None else self.columns()
        unknown = [c for c in names if c not in self._columns]
        if unknown:
            raise ZooFormatError(f"{self.path}: no column(s) {', '.join(unknown)}; columns are {', '.join(self._columns)}")
        start, stop = self._offsets[split]
        out: dict[str, Any] = {}
        with h5py.File(self.path, "r") as f:
            for name in names:
                data = self._check(f, name)[start:stop]
                if data.dtype == object and not _is_curve(name):
                    out[name] = [v.decode() if isinstance(v, bytes) else v for v in data]
                elif _is_curve(name):
                    out[name] = [np.asarray(v, dtype=np.float32) for v in data]
                else:
                    out[name] = data
        return {c: _as_format(out[c], format) for c in names}

    def iter_batches(self, split: str = "train", batch_size: int = 256, columns: Sequence[str] = ("weights", "test_acc")):
        self._check_split(split)
        start, stop = self._offsets[split]
        with h5py.File(self.path, "r") as f:
            for name in columns:
                self._check(f, name)
            for i in range(start, stop, batch_size):
                yield {c: f[c][i : min(stop, i + batch_size)] for c in columns}


def verify_hdf5(path: str | Path) -> "VerifyReport":
    """``symzoo verify zoo.h5``: every dataset and attribute against the checksums stored at export."""
    from zoo.storage.verify import VerifyReport

    report = VerifyReport()
    try:
        zoo = Hdf5Zoo(path)
        with h5py.File(zoo.path, "r") as f:
            for name in sorted(set(f) | set(zoo._checksums) - {_ATTRS}):
                try:
                    zoo._check(f, name, trust_stamps=False)
                except ZooFormatError as err:
                    report.problems.append(str(err))
        report.models, report.shards = zoo.num_rows(), 1
    except (ZooFormatError, OSError) as err:
        report.problems.append(str(err))
    return report
