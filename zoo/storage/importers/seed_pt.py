"""Import the ResNet8 zoos of the W-Asym paper (GitHub cptq/asymmetric-networks, ``metanet_data``).

Source format, as that repository's ``metanet_data/train_cifar.py`` writes it: a folder of
``N.pt`` files (N = model number), each ``torch.save((state_dict, test_acc_percent))`` of one
CIFAR-10 ResNet8 from its ``models.py``:

- standard ``ResNet``: ``conv1``, ``ln1`` (GroupNorm), ``layer{1,2,3}.0.{conv1,ln1,conv2,ln2}``,
  ``layer{2,3}.0.shortcut.{0,1}`` (1×1 conv + GroupNorm) and ``linear``; stage widths 16/32/64,
  or 14/28/56 for the paper's "smaller" ResNet (symzoo presets ``resnet8`` / ``resnet8-small``);
- W-Asym ``SparseResNet``: the same names; every conv and the linear layer also hold buffers
  ``mask`` (1 = trainable) and ``normal_mask`` (Z), and compute with
  ``weight*mask + (1-mask)*kappa*normal_mask`` (kappa = ``mask_constant``);
- σ-Asym ``ResNet``: the standard names plus FiGLU matrices ``nonlin.F_mat`` and
  ``layer{k}.0.nonlin{1,2}.F_mat`` (C×C×1×1).

Decisions:

- The variant comes from the keys (``mask`` → ``w_asym``, ``F_mat`` → ``sigma_asym``) unless
  given. A W-Asym file may also be imported as ``standard``: its effective weights in a standard
  ResNet8 compute the same function; the masks are dropped.
- Rows hold effective weights, computed here. kappa, per layer, is the ratio of the stored
  weight to ``normal_mask`` at the fixed slots (the paper's forward overwrote them with kappa·Z),
  rounded to 6 significant digits; where that ratio is not one number (NaN weights, drift), the
  reference model's kappa is used, and for the reference itself 2.0, the paper's value.
- The zoo's masks and fixed values are the imported ones, not symzoo's seeded masks. All models
  must share them (the paper's zoo was trained with saved masks). The reference is the first
  model whose weights are finite.
- σ-Asym F matrices are entries of each row, so every row rebuilds even where F differs per
  model (the paper's code drew F per process with ``hash()``); ``fixed.npz`` holds the
  reference model's F.
- Index and seed = N; ``test_acc`` = percent / 100, other metrics NaN (the files hold none);
  ``diverged`` when a weight is not finite. A third tuple element, if present, must be a dict of
  numeric hyperparameters; the paper's files have none (its ``hparams.csv`` is not read).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from zoo.errors import clean_message
from zoo.layout import ParamLayout, fixed_entry_masks
from zoo.nets import ArchSpec, check_variant, get_arch
from zoo.storage.importers.common import require_dir, status_of, write_models
from zoo.storage.writer import FixedEntries, ZooWriter
from zoo.storage.manifest import ZooFormatError, ZooMetadata, ZooSchema
from zoo.storage.writer import ModelRecord

__all__ = ["import_seed_pt", "DEFAULT_KAPPA"]

DEFAULT_KAPPA = 2.0  # the paper's mask_constant (metanet_data/default_config.yaml)

_FILE = re.compile(r"^(\d+)\.pt$")
_PRESET_OF_WIDTH = {16: "resnet8", 14: "resnet8-small"}
# The paper's module names -> symzoo's (zoo/nets/resnet.py), at the top level and inside a block.
_TOP = {"conv1": "stem.layer", "ln1": "stem.norm", "nonlin": "stem.act", "linear": "head"}
_BLOCK = {"conv1": "conv1", "ln1": "norm1", "conv2": "conv2", "ln2": "norm2", "nonlin1": "act1",
          "nonlin2": "act2", "shortcut.0": "shortcut.0", "shortcut.1": "shortcut.1"}
_PAPER_TOP = {v: k for k, v in _TOP.items()}
_PAPER_INNER = {v: k for k, v in _BLOCK.items()}
_PAPER_BLOCK = re.compile(r"^layer([123])\.0\.(.+)$")
_SYMZOO_BLOCK = re.compile(r"^stages\.([012])\.0\.(.+)$")
_LEAVES = ("weight", "bias", "F_mat", "mask", "normal_mask")
_NAMES = "the paper's ResNet8 names (conv1, ln1, layer{1,2,3}.0.conv1/ln1/conv2/ln2/shortcut, linear)"


@dataclass
class _Source:
    """One ``N.pt`` file as the paper saved it."""

    path: Path
    state: dict[str, Tensor]
    test_acc_percent: float
    hyperparameters: dict[str, float | int]


@dataclass
class _Converted:
    """One model in symzoo's terms."""

    weights: Tensor  # flat effective weights, in the layout's order
    trainable: Tensor | None  # flat trainable mask of a W-Asym model, else None
    kappas: dict[str, float]  # kappa used per W-Asym layer (symzoo weight name)


