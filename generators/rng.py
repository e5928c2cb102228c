"""Counter-based random numbers: a pure function of (model seed, counters), computed on the device.

A model's data order and augmentation must not depend on which other models share its batch,
and drawing from M ``torch.Generator``s per step would cost M kernel launches. Hashing
(seed, step, element) instead gives each model its own stream, vectorised over all models.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hash32", "uniform", "permutations"]

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2**27, so products of 32-bit values stay below 2**59 in int64


def hash32(x: Tensor) -> Tensor:
    """An avalanche hash of 32-bit values held in int64 (Mueller's integer hash)."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * _MULT) & _MASK32
    x = (((x >> 16) ^ x) * _MULT) & _MASK32
    return (x >> 16) ^ x


def _keys(seeds: Tensor, *counters: Tensor | int) -> Tensor:
    key = hash32(seeds.to(torch.int64) ^ 0x9E3779B9) ^ hash32(seeds.to(torch.int64) >> 32)
    for counter in counters:
        counter = torch.as_tensor(counter, dtype=torch.int64, device=seeds.device)
        key = hash32(key ^ hash32(counter + 0x632BE5AB))
    return key


def uniform(seeds: Tensor, *counters: Tensor | int) -> Tensor:
    """Uniform [0, 1) floats, one per broadcast element of ``seeds`` and ``counters``."""
    return _keys(seeds, *counters).to(torch.float64).div(2.0**32).to(torch.float32)


def permutations(seeds: Tensor, epoch: int, n: int) -> Tensor:
    """One random permutation of ``range(n)`` per seed: ``(len(seeds), n)`` int64."""
    index = torch.arange(n, device=seeds.device)
    keys = _keys(seeds[:, None], epoch, index[None, :])
    return torch.sort(keys, dim=1, stable=True).indices
