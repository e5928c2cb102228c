"""The on-disk zoo format: names, splits and the Parquet schema (described in docs/FORMAT.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION", "MANIFEST", "CARD", "FIXED_FILE", "DATA_DIR", "SPLITS", "STATUSES",
    "METRICS", "SHARD_HEADER_KEY", "QUARANTINE_DIR", "model_id_of", "split_of", "checkpoint_column", "curve_column",
    "row_schema", "shard_file", "vector_type",
]

SCHEMA_VERSION = 1
MANIFEST = "zoo.json"
CARD = "README.md"
FIXED_FILE = "fixed.npz"
DATA_DIR = "data"
SPLITS = ("train", "validation", "test")
STATUSES = ("ok", "diverged")
METRICS = ("train_acc", "train_loss", "test_acc", "test_loss")
SHARD_HEADER_KEY = b"symzoo.zoo"  # Parquet footer key: the zoo's header (``Manifest.header``) as JSON
QUARANTINE_DIR = "quarantine"  # where ``symzoo repair`` moves damaged or foreign files


def shard_file(split: str, key: int, indices: Sequence[int]) -> str:
    """``data/{split}-{key:07d}-{tag}.parquet``, ``tag`` a digest of the shard's model indices.

    Two shards never share a name unless they hold the same models: a shard written after a crash
    can never replace one that an earlier run renamed into place (and the next run adopted).
    """
    digest = hashlib.blake2b(",".join(map(str, sorted(indices))).encode(), digest_size=6).hexdigest()
    return f"{DATA_DIR}/{split}-{key:07d}-{digest}.parquet"


def model_id_of(index: int) -> str:
    """The stable id of a zoo's model ``index`` (the same in every variant of a paired zoo)."""
    return f"m{index:07d}"


def split_of(model_id: str) -> str:
    """Deterministic 50/25/25 split from the id alone, so growing a zoo never moves a model."""
    digest = hashlib.blake2b(model_id.encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    return "train" if u < 0.5 else "validation" if u < 0.75 else "test"


def checkpoint_column(epoch: int) -> str:
    """Column of the weights after ``epoch`` epochs (0 = the initial weights)."""
    return f"weights_epoch_{epoch}"


def curve_column(metric: str) -> str:
    """Column of a per-epoch curve, e.g. ``curve_test_acc``."""
    return f"curve_{metric}"


def vector_type(num_params: int) -> pa.DataType:
    """Weights: a fixed-size list of non-null float32 (non-null items decode about 2x faster)."""
    return pa.list_(pa.field("item", pa.float32(), nullable=False), num_params)


def row_schema(
    num_params: int,
    hyperparameters: dict[str, str],
    curves: list[str],
    checkpoint_epochs: list[int],
) -> pa.Schema:
    """The Parquet schema of a zoo's rows.

    ``hyperparameters`` maps names to ``"int"`` or ``"float"``. Weights are fixed-size lists of
    float32, so readers get a ``(rows, num_params)`` array without per-row offsets.
    """
    weights = vector_type(num_params)
    fields = [
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
    ]
    fields += [pa.field(name, pa.int64() if kind == "int" else pa.float64()) for name, kind in hyperparameters.items()]
    fields += [pa.field(name, pa.float64()) for name in METRICS]
    fields += [pa.field("status", pa.string(), nullable=False), pa.field("weights", weights, nullable=False)]
    fields += [pa.field(curve_column(c), pa.list_(pa.float32())) for c in curves]
    fields += [pa.field(checkpoint_column(e), weights) for e in checkpoint_epochs]
    return pa.schema(fields)
