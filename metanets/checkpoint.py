"""Metanet checkpoints: the file ``symzoo metanet train`` writes and ``symzoo metanet predict`` reads.

Checkpoints are files people hand each other, so opening one must never run code. Pickle-based
formats (``torch.save``/``torch.load(weights_only=False)``) execute whatever a crafted file asks,
even from a field nobody reads. A checkpoint is therefore one safetensors file: the tensors (the
metanet's ``state_dict`` under ``state_dict/NAME``, the train-split input normaliser under
``normalizer/mean`` and ``normalizer/std``) and, in the safetensors header's string metadata, a
JSON object with everything else (``format``, ``version``, ``metanet``: config, input size, view,
training zoo), and a ``sha256`` of both, so that flipped bytes are caught rather than silently
predicting with wrong weights. Reading parses only that header and raw tensor bytes; a file that
is anything else (a pickle, truncated, damaged, a missing, extra or mistyped field) is refused
with one line.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from metanets.config import MetanetConfig
from metanets.registry import METANETS, get_metanet
from zoo.errors import SpecError, SymzooError, clean_message, one_line
from zoo.storage.files import atomic_write

__all__ = ["CHECKPOINT_FILE", "FORMAT", "VERSION", "MetanetCheckpoint", "CheckpointError"]

CHECKPOINT_FILE = "metanet.safetensors"
FORMAT = "symzoo-metanet"
VERSION = 1

_STATE = "state_dict/"
_MEAN, _STD = "normalizer/mean", "normalizer/std"
_EXPECTED = "it should be a metanet file written by 'symzoo metanet train'"


class CheckpointError(SpecError):
    """A file given as a metanet checkpoint is not one (one line: the file, what is wrong, what is expected)."""

    @classmethod
    def for_file(cls, path: str | Path, reason: str) -> CheckpointError:
        """The one-line refusal, with control characters in the name or reason escaped."""
        return cls(f"{one_line(str(path))}: {one_line(reason)}; {_EXPECTED}")


class _Invalid(Exception):
    """Internal: why a checkpoint's contents are refused, before the file name is known."""


@dataclass(frozen=True, eq=False)
class MetanetCheckpoint:
    """A trained metanet and what ``predict`` needs to rebuild it on another zoo.

    ``normalizer`` is the (mean, std) the inputs were standardised with (train-split statistics,
    one entry per input), kept so that another zoo is standardised the same way; it is ``None``
    for a metanet trained without ``normalize``.
    ``arch`` is the training zoo's architecture (``ArchSpec.to_dict()``), so that ``predict`` can
    say when it scores a zoo of another variant; files written before it was kept have ``None``.
    The constructor checks the fields agree with each other, so a checkpoint that exists is usable.
    """

    config: MetanetConfig
    input_dim: int
    view: str
    state_dict: dict[str, Tensor]
    normalizer: tuple[Tensor, Tensor] | None
    zoo: str
    arch: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        try:
            _check(self)
        except _Invalid as err:
            raise SpecError(f"inconsistent metanet checkpoint: {err}") from None

    def save(self, path: str | Path) -> None:
        """Write the checkpoint atomically: a crash leaves the previous file or the new one, never half."""
        tensors = {_STATE + name: value.detach().contiguous().clone() for name, value in self.state_dict.items()}
        if self.normalizer is not None:  # cloned: safetensors refuses tensors that share memory
            tensors[_MEAN], tensors[_STD] = (t.detach().contiguous().clone() for t in self.normalizer)
        fields = {"config": asdict(self.config), "input_dim": self.input_dim, "view": self.view, "zoo": self.zoo}
        header = json.dumps(fields if self.arch is None else {**fields, "arch": self.arch})
        metadata = {"format": FORMAT, "version": str(VERSION), "metanet": header, "sha256": _digest(header, tensors)}
        atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> MetanetCheckpoint:
        """Read a checkpoint without running anything from the file; raise :class:`CheckpointError`
        (exit status 2 on the command line) if it is not a complete, well-formed checkpoint."""
        path = Path(path)
        try:
            metadata, tensors = _read(path)
            return _from_parts(metadata, tensors)
        except (_Invalid, SymzooError) as err:
            raise CheckpointError.for_file(path, str(err)) from None


