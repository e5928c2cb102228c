"""Reading zoos: columns as NumPy/torch arrays (weights memory-mapped) and rows rebuilt into networks."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec, spec_from_dict
from zoo.storage.files import atomic_write, sha256_of
from zoo.storage.format import SPLITS, checkpoint_column, row_schema
from zoo.storage.integrity import ShardChecker, shard_header
from zoo.storage.manifest import Manifest, ShardInfo, ZooFormatError

__all__ = ["Zoo", "open_zoo", "load"]

Format = Literal["numpy", "torch"]


class Zoo:
    """An opened zoo directory (Parquet shards) or an exported HDF5 file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)

    @cached_property
    def _checker(self) -> ShardChecker:
        return ShardChecker(self.path, shard_header(self.manifest, self.fixed))

    # -- structure ------------------------------------------------------------------------------
    @cached_property
    def spec(self) -> ArchSpec:
        try:
            return spec_from_dict(self.manifest.arch, source=f"{self.path}/zoo.json arch")
        except SpecError as err:
            raise ZooFormatError(str(err)) from None

    @cached_property
    def fixed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The flat trainable mask and fixed values stored once for the zoo."""
        path = self.path / self.manifest.fixed_file
        if not path.is_file():
            raise ZooFormatError(f"{path}: fixed-entries file missing (it holds the zoo's masks)")
        if sha256_of(path) != self.manifest.fixed_sha256:
            raise ZooFormatError(f"{path}: checksum mismatch, the masks file is damaged; restore it from a copy of the zoo")
        try:
            with np.load(path) as data:
                mask, values = data["trainable_mask"], data["fixed_values"]
        except (OSError, ValueError, KeyError) as err:
            raise ZooFormatError(f"{path}: cannot read masks and fixed values ({err})") from None
        return torch.from_numpy(mask.astype(bool)), torch.from_numpy(values.astype(np.float32))

    @cached_property
    def layout(self) -> ParamLayout:
        return ParamLayout.from_records(self.manifest.layout, self.fixed[0])

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.manifest.rows(s)]

    def num_rows(self, split: str | None = None) -> int:
        return self.manifest.rows(split)

    # -- columns --------------------------------------------------------------------------------
    def vector_columns(self) -> list[str]:
        return ["weights", *(checkpoint_column(e) for e in self.manifest.schema.checkpoint_epochs)]

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The schema every shard has (derived from the manifest, so no shard needs to be read)."""
        schema = self.manifest.schema
        return row_schema(self.manifest.num_params, schema.hyperparameters, list(schema.curves),
                          list(schema.checkpoint_epochs))

    def columns(self) -> list[str]:
        return self.arrow_schema.names

    def load(self, split: str = "train", columns: Sequence[str] | None = None, format: Format = "numpy") -> dict[str, Any]:
        """Columns of one split. Weight-sized columns are memory-mapped ``(rows, P)`` float32 arrays
        (null checkpoints are NaN rows); scalars are arrays; strings and curves are lists."""
        self._check_split(split)
        names = list(columns) if columns is not None else self.columns()
        unknown = [c for c in names if c not in self.columns()]
        if unknown:
            raise ZooFormatError(f"{self.path}: no column(s) {', '.join(unknown)}; columns are {', '.join(self.columns())}")
        vectors = [c for c in names if c in self.vector_columns()]
        out: dict[str, Any] = {c: self._memmap(split, c) for c in vectors}
        scalars = [c for c in names if c not in vectors]
        if scalars:
            table = self._read(split, scalars)
            for name in scalars:
                out[name] = _to_array(table.column(name))
        return {c: _as_format(out[c], format) for c in names}

    def iter_batches(self, split: str = "train", batch_size: int = 256,
                     columns: Sequence[str] = ("weights", "test_acc")) -> Iterator[dict[str, np.ndarray]]:
        """Stream a split in batches without materialising it (for zoos larger than memory)."""
        self._check_split(split)
        for shard in self._verified_shards(split):
            for batch in self._shard_file(shard).iter_batches(batch_size, columns=list(columns)):
                yield {name: _to_array(batch.column(name)) for name in columns}

    # -- rows -----------------------------------------------------------------------------------
    def rebuild(self, row: int, split: str = "train", column: str = "weights") -> nn.Module:
        """The network of the ``row``-th model of ``split`` (``column`` may name a checkpoint)."""
        data = self.load(split, [column])
        if not 0 <= row < len(data[column]):
            raise IndexError(f"row {row} is out of range for split '{split}' with {len(data[column])} rows")
        return self.rebuild_weights(np.asarray(data[column][row]))

    def rebuild_weights(self, weights: np.ndarray | torch.Tensor) -> nn.Module:
        """A network of this zoo's architecture holding ``weights`` (the zoo's stored masks apply)."""
        model = self.spec.build()
        mask, values = self.fixed
        self.layout.impose_fixed_entries(model, mask, values)
        return self.layout.load_into(model, torch.as_tensor(np.asarray(weights, dtype=np.float32)))

    # -- internals ------------------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ZooFormatError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")

    def _verified_shards(self, split: str) -> list[ShardInfo]:
        """The shards of ``split``, each checked against its checksum (see :class:`ShardChecker`)."""
        shards = self.manifest.shards_of(split)
        self._checker.verify(shards)
        return shards

    def _shard_file(self, shard: ShardInfo) -> pq.ParquetFile:
        """Open a verified shard, checking that it parses and has the zoo's schema."""
        path = self.path / shard.path
        try:
            handle = pq.ParquetFile(path)
        except FileNotFoundError:
            raise ZooFormatError(f"{path}: shard listed in zoo.json is missing") from None
        except (pa.ArrowException, OSError) as err:
            raise ZooFormatError(f"{path}: shard is damaged ({err}); run symzoo verify") from None
        schema = handle.schema_arrow
        if schema != self.arrow_schema:
            diff = [f.name for f in self.arrow_schema if f.name not in schema.names or schema.field(f.name) != f]
            raise ZooFormatError(
                f"{path}: schema differs from zoo.json (columns {', '.join(diff) or 'order/extra'}; "
                f"weights should be {self.arrow_schema.field('weights').type})"
            )
        return handle

    def _read(self, split: str, columns: list[str]) -> pa.Table:
        tables = []
        for shard in self._verified_shards(split):
            handle = self._shard_file(shard)
            try:
                tables.append(handle.read(columns=columns))
            except (pa.ArrowException, OSError) as err:
                raise ZooFormatError(f"{self.path / shard.path}: shard is damaged ({err}); run symzoo verify") from None
        if not tables:
            return self.arrow_schema.empty_table().select(columns)
        return pa.concat_tables(tables)

    def _memmap(self, split: str, column: str) -> np.ndarray:
        """A memory-mapped ``(rows, P)`` copy of a vector column, cached beside the shards.

        The cache is built only from verified shards, and used only while both it and the shards
        are the files that were verified (a stat check; a changed file is hashed again).
        """
        shards = self._verified_shards(split)
        key = hashlib.sha256("".join(s.sha256 for s in shards).encode()).hexdigest()[:16]
        known = self._checker.known
        path = known.path.parent / f"{split}-{column}-{key}.npy"
        if not known.knows(path, key):
            blocks, start = [], 0  # (shard, row group, first row): decoded in parallel below
            for shard in shards:
                meta = self._shard_file(shard).metadata
                for group in range(meta.num_row_groups):
                    blocks.append((shard, group, start))
                    start += meta.row_group(group).num_rows

            def fill(tmp: Path) -> None:
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(start, self.layout.size))

                def decode(block: tuple[ShardInfo, int, int]) -> None:
                    shard, group, first = block
                    table = pq.ParquetFile(self.path / shard.path).read_row_group(group, [column], use_threads=False)
                    values = _vectors_to_numpy(table.column(0), self.layout.size)
                    array[first : first + len(values)] = values

                with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                    list(pool.map(decode, blocks))
                array.flush()
                del array

            try:
                atomic_write(path, fill, durable=False, step="cache")  # a cache: rebuilt if lost
            except (pa.ArrowException, OSError) as err:
                raise ZooFormatError(f"{self.path}: cannot read column '{column}' of split '{split}' ({err})") from None
            self._checker.verify(shards)  # unchanged while the cache was built from them
            known.remember(path, key)
            known.save()
        return np.load(path, mmap_mode="c")


