"""The paper's metanetwork baselines (docs/PAPER.md §3): MLP, StatNN, DeepSets and DMC.

They are registered, with the paper's other metanets, in :mod:`metanets.registry`, whose names
this module re-exports for code that imports them from here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from metanets.registry import METANETS, VIEWS, MetanetContext, MetanetEntry, get_metanet, register_metanet

__all__ = ["MetanetContext", "MetanetEntry", "METANETS", "VIEWS", "register_metanet", "get_metanet", "MLPMetanet", "StatNN", "DeepSets", "DMC"]


class MLPMetanet(nn.Module):
    r"""``Linear(D, h) → ReLU → LayerNorm → … → Linear(h, 1)``: the paper's MLP with one hidden
    layer of 64 (4,994,945 parameters on ResNet8's 78,042 weights), and StatNN's body."""

    def __init__(self, input_dim: int, hidden: int = 64, layers: int = 1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(input_dim if i == 0 else hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).squeeze(-1)


class StatNN(MLPMetanet):
    """Two hidden layers of 256 over per-tensor statistics (119,297 parameters for 203 inputs)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim, hidden=256, layers=2)


class DeepSets(nn.Module):
    r"""The weights as a set of scalars: :math:`\rho(\frac1N \sum_i \phi(w_i))`, with
    ``φ = Linear(1, h) → LayerNorm → ReLU`` and ``ρ`` two (Linear → LayerNorm → ReLU) blocks and
    a linear readout (8,897 parameters at ``h = 64``). Invariant to any permutation of entries.

    With scalar elements (``in_channels = 1``) and ``closed_form`` (the default), the pooled
    :math:`\frac1N \sum_i \phi(w_i)` is computed exactly from the sorted scalars in
    :math:`O(N \log N + h \log N)` per set instead of :math:`O(N h)` (:func:`_scalar_phi_mean`):
    the same function and gradients (to float rounding; closer to float64 than φ on every
    element in float32), 12-18x faster per epoch on the 3,466-weight digits zoo
    (``benchmarks/metanet_speed.py``). ``closed_form=False`` evaluates φ on every element."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, rho_layers: int = 2, closed_form: bool = True) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(in_channels, hidden), nn.LayerNorm(hidden), nn.ReLU())
        rho: list[nn.Module] = []
        for _ in range(rho_layers):
            rho += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        self.rho = nn.Sequential(*rho, nn.Linear(hidden, 1))
        self.closed_form = closed_form and in_channels == 1

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of every layer."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, N)`` scalars or ``(B, C, N)`` channels of ``N`` set elements."""
        x = x[:, None, :] if x.ndim == 2 else x
        if self.closed_form and x.shape[1] == 1 and x.shape[2] > 0:
            pooled = _scalar_phi_mean(x[:, 0], self.phi[0], self.phi[1])
        else:
            pooled = self.phi(x.transpose(1, 2)).mean(1)
        return self.rho(pooled).squeeze(-1)


