"""Explicit, process-independent seeds.

Every mask, fixed value and FiGLU matrix derives from an integer seed and a key path (usually the
layer's qualified name). Python's ``hash()`` is salted per process, so it is never used here.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "seeded_generator"]

_SEED_MASK = (1 << 63) - 1


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed determined only by ``seed`` and ``keys`` (stable across processes and machines)."""
    text = "/".join([str(int(seed)), *(str(k) for k in keys)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


def seeded_generator(seed: int, *keys: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *keys)``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