def _vectors_to_numpy(column: pa.Array | pa.ChunkedArray, size: int) -> np.ndarray:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    blocks = []
    for chunk in chunks:
        values = chunk.flatten() if chunk.null_count == 0 else chunk.fill_null(pa.scalar([np.nan] * size, chunk.type)).flatten()
        blocks.append(values.to_numpy(zero_copy_only=False).reshape(-1, size))
    return np.concatenate(blocks) if len(blocks) != 1 else blocks[0]


def _to_array(column: pa.Array | pa.ChunkedArray) -> Any:
    if pa.types.is_string(column.type):
        return column.to_pylist()
    if pa.types.is_list(column.type):
        return [np.asarray(v, dtype=np.float32) if v is not None else None for v in column.to_pylist()]
    if pa.types.is_fixed_size_list(column.type):
        return _vectors_to_numpy(column, column.type.list_size)
    return column.to_numpy()


def _as_format(value: Any, format: Format) -> Any:
    if format == "numpy":
        return value
    if format != "torch":
        raise ValueError(f"format must be 'numpy' or 'torch', got {format!r}")
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def open_zoo(path: str | Path) -> Zoo:
    """Open a zoo directory, or an HDF5 file written by ``symzoo export``."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        from zoo.storage.hdf5 import Hdf5Zoo

        return Hdf5Zoo(path)
    return Zoo(path)


def load(path: str | Path, split: str = "train", columns: Sequence[str] | None = None,
         format: Format = "numpy") -> dict[str, Any]:
    """Columns of one split of a zoo directory or HDF5 export, weights as a ``(rows, P)`` array."""
    return open_zoo(path).load(split, columns, format)