def _scalar_phi_mean(w: Tensor, linear: nn.Linear, norm: nn.LayerNorm) -> Tensor:
    r"""``ReLU(LayerNorm(Linear(w_i))).mean(i)`` for scalars ``w`` ``(B, N)``, exactly, in
    :math:`O(N \log N + h \log N)` per row instead of :math:`O(N h)`; returns ``(B, h)``.

    With :math:`z = a w + c` (``Linear(1, h)``), centring gives :math:`z - \bar z = a' w + c'`
    and the variance is a quadratic :math:`Q(w) = p w^2 + q w + r` (plus ε), so channel :math:`k`
    of φ is :math:`\mathrm{ReLU}(g_k(w))`, :math:`g_k(w) = u_k\, w s(w) + v_k\, s(w) + \beta_k`
    with :math:`s = Q^{-1/2}`, :math:`u = \gamma a'`, :math:`v = \gamma c'`. :math:`g_k`
    changes sign only where :math:`(u_k w + v_k)^2 = \beta_k^2 Q(w)`, a quadratic in :math:`w`:
    so :math:`\{g_k > 0\}` is a union of at most five pieces (three intervals, two points), and
    over sorted :math:`w` the sum of :math:`g_k` on a piece is
    :math:`u_k \Delta\!\sum w s + v_k \Delta\!\sum s + \beta_k\, \mathrm{count}`, from prefix
    sums. Boundaries are found without gradient (φ is continuous there, so they carry none); the
    prefix sums, in float64, carry the gradients to :math:`a, c, \gamma, \beta`. Elements within
    rounding of a boundary have :math:`g_k \approx 0`, so where they fall changes the result by
    rounding only; an element exactly at a root of :math:`g_k` gets no gradient, as with ReLU.
    """
    b, n = w.shape
    a, c = linear.weight[:, 0].double(), linear.bias.double() if linear.bias is not None else None
    a0 = a - a.mean()
    c0 = c - c.mean() if c is not None else torch.zeros_like(a)
    p, q, r = (a0 * a0).mean(), 2 * (a0 * c0).mean(), (c0 * c0).mean() + norm.eps
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(a)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(a)
    u, v = gamma * a0, gamma * c0

    ws = _sorted_rows(w).double()
    s = (p * ws * ws + q * ws + r).rsqrt()
    zero = ws.new_zeros(b, 1)
    prefix_t = torch.cat([zero, torch.cumsum(ws * s, 1)], 1)  # (B, N + 1)
    prefix_s = torch.cat([zero, torch.cumsum(s, 1)], 1)

    with torch.no_grad():
        cuts = _sign_changes(u, v, beta, p, q, r)  # (h, 2), sorted
        bound = torch.maximum(-ws[:, :1], ws[:, -1:]) + 1  # (B, 1): past the data, where cuts need not be exact
        cuts = torch.maximum(torch.minimum(cuts[None], bound[..., None]), -bound[..., None])  # (B, h, 2)
        # five pieces: below the first cut, equal to it, between, equal to the second, above; each
        # with the sign of g at one point of it (equal pieces: at the cut itself, so that a weight
        # exactly at a root of g counts as ReLU's derivative does there, as zero)
        t1, t2 = cuts[..., 0], cuts[..., 1]
        probes = torch.stack([t1 - 1, t1, (t1 + t2) / 2, t2, t2 + 1], -1)
        g = (u[:, None] * probes + v[:, None]) * (p * probes * probes + q * probes + r).rsqrt() + beta[:, None]
        positive = g > 0
        flat_cuts = cuts.reshape(b, -1)
        left = torch.searchsorted(ws, flat_cuts).reshape(b, -1, 2)
        right = torch.searchsorted(ws, flat_cuts, right=True).reshape(b, -1, 2)
        first_end = right[..., 0]  # a double cut (t1 = t2) has one equal piece, not two
        ends = torch.stack([torch.zeros_like(first_end), left[..., 0], first_end, left[..., 1].maximum(first_end),
                            right[..., 1].maximum(first_end), torch.full_like(first_end, n)], -1)
    flat = ends.reshape(b, -1)
    sum_t = prefix_t.gather(1, flat).reshape(ends.shape).diff(dim=-1)  # (B, h, 5): per piece
    sum_s = prefix_s.gather(1, flat).reshape(ends.shape).diff(dim=-1)
    count = ends.diff(dim=-1).to(ws.dtype)
    mask = positive.to(ws.dtype)
    total = u * (sum_t * mask).sum(-1) + v * (sum_s * mask).sum(-1) + beta * (count * mask).sum(-1)
    return (total / n).to(w.dtype)


def _sorted_rows(w: Tensor) -> Tensor:
    """Each row of ``w`` sorted: by NumPy (SIMD quicksort, ~5x faster than ``torch.sort`` on
    one core) for CPU data without gradient, the common case of weights read from a zoo."""
    if w.device.type == "cpu" and not w.requires_grad and w.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(w.numpy(), axis=1))
    return w.sort(dim=1).values


