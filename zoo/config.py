"""Typed configs from plain mappings (YAML/JSON), strictly, with one-line errors naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import dacite
import yaml

from zoo.errors import SpecError

__all__ = ["dataclass_from_dict", "read_config_file"]

T = TypeVar("T")


def _int_to_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _lists_to_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def _lookup(data: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


_CONFIG = dacite.Config(strict=True, type_hooks={float: _int_to_float})


def dataclass_from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build ``cls`` from ``data``: unknown fields, missing fields, wrong types and invalid values
    (``SpecError`` from ``__post_init__``) all become ``SpecError("<source>: ...")``."""
    try:
        return dacite.from_dict(cls, _lists_to_tuples(data), config=_CONFIG)
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
    except dacite.WrongTypeError as err:
        got = _lookup(data, err.field_path or "")
        expected = getattr(err.field_type, "__name__", None) if not getattr(err.field_type, "__args__", None) else None
        raise SpecError(f"{source}: field '{err.field_path}' is {got!r}; expected {expected or err.field_type}") from None
    except dacite.UnexpectedDataError as err:
        raise SpecError(f"{source}: unknown field(s) {', '.join(sorted(err.keys))}") from None
    except (dacite.DaciteError, TypeError) as err:
        raise SpecError(f"{source}: {err}") from None


def read_config_file(path: str | Path, what: str) -> Any:
    """The parsed content of a ``.json`` or YAML file; unreadable or malformed files become a
    one-line ``SpecError`` naming the file (``what`` says what it should be, e.g. "zoo config")."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"{path}: cannot read {what} ({err.strerror})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError(f"{path}: not valid {kind} ({str(err).splitlines()[0]})") from None
