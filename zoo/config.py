"""Typed configs from plain mappings (YAML/JSON), strictly, with one-line errors naming the field."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
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
    (``SpecError`` from ``__post_init__``) all become ``SpecError("<source>: ...")``, naming the
    nested field's full path (``hyperparameters.lr.foo``) where the problem lies below the top."""
    data = _lists_to_tuples(data)
    try:
        return dacite.from_dict(cls, data, config=_CONFIG)
    except SpecError as err:
        message = str(err)
        where, _ = _innermost(cls, data, lambda t, d: _fails_with(t, d, message))
        raise SpecError(f"{source}: {where + ': ' if where else ''}{err}") from None
    except dacite.WrongTypeError as err:
        got = _lookup(data, err.field_path or "")
        expected = getattr(err.field_type, "__name__", None) if not getattr(err.field_type, "__args__", None) else None
        raise SpecError(f"{source}: field '{err.field_path}' is {got!r}; expected {expected or err.field_type}") from None
    except dacite.UnexpectedDataError as err:
        unexpected = set(err.keys)
        where, owner = _innermost(cls, data, lambda t, d: unexpected <= set(d) - _field_names(t))
        names = ", ".join(f"{where}.{k}" if where else k for k in sorted(err.keys))
        raise SpecError(f"{source}: unknown field(s) {names}; expected {where + ' fields' if where else 'fields'}: "
                        f"{', '.join(sorted(_field_names(owner)))}") from None
    except (dacite.DaciteError, TypeError) as err:
        raise SpecError(f"{source}: {err}") from None


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _nested(cls: type, data: Any, path: str = "") -> Iterator[tuple[str, type, dict[str, Any]]]:
    """``(dotted path, dataclass, mapping)`` of every mapping in ``data`` that fills a nested
    dataclass field of ``cls`` (also inside optionals, unions, ``dict`` values and tuples), deepest first."""
    if not isinstance(data, dict):
        return
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved here: no path, still the message
        return
    for f in dataclasses.fields(cls):
        if f.name in data:
            yield from _values(hints[f.name], data[f.name], f"{path}.{f.name}" if path else f.name)


def _values(hint: Any, value: Any, path: str) -> Iterator[tuple[str, type, dict[str, Any]]]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        yield from _nested(hint, value, path)
        yield path, hint, value
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _values(arg, value, path)
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for key, item in value.items():
            yield from _values(args[1], item, f"{path}.{key}")
    elif origin is tuple and args and isinstance(value, tuple):
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else args
        for i, (item_type, item) in enumerate(zip(item_types, value)):
            yield from _values(item_type, item, f"{path}[{i}]")


def _innermost(cls: type, data: dict[str, Any], matches: Callable[[type, dict[str, Any]], bool]) -> tuple[str, type]:
    """Path and dataclass of the deepest nested mapping of ``data`` that ``matches``; ("", cls) if none."""
    return next(((path, t) for path, t, d in _nested(cls, data) if matches(t, d)), ("", cls))


def _fails_with(cls: type, data: dict[str, Any], message: str) -> bool:
    """Whether building ``cls`` from ``data`` alone raises the ``SpecError`` ``message``."""
    try:
        dacite.from_dict(cls, data, config=_CONFIG)
    except SpecError as err:
        return str(err) == message
    except (dacite.DaciteError, TypeError):
        pass
    return False


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
