"""Importers: public model zoos turned into symzoo zoos (``symzoo import seed-pt|small-cnn-zoo``).

Each importer reads a foreign zoo, maps every model to a symzoo architecture's ``state_dict``
and writes one :class:`~zoo.storage.ModelRecord` per model with :class:`~zoo.storage.ZooWriter`.
The helpers here are what both importers share: checking the source folder, opening the writer
with imported masks, and streaming models into shards with a progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zoo.nets import ArchSpec
from zoo.storage.format import MANIFEST
from zoo.storage.manifest import ZooFormatError, ZooMetadata, ZooSchema
from zoo.storage.reader import Zoo
from zoo.storage.writer import ModelRecord, ZooWriter

__all__ = ["import_seed_pt", "import_small_cnn_zoo"]

# Weights per shard (all splits together): about 200 ResNet8s or 3,000 small CNNs. The writer holds
# a few copies of a shard while converting it to Arrow, so this bounds memory on zoos of any size.
SHARD_BYTES = 64 << 20

# (flat trainable mask, flat fixed values): the masks stored once per zoo.
FixedEntries = tuple[torch.Tensor, torch.Tensor]


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


def open_writer(out: str | Path, spec: ArchSpec, schema: ZooSchema, metadata: ZooMetadata,
                fixed: FixedEntries | None = None) -> ZooWriter:
    """A writer for ``out`` whose stored masks are ``fixed`` (the imported ones) if given.

    Re-running an import on the same ``out`` resumes it; the zoo found there must hold the same
    masks, or rows would be rebuilt with the wrong ones.
    """
    reopened = (Path(out) / MANIFEST).exists()
    writer = ZooWriter(out, spec, schema, metadata, fixed=fixed)
    if reopened and fixed is not None:
        stored_mask, stored_values = Zoo(out).fixed
        mask, values = fixed[0].bool(), torch.where(fixed[0].bool(), 0.0, fixed[1].float())
        if not (torch.equal(stored_mask, mask) and torch.allclose(stored_values, values, rtol=1e-5, atol=1e-6)):
            raise ZooFormatError(f"{out}: holds a zoo with other masks or fixed values; import into a new directory")
    return writer


def write_models(writer: ZooWriter, indices: Sequence[int],
                 records: Callable[[Sequence[int]], Iterable[ModelRecord]], desc: str) -> None:
    """Write the models ``indices`` not yet stored, in shards of about :data:`SHARD_BYTES`.

    ``records(chunk)`` yields the records of one chunk of indices; only one chunk is in memory.
    """
    pending = [i for i in indices if i not in writer.stored_indices]
    per_shard = max(1, SHARD_BYTES // (4 * writer.layout.size))
    with tqdm(total=len(pending), desc=desc, unit="model", disable=None, file=sys.stderr) as bar:
        for start in range(0, len(pending), per_shard):
            batch = []
            for record in records(pending[start : start + per_shard]):
                batch.append(record)
                bar.update()
            writer.write(batch)


# The importers use the helpers above, so they are imported once those exist.
from zoo.storage.importers.seed_pt import import_seed_pt  # noqa: E402
from zoo.storage.importers.small_cnn_zoo import import_small_cnn_zoo  # noqa: E402