def _read(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """The safetensors header's metadata and all tensors; nothing but a header parse and byte copies."""
    if path.is_dir():
        raise _Invalid("is a directory")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except FileNotFoundError:
        raise _Invalid("no such file") from None
    except OSError as err:
        raise _Invalid(f"cannot be read ({err.strerror or err})") from None
    except SafetensorError as err:
        raise _Invalid(f"not a safetensors file ({clean_message(err)}){_pickle_hint(path)}") from None
    return metadata, tensors


def _from_parts(metadata: dict[str, str], tensors: dict[str, Tensor]) -> MetanetCheckpoint:
    if metadata.get("format") != FORMAT:
        raise _Invalid(f"a safetensors file without the '{FORMAT}' header")
    if metadata.get("version") != str(VERSION):
        raise _Invalid(f"{FORMAT} version {metadata.get('version')!r}; this symzoo reads version {VERSION}")
    if metadata.get("sha256") != _digest(metadata.get("metanet", ""), tensors):
        raise _Invalid("its contents do not match their sha256: the file is damaged")
    try:
        header = json.loads(metadata.get("metanet", ""))
    except (ValueError, RecursionError):
        raise _Invalid("its 'metanet' header is not JSON") from None
    if not isinstance(header, dict) or set(header) - {"arch"} != {"config", "input_dim", "view", "zoo"}:
        raise _Invalid("its 'metanet' header needs exactly the fields config, input_dim, view, zoo (and arch)")
    if not isinstance(header.get("arch", {}), dict):
        raise _Invalid("its 'arch' must be a mapping (an architecture spec)")
    if not _matches(header["input_dim"], int) or not _matches(header["view"], str) or not _matches(header["zoo"], str):
        raise _Invalid("input_dim must be an integer, view and zoo strings")
    state = {name[len(_STATE):]: value for name, value in tensors.items() if name.startswith(_STATE)}
    extra = sorted(set(tensors) - {_STATE + name for name in state} - {_MEAN, _STD})
    if extra:
        raise _Invalid(f"unexpected tensor {extra[0]!r}")
    normalizer = None
    if _MEAN in tensors or _STD in tensors:
        if not (_MEAN in tensors and _STD in tensors):
            raise _Invalid("the normalizer needs both its mean and its std")
        normalizer = (tensors[_MEAN], tensors[_STD])
    return MetanetCheckpoint(_config(header["config"]), header["input_dim"], header["view"], state, normalizer,
                             header["zoo"], header.get("arch"))


def _digest(header: str, tensors: dict[str, Tensor]) -> str:
    """sha256 of the JSON header and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().reshape(-1)
        digest.update(json.dumps([name, str(tensor.dtype), list(tensors[name].shape)]).encode())
        digest.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
    return digest.hexdigest()


def _config(raw: Any) -> MetanetConfig:
    """A :class:`MetanetConfig` from JSON, every field type-checked (the dataclass itself does not)."""
    if not isinstance(raw, dict):
        raise _Invalid("config must be an object")
    hints = typing.get_type_hints(MetanetConfig)
    known = {f.name for f in fields(MetanetConfig)}
    for key, value in raw.items():
        if key not in known:
            raise _Invalid(f"unknown config field {one_line(repr(key))}")
        if not _matches(value, hints[key]):
            raise _Invalid(f"config field {key!r} has the wrong type")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()}
    if isinstance(values.get("model"), str) and values["model"] in METANETS:
        # written before these options existed: only statistics-view metanets were normalised
        # then, and none had a sigmoid output
        values.setdefault("normalize", METANETS[values["model"]].view == "statistics")
        values.setdefault("sigmoid", False)
    try:
        return MetanetConfig(**values)
    except TypeError as err:  # a required field is missing
        raise _Invalid(f"config: {err}") from None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (``bool`` is not an ``int`` here)."""
    if isinstance(hint, types.UnionType):  # e.g. bool | None
        return any(_matches(value, option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


def _check(checkpoint: MetanetCheckpoint) -> None:
    """The cross-field rules a checkpoint must satisfy (checked on construction, so also on load)."""
    if not isinstance(checkpoint.config, MetanetConfig):
        raise _Invalid("config must be a MetanetConfig")
    if not _matches(checkpoint.input_dim, int) or checkpoint.input_dim <= 0:
        raise _Invalid("input_dim must be a positive integer")
    view = get_metanet(checkpoint.config.model).view
    if checkpoint.view != view:
        raise _Invalid(f"view {one_line(repr(checkpoint.view))} but a {checkpoint.config.model} metanet reads '{view}'")
    if not checkpoint.state_dict or not all(isinstance(t, Tensor) for t in checkpoint.state_dict.values()):
        raise _Invalid("state_dict must be a non-empty mapping of names to tensors")
    if (checkpoint.normalizer is not None) != checkpoint.config.normalize:
        raise _Invalid("a normalizer belongs with a metanet trained with normalize, and only there")
    if checkpoint.normalizer is not None:
        shapes = {tuple(t.shape) if isinstance(t, Tensor) and t.is_floating_point() else None
                  for t in checkpoint.normalizer}
        if shapes != {(checkpoint.input_dim,)}:
            raise _Invalid(f"the normalizer must be two float vectors of length input_dim ({checkpoint.input_dim})")


def _pickle_hint(path: Path) -> str:
    """Say why a pickle-based file (e.g. the ``metanet.pt`` of older symzoo) is refused, not just that it is."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return ""
    if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":
        return ": it looks like a pickle-based .pt file, which symzoo never opens because unpickling can run code"
    return ""
