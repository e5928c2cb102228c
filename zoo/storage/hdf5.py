"""HDF5 export of a zoo, and reading it back through the same loader API as the Parquet shards.

File layout: one dataset per column, rows ordered by split (``train``, ``validation``, ``test``)
with the row range of each split in the ``split_offsets`` attribute; weight-sized columns are
``(N, P)`` float32 chunked along models (null checkpoints are NaN rows); the manifest is stored as
JSON in the ``manifest`` attribute, masks and fixed values as datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from zoo.storage.files import atomic_write
from zoo.storage.format import SPLITS
from zoo.storage.manifest import Manifest, ZooFormatError
from zoo.storage.reader import Format, Zoo, _as_format

__all__ = ["export_hdf5", "Hdf5Zoo"]

_FORMAT = "symzoo-hdf5"
_CHUNK_BYTES = 4 << 20


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
                self.manifest = Manifest.from_data(json.loads(f.attrs["manifest"]), f"{self.path} manifest")
                self._offsets = json.loads(f.attrs["split_offsets"])
                self._columns = json.loads(f.attrs["columns"])
        except OSError as err:
            raise ZooFormatError(f"{self.path}: not a readable HDF5 file ({err})") from None

    @cached_property
    def fixed(self) -> tuple[torch.Tensor, torch.Tensor]:
        with h5py.File(self.path, "r") as f:
            return torch.from_numpy(f["trainable_mask"][:].astype(bool)), torch.from_numpy(f["fixed_values"][:])

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
                data = f[name][start:stop]
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
            for i in range(start, stop, batch_size):
                yield {c: f[c][i : min(stop, i + batch_size)] for c in columns}
