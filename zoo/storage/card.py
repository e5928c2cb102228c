"""The HuggingFace dataset card (``README.md``) of a zoo: YAML metadata plus a short description."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import yaml

from zoo.storage.files import atomic_write_text
from zoo.storage.format import CARD, SPLITS

if TYPE_CHECKING:
    from zoo.storage.manifest import Manifest

__all__ = ["write_card", "card_text", "features"]


_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.float32(): "float32"}


def features(arrow_schema: pa.Schema) -> list[dict[str, object]]:
    """The card's ``features``: what ``datasets.Features.from_arrow_schema(...)._to_yaml_list()``
    gives for a zoo's columns, without importing ``datasets`` (writing a zoo must not need it)."""
    out: list[dict[str, object]] = []
    for field in arrow_schema:
        kind = field.type
        if pa.types.is_fixed_size_list(kind):
            out.append({"name": field.name, "list": _DTYPES[kind.value_type], "length": kind.list_size})
        elif pa.types.is_list(kind):
            out.append({"name": field.name, "list": _DTYPES[kind.value_type]})
        else:
            out.append({"name": field.name, "dtype": _DTYPES[kind]})
    return out


def card_text(manifest: "Manifest", arrow_schema: pa.Schema) -> str:
    splits = [s for s in SPLITS if manifest.rows(s)]
    meta = {
        "license": manifest.metadata.license,
        "tags": ["model-zoo", "weight-space", "symzoo", f"variant-{manifest.arch.get('variant')}"],
        "configs": [{
            "config_name": "default",
            # the listed files only: a file not (yet) in zoo.json is never read as part of the zoo
            "data_files": [{"split": s, "path": [x.path for x in manifest.shards_of(s)]} for s in splits],
        }],
        "dataset_info": {
            "features": features(arrow_schema),
            "splits": [
                {"name": s, "num_bytes": sum(x.bytes for x in manifest.shards_of(s)), "num_examples": manifest.rows(s)}
                for s in splits
            ],
        },
    }
    arch = manifest.arch
    md = manifest.metadata
    body = f"""# {md.name}

{md.description or 'A model zoo written by symzoo.'}

- Architecture: `{arch.get('family')}`, variant `{arch.get('variant')}`; {manifest.num_params:,} weights per model
  ({manifest.num_trainable:,} trainable, {manifest.num_params - manifest.num_trainable:,} fixed).
- Models: {manifest.rows():,} ({', '.join(f'{s} {manifest.rows(s):,}' for s in SPLITS)}).
- Data set: {md.dataset.get('name', 'unspecified')}; zoo seed: {md.zoo_seed}.

Each row is one trained network: `weights` holds its effective weights in `state_dict` order
(layout and fixed entries in `zoo.json`), `train_acc`/`test_acc` are fractions, and `status` is
`ok` or `diverged` (diverged models are kept and marked).

```python
from datasets import load_dataset
zoo = load_dataset("path/to/this/folder").with_format("torch")
weights = zoo["train"]["weights"][:]       # torch tensor (rows, {manifest.num_params})

from zoo.storage import open_zoo             # pip install symzoo
net = open_zoo("path/to/this/folder").rebuild(0, split="train")   # a working nn.Module
```
"""
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n{body}"


def write_card(zoo_dir: Path, manifest: "Manifest", arrow_schema: pa.Schema) -> None:
    atomic_write_text(Path(zoo_dir) / CARD, card_text(manifest, arrow_schema), step="commit.card")
