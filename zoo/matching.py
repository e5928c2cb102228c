"""Git Re-Basin weight matching (Ainsworth, Hayase and Srinivasa, ICLR 2023).

Two standard networks trained from different seeds usually sit in different basins only because
their hidden units are ordered differently. Weight matching permutes one network's units to
maximise ``Σ ⟨W_target, π(W_source)⟩`` over all tensors, one permutation at a time (a linear
assignment problem given the others), until no permutation improves. The permutations come from
the networks' own :class:`~zoo.symmetry.PermutationSpec`, so MLPs, CNNs and ResNets (residual
streams included) are all covered. W-Asym and σ-Asym networks have no such symmetry: the paper
applies Re-Basin to standard networks only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from zoo.symmetry import PermutationSpec, Perms, identity_permutations, permutation_spec, permute_model

__all__ = ["weight_matching", "align_model"]


def _permute_other_axes(tensor: Tensor, axes: tuple[str | None, ...], perms: Perms, skip: int) -> Tensor:
    """``tensor`` with the current permutations applied along every axis but ``skip``."""
    for axis, name in enumerate(axes):
        if name is not None and axis != skip:
            tensor = tensor.index_select(axis, perms[name])
    return tensor


def weight_matching(
    spec: PermutationSpec,
    target: Mapping[str, Tensor],
    source: Mapping[str, Tensor],
    *,
    max_iter: int = 100,
    seed: int = 0,
) -> Perms:
    """Permutations that align ``source`` to ``target`` (two ``state_dict`` s of one architecture).

    Apply them with ``permute_state_dict(source, spec, perms)``: unit ``i`` of the result is unit
    ``perms[p][i]`` of ``source``. Each sweep visits the permutations in a seeded random order; the
    loop stops at the first sweep that improves nothing (or after ``max_iter`` sweeps).
    """
    perms = identity_permutations(spec)
    perm_axes = spec.perm_to_axes()
    target = {k: v.detach().cpu().double() for k, v in target.items() if k in spec.axes}
    source = {k: v.detach().cpu().double() for k, v in source.items() if k in spec.axes}
    generator = torch.Generator().manual_seed(seed)
    names = list(spec.sizes)
    for _ in range(max_iter):
        improved = False
        for index in torch.randperm(len(names), generator=generator).tolist():
            name, n = names[index], spec.sizes[names[index]]
            similarity = torch.zeros(n, n, dtype=torch.float64)
            for key, axis in perm_axes[name]:
                w_target = target[key].movedim(axis, 0).reshape(n, -1)
                w_source = _permute_other_axes(source[key], spec.axes[key], perms, axis).movedim(axis, 0).reshape(n, -1)
                similarity += w_target @ w_source.T
            _, columns = linear_sum_assignment(similarity.numpy(), maximize=True)
            candidate = torch.as_tensor(columns, dtype=torch.long)
            rows = torch.arange(n)
            gain = similarity[rows, candidate].sum() - similarity[rows, perms[name]].sum()
            if gain > 1e-12 * similarity.abs().sum().clamp_min(1.0):
                perms[name] = candidate
                improved = True
        if not improved:
            break
    return perms


def align_model(target: nn.Module, source: nn.Module, *, max_iter: int = 100, seed: int = 0) -> nn.Module:
    """A copy of ``source`` with its hidden units permuted to match ``target``; same function."""
    spec = permutation_spec(source)
    perms = weight_matching(spec, target.state_dict(), source.state_dict(), max_iter=max_iter, seed=seed)
    return permute_model(source, perms)