def import_seed_pt(src: str | Path, out: str | Path, *, variant: str | None = None) -> Path:
    """Import a folder of the paper's ``N.pt`` ResNet8 files into the symzoo zoo ``out``."""
    folder = require_dir(src, "a folder of N.pt files (the paper's metanet_data zoo)")
    files = _model_files(folder)
    first = _load(files[min(files)])
    chosen = _choose_variant(first, variant)
    converter = _Converter(_spec_of(first, chosen), chosen, first)
    ref_index = converter.find_reference(files)
    schema = ZooSchema({k: "int" if isinstance(v, int) else "float" for k, v in first.hyperparameters.items()})
    writer = ZooWriter(out, converter.spec, schema, _metadata(folder, len(files), chosen, ref_index, converter),
                       converter.fixed_entries())

    def records(chunk: Sequence[int]) -> Iterator[ModelRecord]:
        for index in chunk:
            source = _load(files[index])
            if set(source.hyperparameters) != set(schema.hyperparameters):
                raise ZooFormatError(f"{source.path}: hyperparameters {sorted(source.hyperparameters)}; "
                                     f"{first.path} has {sorted(schema.hyperparameters)}")
            weights = converter.convert(source).weights
            yield ModelRecord(index=index, seed=index, weights=weights, status=status_of(weights),
                              metrics={"test_acc": source.test_acc_percent / 100.0},
                              hyperparameters=source.hyperparameters)

    with writer:
        write_models(writer, sorted(files), records, desc="import seed-pt")
    return Path(out)


