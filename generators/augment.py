"""Batched image augmentation on the device, random numbers from each model's own stream."""

from __future__ import annotations

import torch
from torch import Tensor

from generators.recipe import Augment
from generators.rng import uniform

__all__ = ["augment_batch"]


def augment_batch(x: Tensor, augment: Augment, seeds: Tensor, step: int) -> Tensor:
    """Augment ``x`` of shape ``(M, B, C, H, W)``; model ``m`` draws from ``seeds[m]`` and ``step``."""
    if not augment.active:
        return x
    m, b, _, h, w = x.shape
    sample = torch.arange(b, device=x.device)[None, :]
    seeds = seeds[:, None]

    def draw(k: int) -> Tensor:  # (M, B) uniforms, one independent stream per k
        return uniform(seeds, step, sample, k)

    if augment.flip:
        x = torch.where((draw(0) < 0.5)[..., None, None, None], x.flip(-1), x)
    if augment.translate:
        t = augment.translate
        padded = torch.nn.functional.pad(x, (t, t, t, t))
        dy = (draw(1) * (2 * t + 1)).long().clamp(max=2 * t)
        dx = (draw(2) * (2 * t + 1)).long().clamp(max=2 * t)
        rows = (torch.arange(h, device=x.device) + dy[..., None])[..., :, None]  # (M, B, H, 1)
        cols = (torch.arange(w, device=x.device) + dx[..., None])[..., None, :]  # (M, B, 1, W)
        mi = torch.arange(m, device=x.device)[:, None, None, None]
        bi = torch.arange(b, device=x.device)[None, :, None, None]
        x = padded.permute(0, 1, 3, 4, 2)[mi, bi, rows, cols].permute(0, 1, 4, 2, 3)
    if augment.cutout:
        s = augment.cutout
        cy = (draw(3) * (h - s + 1)).long().clamp(max=h - s)[..., None, None]
        cx = (draw(4) * (w - s + 1)).long().clamp(max=w - s)[..., None, None]
        r = torch.arange(h, device=x.device)[:, None]
        c = torch.arange(w, device=x.device)[None, :]
        hole = (r >= cy) & (r < cy + s) & (c >= cx) & (c < cx + s)  # (M, B, H, W)
        x = x.masked_fill(hole[:, :, None], 0.0)
    return x
