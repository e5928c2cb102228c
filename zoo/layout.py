"""Parameter layout: a network's ``state_dict`` as one flat float32 vector, and back.

The flat vector concatenates the floating-point ``state_dict`` tensors in their order (W-Asym
weights as *effective* weights, FiGLU matrices included). The layout table says where each tensor
lives and how many of its entries are fixed; the trainable mask marks the entries a metanet should
read. Integer buffers (BatchNorm's ``num_batches_tracked``) are not part of the vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.errors import SymzooError

__all__ = ["TensorSlot", "ParamLayout", "fixed_entry_masks"]


@dataclass(frozen=True)
class TensorSlot:
    """One tensor's place in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int
    fixed: int

    @property
    def trainable(self) -> int:
        return self.numel - self.fixed

    @property
    def stop(self) -> int:
        return self.offset + self.numel

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "offset": self.offset,
                "numel": self.numel, "fixed": self.fixed}


def fixed_entry_masks(model: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` key -> bool mask of its fixed entries, from modules' ``fixed_entries()``."""
    masks = {}
    for prefix, module in model.named_modules():
        entries = getattr(module, "fixed_entries", None)
        if entries is None:
            continue
        for name, mask in entries().items():
            masks[f"{prefix}.{name}" if prefix else name] = mask.detach().cpu()
    return masks


@dataclass(frozen=True, eq=False)
class ParamLayout:
    """Slots of every floating-point ``state_dict`` tensor plus the flat trainable mask."""

    slots: tuple[TensorSlot, ...]
    trainable_mask: Tensor  # bool, (size,)

    @classmethod
    def from_module(cls, model: nn.Module) -> "ParamLayout":
        fixed = fixed_entry_masks(model)
        slots, masks, offset = [], [], 0
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            fixed_mask = fixed.get(name, torch.zeros(tensor.shape, dtype=torch.bool))
            slots.append(TensorSlot(name, tuple(tensor.shape), offset, tensor.numel(), int(fixed_mask.sum())))
            masks.append(~fixed_mask.reshape(-1))
            offset += tensor.numel()
        trainable = torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)
        return cls(tuple(slots), trainable)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], trainable_mask: Tensor) -> "ParamLayout":
        """Rebuild a layout from :meth:`to_records` output and its flat trainable mask."""
        slots = tuple(
            TensorSlot(r["name"], tuple(r["shape"]), int(r["offset"]), int(r["numel"]), int(r["fixed"]))
            for r in records
        )
        layout = cls(slots, trainable_mask.to(torch.bool).reshape(-1))
        layout._check_length(layout.trainable_mask)
        return layout

    def same_tensors(self, other: "ParamLayout") -> bool:
        """True when both layouts hold the same tensors (names, shapes, offsets)."""
        key = lambda layout: [(s.name, s.shape, s.offset) for s in layout.slots]  # noqa: E731
        return key(self) == key(other)

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.slots[-1].stop if self.slots else 0

    @property
    def num_fixed(self) -> int:
        return sum(s.fixed for s in self.slots)

    @property
    def num_trainable(self) -> int:
        return self.size - self.num_fixed

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, name: str) -> TensorSlot:
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise KeyError(name)

    # -- conversions ----------------------------------------------------------------------------
    def flatten(self, source: nn.Module | Mapping[str, Tensor]) -> Tensor:
        """The flat float32 vector of a module or a state_dict."""
        state = source.state_dict() if isinstance(source, nn.Module) else source
        missing = [s.name for s in self.slots if s.name not in state]
        if missing:
            raise SymzooError(f"state_dict lacks {len(missing)} tensors of the layout, e.g. '{missing[0]}'")
        parts = []
        for slot in self.slots:
            tensor = state[slot.name]
            if tuple(tensor.shape) != slot.shape:
                raise SymzooError(f"tensor '{slot.name}' has shape {tuple(tensor.shape)}; the layout expects {slot.shape}")
            parts.append(tensor.detach().reshape(-1).to(torch.float32))
        return torch.cat(parts)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """State_dict of views into ``vector``, in layout order: one network's ``(size,)`` gives
        tensors of their own shapes; a stack ``(K, size)`` gives ``(K, *shape)`` (for ``vmap``)."""
        if vector.ndim not in (1, 2) or vector.shape[-1] != self.size:
            raise SymzooError(f"flat weights have shape {tuple(vector.shape)}; the layout expects ({self.size},) "
                              f"or a stack (K, {self.size})")
        batch = tuple(vector.shape[:-1])
        return {s.name: vector[..., s.offset : s.stop].view(*batch, *s.shape) for s in self.slots}

    def load_into(self, model: nn.Module, vector: Tensor) -> nn.Module:
        """Copy a flat vector into ``model`` (which must have this layout); returns the model."""
        result = model.load_state_dict(self.unflatten(vector), strict=False)
        non_float = {k for k, t in model.state_dict().items() if not t.is_floating_point()}
        missing = [k for k in result.missing_keys if k not in non_float]
        if missing or result.unexpected_keys:
            raise SymzooError(
                f"model does not match the layout: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
            )
        return model

    def impose_fixed_entries(self, model: nn.Module, trainable_mask: Tensor, fixed_values: Tensor) -> nn.Module:
        """Give ``model``'s W-Asym layers the masks and fixed values stored with a zoo.

        Stored masks are authoritative: they may come from another tool (an imported zoo) or an
        older mask construction, so rebuilt networks never depend on regenerating them.
        """
        self._check_length(trainable_mask)
        self._check_length(fixed_values)
        for prefix, module in model.named_modules():
            if not hasattr(module, "set_fixed_entries"):
                continue
            slot = self[f"{prefix}.weight" if prefix else "weight"]
            module.set_fixed_entries(
                trainable_mask[slot.offset : slot.stop].view(slot.shape),
                fixed_values[slot.offset : slot.stop].view(slot.shape),
            )
        return model

    def _check_length(self, vector: Tensor) -> None:
        if vector.ndim != 1 or vector.numel() != self.size:
            raise SymzooError(f"flat weights have shape {tuple(vector.shape)}; the layout expects ({self.size},)")

    # -- serialisation --------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.slots]

    def table(self) -> str:
        """A human-readable table of the layout."""
        width = max((len(s.name) for s in self.slots), default=4)
        rows = [f"{'name':<{width}}  {'shape':<18} {'offset':>9} {'numel':>9} {'fixed':>7}"]
        rows += [
            f"{s.name:<{width}}  {str(list(s.shape)):<18} {s.offset:>9,} {s.numel:>9,} {s.fixed:>7,}"
            for s in self.slots
        ]
        return "\n".join(rows)

