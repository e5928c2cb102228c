"""Typed architecture specs: one dataclass per family, shared variant settings, JSON/YAML round trip.

A spec fully determines a network's structure, its W-Asym masks and fixed values and its FiGLU
matrices (through ``asym_seed``); only the trainable entries' initial values depend on the
``init_seed`` given to :meth:`ArchSpec.build`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import yaml
from torch import nn

from zoo.config import dataclass_from_dict, read_config_file
from zoo.errors import SpecError
from zoo.masks import MASK_TYPES
from zoo.nets.variants import apply_variant

__all__ = [
    "VARIANTS",
    "check_variant",
    "LayerAsym",
    "WAsymSpec",
    "SigmaAsymSpec",
    "ArchSpec",
    "spec_from_dict",
    "load_spec",
    "FAMILIES",
]

VARIANTS = ("standard", "w_asym", "sigma_asym")


def check_variant(value: object, source: str | None = None) -> str:
    """``value`` if it names a variant, else the one message every input names a variant with:
    ``"SOURCE: unknown variant 'x'; valid variants: standard, w_asym, sigma_asym"``."""
    if value not in VARIANTS:
        where = f"{source}: " if source else ""
        raise SpecError(f"{where}unknown variant '{value}'; valid variants: {', '.join(VARIANTS)}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class LayerAsym:
    """W-Asym settings of one layer: ``n_fix`` fixed entries per row with std ``kappa``."""

    n_fix: int
    kappa: float = 1.0
    mask_type: str = "random_subsets"

    def __post_init__(self) -> None:
        if self.mask_type not in MASK_TYPES:
            raise SpecError(f"mask_type '{self.mask_type}' is unknown; expected one of {', '.join(MASK_TYPES)}")
        if self.n_fix < 0:
            raise SpecError(f"n_fix must be >= 0, got {self.n_fix}")
        if self.kappa < 0:
            raise SpecError(f"kappa must be >= 0, got {self.kappa}")


@dataclass(frozen=True)
class WAsymSpec:
    """Which Linear/Conv2d layers become W-Asym, and how.

    ``layers`` maps glob patterns over qualified layer names (``fnmatch``) to settings; the first
    matching pattern wins, then ``default``; a layer matching nothing (or ``n_fix=0`` with a
    subset mask type) stays standard.
    """

    default: LayerAsym | None = None
    layers: dict[str, LayerAsym] = field(default_factory=dict)

    def rule_for(self, name: str) -> LayerAsym | None:
        for pattern, rule in self.layers.items():
            if fnmatch.fnmatchcase(name, pattern):
                return rule
        return self.default


@dataclass(frozen=True)
class SigmaAsymSpec:
    """σ-Asym settings: every activation becomes FiGLU with ``F ~ N(0, std²)``, std ``1/√d`` if None."""

    std: float | None = None

    def __post_init__(self) -> None:
        if self.std is not None and self.std <= 0:
            raise SpecError(f"std must be > 0, got {self.std}")


FAMILIES: dict[str, type["ArchSpec"]] = {}

SpecT = TypeVar("SpecT", bound="ArchSpec")


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """Fields shared by every family: the variant and its settings.

    Attributes:
        variant: ``standard``, ``w_asym`` or ``sigma_asym``.
        w_asym: W-Asym layer settings (required for the ``w_asym`` variant).
        sigma_asym: σ-Asym settings.
        asym_seed: seed of every mask, fixed value and FiGLU matrix; a zoo shares it.
    """

    family: ClassVar[str] = ""

    variant: str = "standard"
    w_asym: WAsymSpec | None = None
    sigma_asym: SigmaAsymSpec = field(default_factory=SigmaAsymSpec)
    asym_seed: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            FAMILIES[cls.family] = cls

    def __post_init__(self) -> None:
        check_variant(self.variant)
        if self.variant == "w_asym" and self.w_asym is None:
            raise SpecError("variant 'w_asym' needs a 'w_asym' section (default and/or per-layer settings)")

    # -- structure ------------------------------------------------------------------------------
    def build_standard(self) -> nn.Module:
        """The standard network of this spec (family-specific)."""
        raise NotImplementedError

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch dimension)."""
        raise NotImplementedError

    def accepts(self, example_shape: tuple[int, ...]) -> bool:
        """Whether examples of ``example_shape`` (no batch dimension) fit this network's input."""
        return tuple(example_shape) == self.input_shape()

    def num_outputs(self) -> int:
        """Outputs of the network (the classes it tells apart)."""
        raise NotImplementedError

    def num_weights(self) -> int:
        """Entries of the built network's flat weight vector (FiGLU matrices included), counted
        without building it (family-specific)."""
        raise NotImplementedError

    # Far above any zoo member (the paper's largest has 935,434), far below what fails to allocate.
    MAX_WEIGHTS: ClassVar[int] = 10**9

    def _check_size(self) -> None:
        """Refuse an absurd size before anything is built: building first allocates it all."""
        if (n := self.num_weights()) > self.MAX_WEIGHTS:
            raise SpecError(f"{self.family}: the network would have {n:,} weights; expected at most "
                            f"{self.MAX_WEIGHTS:,} (smaller widths or channels)")

    def build(self, init_seed: int = 0, device: torch.device | str | None = None) -> nn.Module:
        """Build the network; trainable entries are initialised from ``init_seed`` alone.

        The standard network is built first, then converted to the variant, so the paired
        standard, W-Asym and σ-Asym networks of one ``init_seed`` share their trainable initial
        values. The global RNG state is left untouched.
        """
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(init_seed))  # CPU only: no CUDA lazy-init cost
            model = self.build_standard()
        model = apply_variant(model, self)
        return model.to(device) if device is not None else model

    def with_variant(self: SpecT, variant: str) -> SpecT:
        return dataclasses.replace(self, variant=variant)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **_plain(dataclasses.asdict(self))}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def positive_ints(*values: Any) -> bool:
    """Every value is an ``int`` (not a float or bool, which YAML and JSON also allow) and > 0."""
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so JSON and YAML see plain lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def spec_from_dict(data: dict[str, Any], *, source: str = "spec") -> ArchSpec:
    """Rebuild a spec from :meth:`ArchSpec.to_dict` output (or a hand-written YAML/JSON mapping)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with a 'family' field, got {type(data).__name__}")
    body = dict(data)
    family = body.pop("family", None)
    if not isinstance(family, str) or family not in FAMILIES:
        raise SpecError(f"{source}: field 'family' is {family!r}; expected one of {', '.join(sorted(FAMILIES))}")
    return dataclass_from_dict(FAMILIES[family], body, source)


def load_spec(path: str | Path) -> ArchSpec:
    """Read a spec from a ``.json``, ``.yaml`` or ``.yml`` file."""
    return spec_from_dict(read_config_file(path, "spec file"), source=str(path))
