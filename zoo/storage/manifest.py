"""``zoo.json``: everything needed to trust a zoo's files and rebuild any of its rows."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import SymzooError
from zoo.storage.files import atomic_write_text
from zoo.storage.format import DATA_DIR, MANIFEST, SCHEMA_VERSION, SPLITS

__all__ = ["ZooFormatError", "ShardInfo", "ZooSchema", "ZooMetadata", "Manifest", "SHARD_PATH", "software_versions"]


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
    """The manifest's ``software`` field: what wrote the zoo (symzoo, torch, pyarrow, Python)."""
    from zoo.environment import software_record

    return software_record("pyarrow")


_REQUIRED = ("schema_version", "arch", "layout", "num_params", "fixed_file", "fixed_sha256", "schema", "shards")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A shard is a plain file in data/; the masks file a plain file beside zoo.json: no path may leave the zoo.
SHARD_PATH = re.compile(rf"{DATA_DIR}/(?P<split>{'|'.join(SPLITS)})-[A-Za-z0-9_-]+\.parquet")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_LAYOUT_FIELDS = {"name": str, "shape": list, "offset": int, "numel": int, "fixed": int}
MASK_SOURCES = ("spec", "imported")
_METADATA_TYPES = {"name": str, "description": str, "dataset": dict, "recipe": dict,
                   "hyperparameter_distributions": dict, "zoo_seed": int, "license": str}
