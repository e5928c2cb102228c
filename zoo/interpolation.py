"""Straight lines in weight space: the loss along θ(α) = (1−α)θ₁ + αθ₂, its barriers, and the
statistics of monotonic linear interpolation (MLI).

Two networks are *linearly mode-connected* when the loss barely rises between them; a path from
initialisation to the trained weights is *monotonic* when the loss never rises along it. The
paper's first finding is that W-Asym networks have both far more often than standard ones. Every
point of a path is a flat weight vector in :class:`~zoo.layout.ParamLayout` order, so many points
(and many models) are evaluated together with one ``vmap`` over ``functional_call``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from zoo.layout import ParamLayout

__all__ = [
    "InterpolationCurve",
    "MLIStats",
    "path_alphas",
    "interpolate_weights",
    "MIN_ROWS",
    "pad_rows",
    "evaluate_stacked",
    "evaluate_weights",
    "reestimate_batchnorm",
    "interpolate",
    "mli_statistics",
]


def path_alphas(points: int = 25) -> Tensor:
    """``points`` evenly spaced α in [0, 1]; an odd count puts α = ½ on the grid (the midpoint
    barrier needs it)."""
    if points < 3 or points % 2 == 0:
        raise ValueError(f"points must be odd and >= 3 (so that alpha = 1/2 is on the path), got {points}")
    return torch.linspace(0.0, 1.0, points, dtype=torch.float64)


def interpolate_weights(start: Tensor, end: Tensor, alphas: Tensor) -> Tensor:
    """``(len(alphas), P)`` points ``(1−α)·start + α·end`` (computed in float64, returned as float32,
    so that α = 0 and α = 1 reproduce the endpoints exactly)."""
    a = alphas.to(torch.float64)[:, None]
    return ((1 - a) * start.double()[None] + a * end.double()[None]).float()


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


# On CPU, vmap turns the convolutions of one or two networks into other oneDNN kernels than those
# of three or more, which round differently (cnn-mnist at 1, resnet8 at <= 2; measured). So stacked
# networks always run at least MIN_ROWS at once, padded with copies of the first (pad_rows): a
# network's numbers then do not depend on how many others share its pass.
MIN_ROWS = 3


def pad_rows(t: Tensor) -> Tensor:
    """``t`` with at least :data:`MIN_ROWS` rows: copies of its first row appended."""
    return t if len(t) >= MIN_ROWS else torch.cat([t, t[:1].expand(MIN_ROWS - len(t), *t.shape[1:])])


@torch.no_grad()
def evaluate_stacked(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    rows: int | None = None,
    batch_size: int = 2048,
    loss_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy on ``(x, y)`` of networks of ``model``'s architecture whose
    tensors are stacked in ``params`` (name -> ``(R, *shape)``); one ``vmap`` over
    ``functional_call`` runs them all on each batch of ``batch_size`` examples, in order.

    ``model`` is the template: its tensors absent from ``params`` (W-Asym masks and fixed values,
    FiGLU matrices, ...) are shared by every network, and it runs in ``eval`` mode (its mode is
    restored afterwards). Only the first ``rows`` networks (default: all) are scored; the others
    are padding (:func:`pad_rows`). The per-example losses are summed in ``loss_dtype``, first
    over each batch, then over the batches. Returns the losses ``(rows,)`` in ``loss_dtype`` and
    the accuracies ``(rows,)`` in float64, on the device of ``params``.
    """
    first = next(iter(params.values()))
    rows, device = len(first) if rows is None else rows, first.device
    forward = vmap(lambda p, inputs: functional_call(model, p, (inputs,)), in_dims=(0, None))
    loss_sum = torch.zeros(rows, dtype=loss_dtype, device=device)
    correct = torch.zeros(rows, dtype=torch.int64, device=device)
    training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            inputs, target = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            logits = forward(params, inputs)[:rows].float()  # (rows, n, classes)
            loss_sum += F.cross_entropy(logits.transpose(1, 2), target.expand(rows, -1),
                                        reduction="none").to(loss_dtype).sum(1)
            correct += (logits.argmax(-1) == target).sum(1)
    finally:
        model.train(training)
    return loss_sum / len(x), correct.double() / len(x)