# -- reading the files ------------------------------------------------------------------------------
def _model_files(folder: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE.match(path.name)
        if match and path.is_file():
            index = int(match[1])
            if index in files:
                raise ZooFormatError(f"{path}: model {index} also comes from {files[index].name}; "
                                     "keep one file per model")
            files[index] = path
    if not files:
        raise ZooFormatError(f"{folder}: no N.pt files; expected one torch.save((state_dict, test_acc_percent)) "
                             "per model, N = model number")
    return files


def _load(path: Path) -> _Source:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise ZooFormatError(f"{path}: not a readable torch file ({clean_message(err)})") from None
    if not (isinstance(payload, (tuple, list)) and len(payload) in (2, 3) and isinstance(payload[0], Mapping)
            and all(isinstance(v, Tensor) for v in payload[0].values())):
        raise ZooFormatError(f"{path}: expected torch.save((state_dict, test_acc_percent)), "
                             f"got a {type(payload).__name__}")
    accuracy = _number(payload[1])
    if accuracy is None:
        raise ZooFormatError(f"{path}: test accuracy {payload[1]!r} is not a number; expected a percentage")
    hyperparameters = _hyperparameters(payload[2], path) if len(payload) == 3 else {}
    return _Source(path, dict(payload[0]), float(accuracy), hyperparameters)


def _number(value: object) -> float | int | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hyperparameters(extra: object, path: Path) -> dict[str, float | int]:
    values = {k: _number(v) for k, v in extra.items()} if isinstance(extra, Mapping) else None
    if values is None or any(v is None or not isinstance(k, str) for k, v in values.items()):
        raise ZooFormatError(f"{path}: third tuple element should be a dict of numeric hyperparameters")
    return values  # type: ignore[return-value]


# -- architecture ---------------------------------------------------------------------------------
def _detect_variant(source: _Source) -> str:
    has_mask = any(k.endswith(".mask") for k in source.state)
    has_figlu = any(k.endswith(".F_mat") for k in source.state)
    if has_mask and has_figlu:
        raise ZooFormatError(f"{source.path}: holds both W-Asym masks and FiGLU matrices; expected one variant")
    return "w_asym" if has_mask else "sigma_asym" if has_figlu else "standard"


def _choose_variant(source: _Source, variant: str | None) -> str:
    detected = _detect_variant(source)
    if variant is None:
        return detected
    check_variant(variant, source="import_seed_pt")
    if variant == detected or (detected, variant) == ("w_asym", "standard"):
        return variant
    raise ZooFormatError(f"{source.path}: holds a {detected} ResNet8, which cannot be imported as {variant}")


def _spec_of(source: _Source, variant: str) -> ArchSpec:
    """The symzoo preset of the file's width, with its input channels and classes."""
    stem, head = source.state.get("conv1.weight"), source.state.get("linear.weight")
    if stem is None or stem.ndim != 4 or head is None or head.ndim != 2:
        raise ZooFormatError(f"{source.path}: lacks conv1.weight or linear.weight; expected {_NAMES}")
    preset = _PRESET_OF_WIDTH.get(stem.shape[0])
    if preset is None:
        raise ZooFormatError(f"{source.path}: conv1.weight has {stem.shape[0]} output channels; "
                             "expected 16 (resnet8) or 14 (resnet8-small)")
    return dataclasses.replace(get_arch(preset, variant), in_channels=stem.shape[1], num_classes=head.shape[0])


def _symzoo_module(module: str) -> str | None:
    if module in _TOP:
        return _TOP[module]
    match = _PAPER_BLOCK.match(module)
    if match and match[2] in _BLOCK:
        return f"stages.{int(match[1]) - 1}.0.{_BLOCK[match[2]]}"
    return None


def _paper_name(name: str) -> str:
    """symzoo tensor name -> the paper's, for error messages."""
    module, _, leaf = name.rpartition(".")
    match = _SYMZOO_BLOCK.match(module)
    paper = (f"layer{int(match[1]) + 1}.0.{_PAPER_INNER.get(match[2], match[2])}" if match
             else _PAPER_TOP.get(module, module))
    return f"{paper}.{leaf}"


# -- conversion -----------------------------------------------------------------------------------
class _Converter:
    """The paper's state_dicts of one zoo -> flat symzoo vectors; checks they share one mask set."""

    def __init__(self, spec: ArchSpec, variant: str, first: _Source) -> None:
        self.spec, self.variant = spec, variant
        self.first_path, self.source_variant = first.path, _detect_variant(first)
        model = spec.build()
        self.layout = ParamLayout.from_module(model)
        self.w_asym_layers = set(fixed_entry_masks(model)) if variant == "w_asym" else set()
        self.reference: _Converted | None = None
        self.reference_path: Path | None = None

    def find_reference(self, files: Mapping[int, Path]) -> int:
        """Pick the first model with finite weights (else the first) as the zoo's reference."""
        indices = sorted(files)
        for index in indices:
            converted = self.convert(_load(files[index]))
            if status_of(converted.weights) == "ok":
                break
        else:  # every model diverged
            index = indices[0]
            converted = self.convert(_load(files[index]))
        self.reference, self.reference_path = converted, files[index]
        return index

    def fixed_entries(self) -> FixedEntries | None:
        """The masks and fixed values to store with the zoo (None: the spec's own are right)."""
        if self.variant == "standard" or self.reference is None:
            return None
        mask = self.reference.trainable if self.reference.trainable is not None else self.layout.trainable_mask
        return mask, torch.where(mask, 0.0, self.reference.weights)

    def convert(self, source: _Source) -> _Converted:
        found = _detect_variant(source)
        if found != self.source_variant:
            raise ZooFormatError(f"{source.path}: holds a {found} ResNet8, {self.first_path.name} a "
                                 f"{self.source_variant} one; a folder holds one variant")
        params, masks = _rename(source)
        fallback = self.reference.kappas if self.reference is not None else {}
        kappas, layer_masks = {}, {}
        for name, (mask, normal) in masks.items():
            if name not in params:
                raise ZooFormatError(f"{source.path}: '{_paper_name(name)}' is missing beside its mask")
            params[name], layer_masks[name], kappas[name] = _effective(
                source, name, params[name], mask, normal, fallback.get(name, DEFAULT_KAPPA))
        self._check_tensors(source, params)
        weights = self.layout.flatten(params)
        trainable = self._trainable(source, layer_masks) if self.variant == "w_asym" else None
        converted = _Converted(weights, trainable, kappas)
        self._check_shared_masks(source, converted)
        return converted

    def _check_tensors(self, source: _Source, params: Mapping[str, Tensor]) -> None:
        expected = {s.name: s.shape for s in self.layout.slots}
        extra = sorted(set(params) - set(expected))
        if extra:
            raise ZooFormatError(f"{source.path}: unexpected state_dict key '{_paper_name(extra[0])}' for a "
                                 f"{self.variant} ResNet8; expected {_NAMES}")
        for name, shape in expected.items():
            if name not in params:
                raise ZooFormatError(f"{source.path}: state_dict lacks '{_paper_name(name)}' "
                                     f"of a {self.variant} ResNet8")
            if tuple(params[name].shape) != shape:
                raise ZooFormatError(f"{source.path}: '{_paper_name(name)}' has shape {tuple(params[name].shape)}; "
                                     f"expected {shape}")

    def _trainable(self, source: _Source, layer_masks: Mapping[str, Tensor]) -> Tensor:
        trainable = torch.ones(self.layout.size, dtype=torch.bool)
        for name, mask in layer_masks.items():
            if name not in self.w_asym_layers:
                raise ZooFormatError(f"{source.path}: '{_paper_name(name)}' has a W-Asym mask, but symzoo's "
                                     f"{self.spec.family} keeps that layer standard")
            slot = self.layout[name]
            trainable[slot.offset : slot.stop] = mask.reshape(-1)
        return trainable

    def _check_shared_masks(self, source: _Source, converted: _Converted) -> None:
        ref = self.reference
        if ref is None or converted.trainable is None or ref.trainable is None:
            return
        if not torch.equal(converted.trainable, ref.trainable):
            raise ZooFormatError(f"{source.path}: W-Asym masks differ from those of {self.reference_path}; "
                                 "a zoo shares one set of masks (train with saved masks)")
        fixed = ~ref.trainable
        if status_of(converted.weights) == "ok" and not torch.allclose(
                converted.weights[fixed], ref.weights[fixed], rtol=1e-5, atol=1e-6):
            raise ZooFormatError(f"{source.path}: W-Asym fixed values (kappa * normal_mask) differ from those of "
                                 f"{self.reference_path}; a zoo shares one set")


def _rename(source: _Source) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """symzoo name -> float32 tensor, and W-Asym weight name -> (mask, normal_mask)."""
    params: dict[str, Tensor] = {}
    buffers: dict[str, dict[str, Tensor]] = {}
    for key, tensor in source.state.items():
        module, _, leaf = key.rpartition(".")
        target = _symzoo_module(module)
        if target is None or leaf not in _LEAVES:
            raise ZooFormatError(f"{source.path}: unexpected state_dict key '{key}'; expected {_NAMES}")
        if leaf in ("mask", "normal_mask"):
            buffers.setdefault(f"{target}.weight", {})[leaf] = tensor.float()
        else:
            params[f"{target}.{leaf}"] = tensor.float()
    masks = {}
    for name, parts in buffers.items():
        if set(parts) != {"mask", "normal_mask"}:
            layer = _paper_name(name).rpartition(".")[0]
            raise ZooFormatError(f"{source.path}: '{layer}' has {' and '.join(sorted(parts))} only; "
                                 "a W-Asym layer needs both mask and normal_mask")
        masks[name] = (parts["mask"], parts["normal_mask"])
    return params, masks


def _effective(source: _Source, name: str, weight: Tensor, mask: Tensor, normal: Tensor,
               default_kappa: float) -> tuple[Tensor, Tensor, float]:
    """``weight*mask + (1-mask)*kappa*normal_mask``, the trainable mask, and the kappa used."""
    if mask.shape != weight.shape or normal.shape != weight.shape:
        raise ZooFormatError(f"{source.path}: mask or normal_mask of '{_paper_name(name)}' has another shape "
                             f"than its weight {tuple(weight.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ZooFormatError(f"{source.path}: mask of '{_paper_name(name)}' holds values other than 0 and 1")
    trainable = mask.bool()
    kappa = _inferred_kappa(weight, trainable, normal)
    kappa = default_kappa if kappa is None else kappa
    # torch.where equals the paper's formula for 0/1 masks and keeps NaN weights out of fixed slots.
    return torch.where(trainable, weight, kappa * normal), trainable, kappa


def _inferred_kappa(weight: Tensor, trainable: Tensor, normal: Tensor) -> float | None:
    """The one ratio stored weight / normal_mask at the fixed slots, if there is one."""
    slots = ~trainable & (normal.abs() > 1e-12)
    ratios = weight[slots].double() / normal[slots].double()
    if ratios.numel() == 0 or not bool(torch.isfinite(ratios).all()):
        return None
    kappa = float(ratios.median())
    if float((ratios - kappa).abs().max()) > 1e-6 + 1e-5 * abs(kappa):
        return None
    return float(f"{kappa:.6g}")


def _metadata(folder: Path, count: int, variant: str, ref_index: int, converter: _Converter) -> ZooMetadata:
    notes = {
        "standard": "",
        "w_asym": (" Masks and fixed values are the imported ones (kappa per layer in recipe.kappa, "
                   f"from model {ref_index})."),
        "sigma_asym": f" FiGLU matrices are read from each row; fixed.npz holds those of model {ref_index}.",
    }
    recipe: dict[str, object] = {"source": "cptq/asymmetric-networks metanet_data", "reference_model": ref_index}
    if variant == "w_asym" and converter.reference is not None:
        recipe["kappa"] = converter.reference.kappas
    return ZooMetadata(
        name=f"seed-pt-{folder.name}",
        description=(f"Imported from {count} N.pt files of {folder.name}/: a ResNet8 zoo of Lim et al. 2024 "
                     f"(GitHub cptq/asymmetric-networks), variant {variant}, CIFAR-10. Rows hold effective "
                     f"weights; test_acc comes from the files, the other metrics were not recorded.{notes[variant]}"),
        dataset={"name": "cifar10"},
        recipe=recipe,
    )