# More parameters than any network symzoo builds; a larger claim is a damaged or hostile manifest.
MAX_PARAMS = 1 << 31


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
    # "spec": fixed.npz holds what ``arch`` builds; "imported": masks came with the rows' source
    masks: str = "spec"

    def rows(self, split: str | None = None) -> int:
        return sum(s.rows for s in self.shards if split is None or s.split == split)

    def shards_of(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def header(self) -> dict[str, Any]:
        """What makes a zoo this zoo, as JSON data: everything but its shards and the software that
        wrote it. Each shard carries it (:func:`zoo.storage.format.SHARD_HEADER_KEY`), so a shard
        can be recognised as this zoo's, and a lost ``zoo.json`` rebuilt from its shards."""
        data = json.loads(self.to_json())
        for key in ("shards", "software", "fixed_sha256"):
            data.pop(key)
        return data

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = self.schema.to_dict()
        ordered = {"format": data.pop("format"), "schema_version": data.pop("schema_version"), **data}
        return json.dumps(ordered, indent=1)

    def save(self, zoo_dir: Path) -> None:
        atomic_write_text(Path(zoo_dir) / MANIFEST, self.to_json(), step="commit.manifest")

    @classmethod
    def load(cls, zoo_dir: Path) -> "Manifest":
        path = Path(zoo_dir) / MANIFEST
        if not Path(zoo_dir).is_dir():
            raise ZooFormatError(f"{zoo_dir}: no such zoo directory")
        if not path.is_file():
            raise ZooFormatError(f"{path}: manifest missing; a zoo directory holds zoo.json, README.md and data/"
                                 f" (if only zoo.json was lost, `symzoo repair {zoo_dir}` rebuilds it from the shards)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ZooFormatError(f"{path}: manifest is not valid JSON ({err})") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, path: str) -> "Manifest":
        """Validate and parse a decoded manifest; ``path`` names it in errors.

        Every field is checked for its type and range, and every file it names must stay inside
        the zoo: a hand-edited or hostile manifest gives one clear error, never a crash or a read
        elsewhere.
        """
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
        field_of = _FieldChecker(path)
        arch = field_of(data, "arch", dict)
        num_params = field_of.count(data, "num_params", low=1, high=MAX_PARAMS)
        num_trainable = field_of.count(data, "num_trainable", low=0, high=num_params) if "num_trainable" in data else num_params
        layout = _check_layout(field_of(data, "layout", list), num_params, field_of)
        fixed_file = field_of(data, "fixed_file", str)
        if not _PLAIN_NAME.fullmatch(fixed_file):
            raise ZooFormatError(f"{path}: field 'fixed_file' is {fixed_file!r}; expected a file name beside zoo.json "
                                 "(no folders, no '..')")
        fixed_sha256 = field_of(data, "fixed_sha256", str)
        if not _SHA256.fullmatch(fixed_sha256):
            raise ZooFormatError(f"{path}: field 'fixed_sha256' is not a SHA-256 hex digest")
        schema_data = field_of(data, "schema", dict)
        metadata_data = field_of(data, "metadata", dict) if "metadata" in data else {}
        software = field_of(data, "software", dict) if "software" in data else {}
        for key, kind in _METADATA_TYPES.items():
            if key in metadata_data and (key != "zoo_seed" or metadata_data[key] is not None):
                field_of(metadata_data, key, kind, "metadata.")
        for key in ("hyperparameters",):
            if key in schema_data:
                field_of(schema_data, key, dict, "schema.")
        for key in ("curves", "checkpoint_epochs"):
            if key in schema_data:
                field_of(schema_data, key, list, "schema.")
        try:
            schema = ZooSchema.from_dict(schema_data)
            metadata = ZooMetadata(**metadata_data)
        except (TypeError, ValueError, SymzooError) as err:
            raise ZooFormatError(f"{path}: malformed schema or metadata ({err})") from None
        _check_schema(schema, path)
        shards = [_shard_info(entry, f"shards[{i}]", field_of) for i, entry in enumerate(field_of(data, "shards", list))]
        masks = data.get("masks", "imported" if "source" in metadata.recipe else "spec")  # older zoos: inferred
        if masks not in MASK_SOURCES:
            raise ZooFormatError(f"{path}: field 'masks' is {_short(masks)}; expected one of {', '.join(MASK_SOURCES)}")
        paths = [s.path for s in shards]
        if len(set(paths)) != len(paths):
            raise ZooFormatError(f"{path}: a shard is listed twice in field 'shards'")
        return cls(
            arch=arch, layout=layout, num_params=num_params, num_trainable=num_trainable, fixed_file=fixed_file,
            fixed_sha256=fixed_sha256, schema=schema, metadata=metadata, software=software, shards=shards,
            schema_version=version, masks=masks,
        )


class _FieldChecker:
    """Type checks of decoded JSON fields, each failure one line naming the file and the field."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, data: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
        value = data.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ZooFormatError(f"{self.path}: field '{where}{key}' is {_short(value)}; expected {_KINDS[kind]}")
        return value

    def count(self, data: dict[str, Any], key: str, low: int, high: int, where: str = "") -> int:
        value = self(data, key, int, where)
        if not low <= value <= high:
            raise ZooFormatError(f"{self.path}: field '{where}{key}' is {value}; expected {low} to {high}")
        return value


_KINDS = {dict: "an object", list: "a list", int: "an integer", str: "a string"}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_layout(layout: list[Any], num_params: int, field_of: _FieldChecker) -> list[dict[str, Any]]:
    """Tensors in order, each starting where the previous one ends, together ``num_params`` long."""
    offset = 0
    for i, record in enumerate(layout):
        where = f"layout[{i}]."
        if not isinstance(record, dict):
            raise ZooFormatError(f"{field_of.path}: field 'layout[{i}]' is {_short(record)}; expected an object")
        for key, kind in _LAYOUT_FIELDS.items():
            field_of(record, key, kind, where)
        shape = record["shape"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_PARAMS for n in shape):
            raise ZooFormatError(f"{field_of.path}: field '{where}shape' is {_short(shape)}; expected a list of sizes")
        numel = math.prod(shape)
        if record["numel"] != numel or record["offset"] != offset or not 0 <= record["fixed"] <= numel:
            raise ZooFormatError(
                f"{field_of.path}: layout entry {record['name']!r} (offset {record['offset']}, numel {record['numel']}, "
                f"fixed {record['fixed']}) does not follow the previous tensors; expected offset {offset}, numel {numel}"
            )
        offset += numel
    if offset != num_params:
        raise ZooFormatError(f"{field_of.path}: the layout covers {offset} parameters; field 'num_params' says {num_params}")
    return layout


def _check_schema(schema: ZooSchema, path: str) -> None:
    names = [*schema.hyperparameters, *schema.curves]
    if not all(isinstance(n, str) and _PLAIN_NAME.fullmatch(n) for n in names) or not all(
            isinstance(e, int) for e in schema.checkpoint_epochs):
        raise ZooFormatError(f"{path}: field 'schema' names columns {names}; expected plain names and integer epochs")


def _shard_info(entry: Any, where: str, field_of: _FieldChecker) -> ShardInfo:
    if not isinstance(entry, dict) or set(entry) != {"path", "split", "rows", "sha256", "bytes"}:
        raise ZooFormatError(f"{field_of.path}: field '{where}' is {_short(entry)}; expected an object with "
                             "path, split, rows, sha256 and bytes")
    prefix = f"{where}."
    shard_path = field_of(entry, "path", str, prefix)
    match = SHARD_PATH.fullmatch(shard_path)
    if not match:
        raise ZooFormatError(f"{field_of.path}: field '{prefix}path' is {shard_path!r}; expected "
                             f"'{DATA_DIR}/SPLIT-NAME.parquet' inside the zoo")
    split = field_of(entry, "split", str, prefix)
    if split != match["split"]:
        raise ZooFormatError(f"{field_of.path}: shard {shard_path} has split {split!r}; its name says '{match['split']}'")
    sha = field_of(entry, "sha256", str, prefix)
    if not _SHA256.fullmatch(sha):
        raise ZooFormatError(f"{field_of.path}: field '{prefix}sha256' is not a SHA-256 hex digest")
    return ShardInfo(shard_path, split, field_of.count(entry, "rows", 0, 1 << 40, prefix), sha,
                     field_of.count(entry, "bytes", 1, 1 << 50, prefix))
