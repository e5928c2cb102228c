"""Writing zoos: shards of model rows, committed atomically, resumable after any interruption."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.storage.card import write_card
from zoo.storage.files import TMP_PREFIX, DirectoryLock, atomic_write, crash_point, fsync_dir, refuse_symlink, sha256_of
from zoo.storage.format import (
    CARD, DATA_DIR, FIXED_FILE, MANIFEST, METRICS, SHARD_HEADER_KEY, SPLITS, STATUSES, checkpoint_column,
    curve_column, model_id_of, row_schema, shard_file, split_of, vector_type,
)
from zoo.storage.integrity import CACHE_DIR, ShardChecker, shard_header, unlisted_shard_problem
from zoo.storage.manifest import Manifest, ShardInfo, ZooFormatError, ZooMetadata, ZooSchema, software_versions

__all__ = ["CREATING", "FixedEntries", "ModelRecord", "RowCheck", "ZooWriter"]

# (flat trainable mask, flat fixed values): the masks and fixed values stored once per zoo.
FixedEntries = tuple[torch.Tensor, torch.Tensor]
# Given the rows of an unlisted shard file, what is wrong with them (None: they are the models this
# zoo would have written at their indices, e.g. with the seed and hyperparameters its spec gives).
RowCheck = Callable[[pa.Table], "str | None"]
CREATING = ".creating"  # present while a new zoo's first files are written; zoo.json comes last

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

    The commit protocol, safe against a crash at any step: each split's file of a shard is written
    to a hidden temp file, fsynced and renamed to a name no other shard can have
    (:func:`~zoo.storage.format.shard_file`); then ``zoo.json`` is rewritten atomically to list
    them. A crash leaves at most hidden temp files (deleted on reopening) and complete files not
    yet listed. Reopening checks every listed shard's checksum and adopts each unlisted file only
    if it is this zoo's (its footer carries the zoo's header) and its rows are models this zoo
    would have written (new ids in the right split, and whatever ``row_check`` asks); anything
    else stops the writer with a one-line error naming the file. So no finished model is lost,
    trained twice, or replaced by foreign rows.

    A writer holds the zoo's :class:`DirectoryLock` from creation until :meth:`close` (or the end
    of its ``with`` block, or of the process): a second writer on the same zoo fails at once.
    A new zoo is created only in a missing or empty directory.
    """

    def __init__(self, zoo_dir: str | Path, spec: ArchSpec, schema: ZooSchema = ZooSchema(),
                 metadata: ZooMetadata = ZooMetadata(),
                 fixed: FixedEntries | None = None, row_check: RowCheck | None = None) -> None:
        """``fixed`` = (flat trainable mask, flat fixed values) when the masks do not come from
        ``spec`` (an imported zoo); by default they are those of ``spec.build()``."""
        self.dir = Path(zoo_dir)
        self._row_check = row_check
        self.spec, self.schema = spec, schema
        model = spec.build()
        self.layout = ParamLayout.from_module(model)
        self._explicit_fixed = fixed is not None
        if fixed is None:
            fixed = (self.layout.trainable_mask, torch.where(self.layout.trainable_mask, 0.0, self.layout.flatten(model)))
        else:
            records = [
                {**r, "fixed": int((~fixed[0][r["offset"] : r["offset"] + r["numel"]].bool()).sum())}
                for r in self.layout.to_records()
            ]
            self.layout = ParamLayout.from_records(records, fixed[0].bool())
        self._fixed_values = fixed[1].to(torch.float32).masked_fill(self.layout.trainable_mask, 0.0)
        plain = row_schema(self.layout.size, schema.hyperparameters, list(schema.curves), list(schema.checkpoint_epochs))
        self._lock = DirectoryLock(self.dir).acquire()
        try:
            if (self.dir / MANIFEST).exists():
                self.manifest = Manifest.load(self.dir)
                self._check_same_zoo()
            else:
                self.manifest = self._create(metadata, plain)
            self.header = shard_header(self.manifest, (self.layout.trainable_mask, self._fixed_values))
            self.arrow_schema = plain.with_metadata({SHARD_HEADER_KEY: self.header})
            refuse_symlink(self.dir / DATA_DIR)
            self._remove_temp_files()
            self._stored = self._read_indices()
            self._adopt_orphans()
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
        indices = [r.index for r in records]
        infos = []
        for split in SPLITS:
            rows = [r for r in records if split_of(r.model_id) == split]
            if rows:
                infos.append(self._write_file(shard_file(split, key, indices), split, self._table(rows)))
        fsync_dir(self.dir / DATA_DIR)
        crash_point("commit.synced")
        self.register(infos)
        self._stored.update(r.index for r in records)
        return infos

    # -- creation and reopening -----------------------------------------------------------------
    def _create(self, metadata: ZooMetadata, arrow_schema: pa.Schema) -> Manifest:
        self._require_empty()
        atomic_write(self.dir / CREATING, lambda tmp: tmp.write_text("symzoo is creating a zoo here\n"), step="create")
        (self.dir / DATA_DIR).mkdir(exist_ok=True)

        def save_fixed(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, trainable_mask=self.layout.trainable_mask.numpy(),
                         fixed_values=self._fixed_values.numpy())

        atomic_write(self.dir / FIXED_FILE, save_fixed, step="create.fixed")
        manifest = Manifest(
            arch=self.spec.to_dict(), layout=self.layout.to_records(), num_params=self.layout.size,
            num_trainable=self.layout.num_trainable, fixed_file=FIXED_FILE,
            fixed_sha256=sha256_of(self.dir / FIXED_FILE), schema=self.schema, metadata=metadata,
            software=software_versions(), masks="imported" if self._explicit_fixed else "spec",
        )
        write_card(self.dir, manifest, arrow_schema)
        manifest.save(self.dir)  # from here on the directory is a zoo
        (self.dir / CREATING).unlink()
        return manifest

    def _require_empty(self) -> None:
        """A new zoo goes only where it cannot overwrite anything: a missing or empty directory, or
        one whose creation by symzoo was interrupted before any shard was written."""
        ours = {DirectoryLock.FILE, CREATING, DATA_DIR, FIXED_FILE, CARD, CACHE_DIR}
        entries = [p for p in self.dir.iterdir() if p.name != DirectoryLock.FILE and not _is_temp(p)]
        shards = list((self.dir / DATA_DIR).glob("*.parquet")) if (self.dir / DATA_DIR).is_dir() else []
        if shards:
            raise ZooFormatError(f"{self.dir} holds shards in {DATA_DIR}/ but no zoo.json: if it is a zoo whose "
                                 f"zoo.json was lost, `symzoo repair {self.dir}` rebuilds it from the shards; "
                                 "else write to a new directory")
        interrupted = (self.dir / CREATING).is_file() and all(p.name in ours for p in entries)
        if entries and not interrupted:
            raise ZooFormatError(f"{self.dir} is not empty and holds no zoo (no zoo.json); "
                                 "give a new or empty directory")

    def _check_same_zoo(self) -> None:
        if self.manifest.arch != self.spec.to_dict():
            raise ZooFormatError(
                f"{self.dir} holds a zoo of another architecture or variant ({self.manifest.arch.get('family')}, "
                f"{self.manifest.arch.get('variant')}); write to a new directory or use the same spec"
            )
        if self.manifest.schema != self.schema:
            raise ZooFormatError(f"{self.dir} holds a zoo with other columns ({self.manifest.schema.to_dict()})")
        path = self.dir / self.manifest.fixed_file
        if not path.is_file() or sha256_of(path) != self.manifest.fixed_sha256:
            raise ZooFormatError(f"{path}: missing or damaged (checksum mismatch); restore it from a copy of the zoo")
        with np.load(path) as stored:  # the stored masks must be the ones new rows assume
            same = np.array_equal(stored["trainable_mask"], self.layout.trainable_mask.numpy()) and np.allclose(
                stored["fixed_values"], self._fixed_values.numpy(), rtol=1e-5, atol=1e-6)
        if not same:
            raise ZooFormatError(f"{self.dir} holds a zoo with other masks or fixed values; write to a new directory")

    def _remove_temp_files(self) -> None:
        """Hidden temp files of a crashed write: never complete, never read."""
        for folder in (self.dir, self.dir / DATA_DIR):
            for path in folder.glob(f"{TMP_PREFIX}*.tmp-*"):
                if _is_temp(path):
                    path.unlink(missing_ok=True)

    def _adopt_orphans(self) -> None:
        """List complete shard files that a crashed run renamed into place, once each is checked."""
        listed = {s.path for s in self.manifest.shards}
        orphans, ids = [], set(self._stored)
        scalars = [f.name for f in self.arrow_schema if not pa.types.is_fixed_size_list(f.type)]
        for path in sorted((self.dir / DATA_DIR).glob("*.parquet")):
            rel = f"{DATA_DIR}/{path.name}"
            if rel in listed:
                continue
            problem = unlisted_shard_problem(path, self.arrow_schema, ids)
            rows = None if problem else pq.read_table(path, columns=scalars)  # the weights are not needed
            if rows is not None and self._row_check:
                problem = self._row_check(rows)
            if problem:
                raise ZooFormatError(f"{path}: unlisted file not adopted: {problem}; move it out of {DATA_DIR}/ "
                                     f"(`symzoo repair {self.dir}` moves it to quarantine) and run again")
            indices = rows.column("index").to_pylist()
            ids.update(indices)
            self._stored.update(indices)
            orphans.append(ShardInfo(rel, path.name.split("-")[0], rows.num_rows, sha256_of(path), path.stat().st_size))
        if orphans:
            self.register(orphans)

    def _read_indices(self) -> set[int]:
        ShardChecker(self.dir, self.header).verify(self.manifest.shards)  # a damaged shard stops the run: repair first
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
        if path.exists() or path.is_symlink():  # names are unique per model set: never replace a file
            raise ZooFormatError(f"{path} exists already; it holds models of this shard that the zoo does not list. "
                                 f"Run `symzoo verify {self.dir}`")
        vector_columns = {"weights", *(checkpoint_column(e) for e in self.schema.checkpoint_epochs)}
        small = [c for c in table.column_names if c not in vector_columns]
        row_bytes = 4 * self.layout.size * len(vector_columns)
        atomic_write(path, lambda tmp: pq.write_table(
            table, tmp,
            row_group_size=max(1, _ROW_GROUP_BYTES // row_bytes),
            use_dictionary=["model_id", "status"],  # never the float columns
            compression={c: ("none" if c in vector_columns else "zstd") for c in table.column_names},
            write_statistics=small,
        ), step="commit.shard")
        return ShardInfo(rel, split, table.num_rows, sha256_of(path), path.stat().st_size)

    def register(self, infos: list[ShardInfo]) -> None:
        """List shard files already in the zoo's ``data/`` folder (written by this writer, or by
        workers elsewhere, e.g. the Ray engine's) in ``zoo.json`` and the dataset card."""
        listed = {s.path: s for s in self.manifest.shards}
        for info in infos:
            if info.path in listed and listed[info.path] != info:
                raise ZooFormatError(f"{self.dir / info.path}: already listed in zoo.json with other contents; "
                                     "a listed shard is never replaced")
        self.manifest.shards = sorted({**listed, **{s.path: s for s in infos}}.values(), key=lambda s: s.path)
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


def _is_temp(path: Path) -> bool:
    return path.name.startswith(TMP_PREFIX) and ".tmp-" in path.name