@torch.no_grad()
def evaluate_weights(
    model: nn.Module,
    layout: ParamLayout,
    weights: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 2048,
    models_per_pass: int = 32,
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy on ``(x, y)`` of each row of ``weights`` ``(K, P)``.

    ``model`` is a template of the architecture: its non-persistent buffers (W-Asym masks and
    fixed values) apply to every row, and it is evaluated in ``eval`` mode (and left in it).
    ``models_per_pass`` rows run together (:func:`evaluate_stacked`). Returns two float64 tensors
    of shape ``(K,)``, on the CPU.
    """
    model = model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    losses, accuracies = [], []
    for first in range(0, len(weights), models_per_pass):
        chunk = weights[first : first + models_per_pass].to(device, torch.float32)
        loss, acc = evaluate_stacked(model, layout.unflatten(pad_rows(chunk)), x, y, rows=len(chunk),
                                     batch_size=batch_size, loss_dtype=torch.float64)
        losses.append(loss)
        accuracies.append(acc)
    return torch.cat(losses).cpu(), torch.cat(accuracies).cpu()


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> nn.Module:
    """Replace every BatchNorm's running statistics by those of the current weights on ``x``.

    Interpolated weights do not match interpolated running statistics (Jordan et al., REPAIR), so
    without this the loss in the middle of a path measures stale statistics, not the weights.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start : start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@dataclass(frozen=True)
class InterpolationCurve:
    """Loss and accuracy at each α of a path from θ₁ (α = 0) to θ₂ (α = 1)."""

    alphas: list[float]
    loss: list[float]
    acc: list[float]

    def _chord(self) -> Tensor:
        a = torch.tensor(self.alphas, dtype=torch.float64)
        return (1 - a) * self.loss[0] + a * self.loss[-1]

    @property
    def midpoint_barrier(self) -> float:
        """``L(½θ₁ + ½θ₂) − ½(L(θ₁) + L(θ₂))`` (the paper's Table 1)."""
        middle = min(range(len(self.alphas)), key=lambda i: abs(self.alphas[i] - 0.5))
        if abs(self.alphas[middle] - 0.5) > 1e-9:
            raise ValueError("the path has no point at alpha = 1/2; use an odd number of points")
        return self.loss[middle] - 0.5 * (self.loss[0] + self.loss[-1])

    @property
    def max_barrier(self) -> float:
        """The largest rise of the loss above the chord between the endpoints, over the path."""
        return float((torch.tensor(self.loss, dtype=torch.float64) - self._chord()).max())

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"midpoint_barrier": self.midpoint_barrier, "max_barrier": self.max_barrier}


def interpolate(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    points: int = 25,
    layout: ParamLayout | None = None,
    batchnorm_data: Tensor | None = None,
    batch_size: int = 2048,
) -> InterpolationCurve:
    """Loss and accuracy along the straight line from flat weights ``start`` to ``end``.

    All points are evaluated together (batched over α). With ``batchnorm_data`` the BatchNorm
    statistics are re-estimated on it at every point (one point at a time); a network with
    BatchNorm and no ``batchnorm_data`` is evaluated with the interpolated running statistics.
    """
    layout = layout or ParamLayout.from_module(model)
    alphas = path_alphas(points)
    path = interpolate_weights(start, end, alphas)
    if batchnorm_data is not None and _has_batchnorm(model):
        model = copy.deepcopy(model)  # its weights and statistics change at every point
        losses, accuracies = [], []
        for point in path:
            layout.load_into(model, point)
            reestimate_batchnorm(model, batchnorm_data, batch_size=batch_size)
            loss, acc = evaluate_weights(model, layout, layout.flatten(model)[None], x, y, batch_size=batch_size)
            losses.append(loss)
            accuracies.append(acc)
        loss, acc = torch.cat(losses), torch.cat(accuracies)
    else:
        loss, acc = evaluate_weights(model, layout, path, x, y, batch_size=batch_size)
    return InterpolationCurve(alphas.tolist(), loss.tolist(), acc.tolist())


@dataclass(frozen=True)
class MLIStats:
    """Monotonic linear interpolation statistics of one path (docs/PAPER.md §5).

    Attributes:
        delta: the largest increase between consecutive points (the path is monotonic iff ≤ 0).
        monotonic: ``delta <= 0``.
        local_convexity: share of interior points whose second difference is ≥ 0.
        global_convexity: share of interior points on or below the chord from L(0) to L(1).
    """

    delta: float
    monotonic: bool
    local_convexity: float
    global_convexity: float


def mli_statistics(losses: Sequence[float] | Tensor) -> MLIStats:
    """:class:`MLIStats` of losses measured at evenly spaced α from 0 to 1."""
    loss = torch.as_tensor(losses, dtype=torch.float64)
    if loss.ndim != 1 or len(loss) < 3:
        raise ValueError(f"need a 1-D sequence of at least 3 losses, got shape {tuple(loss.shape)}")
    steps = loss.diff()
    delta = float(steps.max())
    second = steps.diff()
    alphas = torch.linspace(0.0, 1.0, len(loss), dtype=torch.float64)
    chord = (1 - alphas) * loss[0] + alphas * loss[-1]
    below = (loss[1:-1] <= chord[1:-1] + 1e-12).double().mean()
    return MLIStats(delta=delta, monotonic=delta <= 0, local_convexity=float((second >= 0).double().mean()),
                    global_convexity=float(below))
