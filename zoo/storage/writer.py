"""Writing zoos: shards of model rows, committed atomically, resumable after any interruption."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.storage.card import write_card
from zoo.storage.files import DirectoryLock, atomic_write, sha256_of
from zoo.storage.format import (
    DATA_DIR, FIXED_FILE, METRICS, SPLITS, STATUSES, checkpoint_column, curve_column, model_id_of,
    row_schema, split_of, vector_type,
)
from zoo.storage.manifest import Manifest, ShardInfo, ZooFormatError, ZooMetadata, ZooSchema, software_versions

__all__ = ["FixedEntries", "ModelRecord", "ZooWriter"]

# (flat trainable mask, flat fixed values): the masks and fixed values stored once per zoo.
FixedEntries = tuple[torch.Tensor, torch.Tensor]

# Row groups of about this many bytes of weights: large enough for fast sequential reads, small
# enough that a reader can fetch a slice of models without decoding a whole shard. Weight columns
# are stored uncompressed and PLAIN-encoded (random floats barely compress; reads stay memcpy-fast).
_ROW_GROUP_BYTES = 64 << 20


@dataclass
class ModelRecord:
    """One trained model: what becomes one row."""

    index: int
    seed: int
    weights: np.ndarray | torch.Tensor
    metrics: Mapping[str, float] = field(default_factory=dict)
    status: str = "ok"
    hyperparameters: Mapping[str, float | int] = field(default_factory=dict)
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)
    checkpoints: Mapping[int, np.ndarray | torch.Tensor] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return model_id_of(self.index)


class ZooWriter:
    """Create a zoo directory, or reopen one to add models to it.

    Reopening checks that the directory holds a zoo of the same architecture and columns, and
    adopts shard files that an interrupted run renamed into place but did not yet list in the
    manifest, so that no finished model is lost or trained twice. A writer holds the zoo's
    :class:`DirectoryLock` from creation until :meth:`close` (or the end of its ``with`` block, or
    of the process): a second writer on the same zoo fails at once with a one-line error.
    """

    def __init__(self, zoo_dir: str | Path, spec: ArchSpec, schema: ZooSchema = ZooSchema(),
                 metadata: ZooMetadata = ZooMetadata(),
                 fixed: FixedEntries | None = None) -> None:
        """``fixed`` = (flat trainable mask, flat fixed values) when the masks do not come from
        ``spec`` (an imported zoo); by default they are those of ``spec.build()``."""
        self.dir = Path(zoo_dir)
        self.spec, self.schema = spec, schema
        model = spec.build()
        self.layout = ParamLayout.from_module(model)
        explicit_fixed = fixed is not None
        if fixed is None:
            fixed = (self.layout.trainable_mask, torch.where(self.layout.trainable_mask, 0.0, self.layout.flatten(model)))
        else:
            records = [
                {**r, "fixed": int((~fixed[0][r["offset"] : r["offset"] + r["numel"]].bool()).sum())}
                for r in self.layout.to_records()
            ]
            self.layout = ParamLayout.from_records(records, fixed[0].bool())
        self._fixed_values = fixed[1].to(torch.float32).masked_fill(self.layout.trainable_mask, 0.0)
        self.arrow_schema = row_schema(self.layout.size, schema.hyperparameters, list(schema.curves),
                                       list(schema.checkpoint_epochs))
        self._lock = DirectoryLock(self.dir).acquire()
        try:
            if (self.dir / "zoo.json").exists():
                self.manifest = Manifest.load(self.dir)
                self._check_same_zoo(check_fixed=explicit_fixed)
                self._adopt_orphans()
            else:
                self.manifest = self._create(metadata)
            self._stored = self._read_indices()
        except BaseException:
            self.close()
            raise

    # -- public ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the zoo's write lock; the writer must not be used afterwards."""
        self._lock.release()

    def __enter__(self) -> ZooWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stored_indices(self) -> frozenset[int]:
        """Indices of the models already in the zoo."""
        return frozenset(self._stored)

    def write(self, records: Sequence[ModelRecord], shard_key: int | None = None) -> list[ShardInfo]:
        """Write ``records`` as one shard (a file per split) and commit it to the manifest."""
        if not records:
            return []
        self._validate(records)
        key = min(r.index for r in records) if shard_key is None else shard_key
        infos = []
        for split in SPLITS:
            rows = [r for r in records if split_of(r.model_id) == split]
            if rows:
                infos.append(self._write_file(f"{DATA_DIR}/{split}-{key:07d}.parquet", split, self._table(rows)))
        self.register(infos)
        self._stored.update(r.index for r in records)
        return infos

    # -- creation and reopening -----------------------------------------------------------------
    def _create(self, metadata: ZooMetadata) -> Manifest:
        (self.dir / DATA_DIR).mkdir(parents=True, exist_ok=True)
        def save_fixed(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, trainable_mask=self.layout.trainable_mask.numpy(),
                         fixed_values=self._fixed_values.numpy())

        atomic_write(self.dir / FIXED_FILE, save_fixed)
        manifest = Manifest(
            arch=self.spec.to_dict(), layout=self.layout.to_records(), num_params=self.layout.size,
            num_trainable=self.layout.num_trainable, fixed_file=FIXED_FILE,
            fixed_sha256=sha256_of(self.dir / FIXED_FILE), schema=self.schema, metadata=metadata,
            software=software_versions(),
        )
        manifest.save(self.dir)
        write_card(self.dir, manifest, self.arrow_schema)
        return manifest

    def _check_same_zoo(self, check_fixed: bool) -> None:
        if self.manifest.arch != self.spec.to_dict():
            raise ZooFormatError(
                f"{self.dir} holds a zoo of another architecture or variant ({self.manifest.arch.get('family')}, "
                f"{self.manifest.arch.get('variant')}); write to a new directory or use the same spec"
            )
        if self.manifest.schema != self.schema:
            raise ZooFormatError(f"{self.dir} holds a zoo with other columns ({self.manifest.schema.to_dict()})")
        if check_fixed:  # imported masks: the stored ones must be the same, or rows rebuild wrongly
            with np.load(self.dir / self.manifest.fixed_file) as stored:
                same = np.array_equal(stored["trainable_mask"], self.layout.trainable_mask.numpy()) and np.allclose(
                    stored["fixed_values"], self._fixed_values.numpy(), rtol=1e-5, atol=1e-6)
            if not same:
                raise ZooFormatError(f"{self.dir} holds a zoo with other masks or fixed values; write to a new directory")

    def _adopt_orphans(self) -> None:
        listed = {s.path for s in self.manifest.shards}
        orphans = []
        for path in sorted((self.dir / DATA_DIR).glob("*.parquet")):
            rel = f"{DATA_DIR}/{path.name}"
            if rel in listed:
                continue
            split = path.name.split("-")[0]
            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError) as err:
                raise ZooFormatError(f"{path}: unlisted shard cannot be read ({err}); move it away and rerun") from None
            if split not in SPLITS or table.schema != self.arrow_schema:
                raise ZooFormatError(f"{path}: unlisted shard does not match this zoo's schema; move it away and rerun")
            orphans.append(ShardInfo(rel, split, table.num_rows, sha256_of(path), path.stat().st_size))
        if orphans:
            self.register(orphans)

    def _read_indices(self) -> set[int]:
        indices: set[int] = set()
        for shard in self.manifest.shards:
            column = pq.read_table(self.dir / shard.path, columns=["index"]).column("index")
            indices.update(column.to_pylist())
        return indices

    # -- writing --------------------------------------------------------------------------------
    def _validate(self, records: Sequence[ModelRecord]) -> None:
        seen: set[int] = set()
        for r in records:
            if r.index in self._stored or r.index in seen:
                raise ZooFormatError(f"model {r.index} is already stored in {self.dir}; a zoo holds each model once")
            seen.add(r.index)
            if r.status not in STATUSES:
                raise ZooFormatError(f"model {r.index}: status '{r.status}'; expected one of {STATUSES}")
            if set(r.hyperparameters) != set(self.schema.hyperparameters):
                raise ZooFormatError(
                    f"model {r.index}: hyperparameters {sorted(r.hyperparameters)}; this zoo stores "
                    f"{sorted(self.schema.hyperparameters)}"
                )
            if set(r.curves) != set(self.schema.curves):
                raise ZooFormatError(f"model {r.index}: curves {sorted(r.curves)}; this zoo stores {sorted(self.schema.curves)}")
            unknown = set(r.checkpoints) - set(self.schema.checkpoint_epochs)
            if unknown:
                raise ZooFormatError(f"model {r.index}: checkpoints at epochs {sorted(unknown)} are not in this zoo's schema")
            for vector in (r.weights, *r.checkpoints.values()):
                if np.asarray(vector).reshape(-1).shape[0] != self.layout.size:
                    raise ZooFormatError(
                        f"model {r.index}: weights have {np.asarray(vector).size} entries; the layout has {self.layout.size}"
                    )

    def _table(self, rows: Sequence[ModelRecord]) -> pa.Table:
        size = self.layout.size
        columns: dict[str, pa.Array] = {
            "model_id": pa.array([r.model_id for r in rows], pa.string()),
            "index": pa.array([r.index for r in rows], pa.int64()),
            "seed": pa.array([r.seed for r in rows], pa.int64()),
        }
        for name, kind in self.schema.hyperparameters.items():
            columns[name] = pa.array([r.hyperparameters[name] for r in rows], pa.int64() if kind == "int" else pa.float64())
        for name in METRICS:
            columns[name] = pa.array([float(r.metrics.get(name, math.nan)) for r in rows], pa.float64())
        columns["status"] = pa.array([r.status for r in rows], pa.string())
        columns["weights"] = _vectors([r.weights for r in rows], size)
        for curve in self.schema.curves:
            columns[curve_column(curve)] = pa.array(
                [np.asarray(r.curves[curve], dtype=np.float32) for r in rows],
                pa.list_(pa.float32()),
            )
        for epoch in self.schema.checkpoint_epochs:
            columns[checkpoint_column(epoch)] = _vectors([r.checkpoints.get(epoch) for r in rows], size)
        return pa.table(columns, schema=self.arrow_schema)

    def _write_file(self, rel: str, split: str, table: pa.Table) -> ShardInfo:
        path = self.dir / rel
        vector_columns = {"weights", *(checkpoint_column(e) for e in self.schema.checkpoint_epochs)}
        small = [c for c in table.column_names if c not in vector_columns]
        row_bytes = 4 * self.layout.size * len(vector_columns)
        atomic_write(path, lambda tmp: pq.write_table(
            table, tmp,
            row_group_size=max(1, _ROW_GROUP_BYTES // row_bytes),
            use_dictionary=["model_id", "status"],  # never the float columns
            compression={c: ("none" if c in vector_columns else "zstd") for c in table.column_names},
            write_statistics=small,
        ))
        return ShardInfo(rel, split, table.num_rows, sha256_of(path), path.stat().st_size)

    def register(self, infos: list[ShardInfo]) -> None:
        """List shard files already in the zoo's ``data/`` folder (written by this writer, or by
        workers elsewhere, e.g. the Ray engine's) in ``zoo.json`` and the dataset card."""
        known = {s.path for s in infos}
        self.manifest.shards = [s for s in self.manifest.shards if s.path not in known] + infos
        self.manifest.shards.sort(key=lambda s: s.path)
        self.manifest.save(self.dir)
        write_card(self.dir, self.manifest, self.arrow_schema)


def _vectors(vectors: Sequence[np.ndarray | torch.Tensor | None], size: int) -> pa.FixedSizeListArray:
    """Rows of float32 vectors as one fixed-size-list array; ``None`` rows become nulls."""
    missing = np.array([v is None for v in vectors])
    stacked = np.zeros((len(vectors), size), dtype=np.float32)
    for i, vector in enumerate(vectors):
        if vector is not None:
            stacked[i] = vector.detach().cpu().numpy() if isinstance(vector, torch.Tensor) else vector
    mask = pa.array(missing) if missing.any() else None
    return pa.FixedSizeListArray.from_arrays(pa.array(stacked.reshape(-1)), type=vector_type(size), mask=mask)
