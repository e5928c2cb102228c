"""``zoo.json``: everything needed to trust a zoo's files and rebuild any of its rows."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import SymzooError
from zoo.storage.files import atomic_write_text
from zoo.storage.format import MANIFEST, SCHEMA_VERSION, SPLITS

__all__ = ["ZooFormatError", "ShardInfo", "ZooSchema", "ZooMetadata", "Manifest", "software_versions"]


class ZooFormatError(SymzooError):
    """A zoo directory or file is missing, damaged or of an unknown format."""


@dataclass(frozen=True)
class ShardInfo:
    """One Parquet file of one split."""

    path: str  # relative to the zoo directory
    split: str
    rows: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ZooSchema:
    """The columns a zoo's rows carry besides the fixed ones (id, seed, metrics, status, weights).

    Attributes:
        hyperparameters: name -> ``"int"`` or ``"float"``, one column each.
        curves: per-epoch metrics, stored as ``curve_<name>`` list columns.
        checkpoint_epochs: epochs whose weights are kept as ``weights_epoch_<e>`` (0 = initial).
    """

    hyperparameters: dict[str, str] = field(default_factory=dict)
    curves: tuple[str, ...] = ()
    checkpoint_epochs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.hyperparameters.items() if v not in ("int", "float")}
        if bad:
            raise SymzooError(f"hyperparameter types must be 'int' or 'float', got {bad}")
        if any(e < 0 for e in self.checkpoint_epochs):
            raise SymzooError(f"checkpoint epochs must be >= 0, got {list(self.checkpoint_epochs)}")

    def to_dict(self) -> dict[str, Any]:
        return {"hyperparameters": dict(self.hyperparameters), "curves": list(self.curves),
                "checkpoint_epochs": list(self.checkpoint_epochs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZooSchema":
        return cls(dict(data.get("hyperparameters", {})), tuple(data.get("curves", ())),
                   tuple(int(e) for e in data.get("checkpoint_epochs", ())))


@dataclass(frozen=True)
class ZooMetadata:
    """What the zoo's creator says about it; written to the manifest and the dataset card."""

    name: str = "symzoo-zoo"
    description: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    hyperparameter_distributions: dict[str, Any] = field(default_factory=dict)
    zoo_seed: int | None = None
    license: str = "cc-by-4.0"


def software_versions() -> dict[str, str]:
    import pyarrow
    import torch

    import zoo

    return {"symzoo": zoo.__version__, "torch": torch.__version__, "pyarrow": pyarrow.__version__,
            "python": platform.python_version()}


_REQUIRED = ("schema_version", "arch", "layout", "num_params", "fixed_file", "fixed_sha256", "schema", "shards")


@dataclass
class Manifest:
    """The parsed ``zoo.json``."""

    arch: dict[str, Any]
    layout: list[dict[str, Any]]
    num_params: int
    num_trainable: int
    fixed_file: str
    fixed_sha256: str
    schema: ZooSchema
    metadata: ZooMetadata
    software: dict[str, str]
    shards: list[ShardInfo] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    format: str = "symzoo"

    def rows(self, split: str | None = None) -> int:
        return sum(s.rows for s in self.shards if split is None or s.split == split)

    def shards_of(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = self.schema.to_dict()
        ordered = {"format": data.pop("format"), "schema_version": data.pop("schema_version"), **data}
        return json.dumps(ordered, indent=1)

    def save(self, zoo_dir: Path) -> None:
        atomic_write_text(Path(zoo_dir) / MANIFEST, self.to_json())

    @classmethod
    def load(cls, zoo_dir: Path) -> "Manifest":
        path = Path(zoo_dir) / MANIFEST
        if not Path(zoo_dir).is_dir():
            raise ZooFormatError(f"{zoo_dir}: no such zoo directory")
        if not path.is_file():
            raise ZooFormatError(f"{path}: manifest missing; a zoo directory holds zoo.json, README.md and data/")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ZooFormatError(f"{path}: manifest is not valid JSON ({err})") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, path: str) -> "Manifest":
        """Validate and parse a decoded manifest; ``path`` names it in errors."""
        if not isinstance(data, dict) or data.get("format") != "symzoo":
            raise ZooFormatError(f"{path}: not a symzoo manifest (field 'format' should be 'symzoo')")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ZooFormatError(
                f"{path}: schema_version {version!r} is not supported; this symzoo reads version {SCHEMA_VERSION}"
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ZooFormatError(f"{path}: manifest lacks field(s) {', '.join(missing)}")
        try:
            shards = [ShardInfo(**s) for s in data["shards"]]
            metadata = ZooMetadata(**data.get("metadata", {}))
        except TypeError as err:
            raise ZooFormatError(f"{path}: malformed shard or metadata entry ({err})") from None
        for shard in shards:
            if shard.split not in SPLITS:
                raise ZooFormatError(f"{path}: shard {shard.path} has split '{shard.split}'; expected one of {SPLITS}")
        return cls(
            arch=data["arch"], layout=data["layout"], num_params=int(data["num_params"]),
            num_trainable=int(data.get("num_trainable", data["num_params"])), fixed_file=data["fixed_file"],
            fixed_sha256=data["fixed_sha256"], schema=ZooSchema.from_dict(data["schema"]), metadata=metadata,
            software=data.get("software", {}), shards=shards, schema_version=version,
        )