def _sign_changes(u: Tensor, v: Tensor, beta: Tensor, p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    r"""``(h, 2)`` sorted roots of :math:`(u w + v)^2 - \beta^2 (p w^2 + q w + r)` per channel, the
    only places :math:`g_k` can change sign (±inf for a root at infinity). A negative
    discriminant counts as zero: at :math:`\beta_k = 0` (LayerNorm's initial bias) the quadratic
    is :math:`(u w + v)^2`, whose double root is a sign change of :math:`g_k` that rounding may
    push below zero; a cut where no sign changes is harmless, as each interval's sign is probed.
    Uses the cancellation-free form of the quadratic formula."""
    qa = u * u - beta * beta * p
    qb = 2 * u * v - beta * beta * q
    qc = v * v - beta * beta * r
    disc = (qb * qb - 4 * qa * qc).clamp_min(0)
    half = -0.5 * (qb + torch.where(qb >= 0, 1.0, -1.0) * disc.sqrt())
    roots = torch.stack([half / qa, qc / half], -1)  # x/0 is ±inf: a root at infinity
    roots = torch.where(roots.isnan(), 0.0, roots)  # 0/0: a degenerate quadratic, no cut needed
    return roots.sort(-1).values


class DMC(nn.Module):
    """A 1-D CNN over the flat weight vector (Eilertsen et al. 2020): six conv blocks doubling the
    channels to ``hidden`` (each Conv1d(k=5) → ReLU → BatchNorm → MaxPool(2)), ``extra`` more at
    ``hidden`` channels (every second one pooled), then a DeepSets readout over positions
    (105,357 parameters at ``hidden = 64``, ``extra = 4``).

    ``fast`` (the default) computes the same function faster on CPU: hand-written backward
    passes for two ops whose PyTorch CPU backward is slow at these shapes (:class:`_Conv1d`,
    :class:`_PairMax`; same values, gradients equal to float rounding), and evaluation in chunks
    of ``eval_chunk`` rows (exact: in eval mode BatchNorm uses running statistics, so rows are
    independent). ~1.35x per epoch on one core (``benchmarks/metanet_speed.py``); what is left is
    mostly the convolutions' own arithmetic (~3.4 GFLOP per step of 128 at ~50 GFLOP/s)."""

    def __init__(self, hidden: int = 64, extra: int = 4, fast: bool = True, eval_chunk: int = 128) -> None:
        super().__init__()
        widths = [1] + [hidden // 2**k for k in range(5, -1, -1)]
        blocks = [self._block(c_in, c_out, pool=True) for c_in, c_out in zip(widths[:-1], widths[1:])]
        blocks += [self._block(hidden, hidden, pool=i % 2 == 1) for i in range(extra)]
        self.convs = nn.Sequential(*blocks)
        self.readout = _SetReadout(hidden)
        self.fast, self.eval_chunk = fast, eval_chunk

    @staticmethod
    def _block(c_in: int, c_out: int, pool: bool) -> nn.Module:
        layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, 5), nn.ReLU(), nn.BatchNorm1d(c_out)]
        return nn.Sequential(*layers, nn.MaxPool1d(2)) if pool else nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of every layer (and fresh BatchNorm statistics)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if self.fast and not self.training and x.shape[0] > self.eval_chunk:
            # in eval mode BatchNorm uses its running statistics, so rows are independent and
            # chunks (whose activations stay in cache) give the same result, ~2x faster
            return torch.cat([self(rows) for rows in x.split(self.eval_chunk)])
        h = x[:, None, :]
        if not (self.fast and torch.is_grad_enabled()):
            return self.readout(self.convs(h))
        for block in self.convs:
            conv, relu, norm = block[0], block[1], block[2]
            h = norm(relu(_Conv1d.apply(h, conv.weight, conv.bias)))
            if len(block) == 4:
                h = _PairMax.apply(h)
        return self.readout(h)


class _Conv1d(torch.autograd.Function):
    r"""``F.conv1d(x, w, b)`` (stride 1, no padding) whose input gradient is the forward
    convolution of the zero-padded output gradient with the flipped, transposed kernel,
    :math:`\partial x = \mathrm{conv}(\mathrm{pad}_{k-1}(\partial y), w^\top_{\leftrightarrow})`:
    the same numbers, 2-6x faster than oneDNN's backward-data kernel with 2-4 input channels
    (and as fast with more)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return nn.functional.conv1d(x, weight, bias)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        k = weight.shape[-1]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = nn.functional.conv1d(grad, weight.flip(-1).transpose(0, 1), padding=k - 1)
        if weight.shape[1] == 1 and ctx.needs_input_grad[1]:
            # one input channel (the first layer): oneDNN's weight gradient is ~3x slower than
            # this convolution of x with the output gradient as kernel, the batch as channels
            grad_w = nn.functional.conv1d(x.transpose(0, 1), grad.transpose(0, 1)).transpose(0, 1)
            return grad_x, grad_w, grad.sum((0, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        _, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1], [0], [1], False, [0], 1,
            [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]])
        return grad_x, grad_w, grad_b


class _PairMax(torch.autograd.Function):
    """``F.max_pool1d(x, 2)``: the larger of each pair (ties to the first, as PyTorch's kernel),
    with a backward from a boolean mask instead of ``max_pool2d_with_indices``, whose CPU
    forward alone (5.3 ms at ``(128, 2, 3462)``) costs ~4x this op's forward and backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        even, odd = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        first = even >= odd
        ctx.save_for_backward(first)
        ctx.length = x.shape[-1]
        return torch.maximum(even, odd)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        (first,) = ctx.saved_tensors
        half = first.shape[-1]
        shape = (*grad.shape[:-1], ctx.length)
        out = grad.new_zeros(shape) if ctx.length > 2 * half else grad.new_empty(shape)  # an odd last element: 0
        torch.mul(grad, first, out=out[..., 0 : 2 * half : 2])
        torch.sub(grad, out[..., 0 : 2 * half : 2], out=out[..., 1 : 2 * half : 2])
        return out


class _SetReadout(DeepSets):
    """DMC's readout: DeepSets over positions with ``hidden`` channels and one ρ block."""

    def __init__(self, hidden: int) -> None:
        super().__init__(in_channels=hidden, hidden=hidden, rho_layers=1)

