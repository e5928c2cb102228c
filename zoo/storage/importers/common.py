"""What both importers share: checking the source folder, marking diverged models, and
streaming models into shards with a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from zoo.progress import progress_bar
from zoo.storage.manifest import ZooFormatError
from zoo.storage.writer import ModelRecord, ZooWriter

__all__ = ["SHARD_BYTES", "require_dir", "status_of", "write_models"]

# Weights per shard (all splits together): about 200 ResNet8s or 3,000 small CNNs. The writer holds
# a few copies of a shard while converting it to Arrow, so this bounds memory on zoos of any size.
SHARD_BYTES = 64 << 20


def require_dir(src: str | Path, expected: str) -> Path:
    """``src`` as a Path, or a one-line error saying what the folder should hold."""
    path = Path(src)
    if not path.is_dir():
        raise ZooFormatError(f"{path}: no such folder; expected {expected}")
    return path


def status_of(weights: np.ndarray | torch.Tensor) -> str:
    """``diverged`` when any weight is NaN or infinite (such models are kept and marked)."""
    finite = torch.isfinite(weights).all() if isinstance(weights, torch.Tensor) else np.isfinite(weights).all()
    return "ok" if bool(finite) else "diverged"


def write_models(writer: ZooWriter, indices: Sequence[int],
                 records: Callable[[Sequence[int]], Iterable[ModelRecord]], desc: str) -> None:
    """Write the models ``indices`` not yet stored, in shards of about :data:`SHARD_BYTES`.

    ``records(chunk)`` yields the records of one chunk of indices; only one chunk is in memory.
    """
    stored = writer.stored_indices
    pending = [i for i in indices if i not in stored]
    per_shard = max(1, SHARD_BYTES // (4 * writer.layout.size))
    with progress_bar(total=len(pending), desc=desc, unit="model", file=sys.stderr) as bar:
        for start in range(0, len(pending), per_shard):
            batch = []
            for record in records(pending[start : start + per_shard]):
                batch.append(record)
                bar.update()
            writer.write(batch)

