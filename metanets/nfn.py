r"""Neural Functional Network (NFN) of Zhou et al. 2023, "Permutation Equivariant Neural Functionals".

The NP variant: every layer is equivariant to permutations of the *hidden* neurons of the chain
networks it reads (MLP and CNN zoos); the input neurons (pixels, input channels) and the output
neurons (classes) keep their order. The model reads the ``flat`` view (all effective weights in
layout order), rebuilds the per-layer weight space

* weights :math:`W_i \in \mathbb{R}^{B \times n_i \times n_{i-1} \times c}`, ``c`` the kernel entries
  of a conv layer (1 for a Linear; the head after global average pooling is a Linear), and
* biases :math:`b_i \in \mathbb{R}^{B \times n_i \times c}`, with the layer's norm parameters
  (LayerNorm / GroupNorm(1, C) weight and bias, one per unit) appended as extra bias channels,

applies a stack of :class:`NPLinear` layers with ReLU in between, pools invariantly with
:class:`NPPool` and maps the pooled features to one scalar per network with an MLP.

Here layers are numbered ``i = 0 … L-1``; layer ``i`` maps the ``n_i`` units of level ``i`` to the
``n_{i+1}`` units of level ``i + 1``; levels ``1 … L-1`` are hidden, level 0 is the input and
level ``L`` the output. Tensors of the layout that are no layer weight, bias or norm parameter
(σ-Asym's fixed FiGLU matrices) are not read: no permutation acts on them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec

from metanets.models import register_metanet

__all__ = ["ChainLayer", "chain_layers", "WeightSpace", "unflatten_chain", "NPLinear", "NPPool", "NFN"]

SUPPORTED_FAMILIES = ("mlp", "cnn")

WeightSpace = tuple[list[Tensor], list[Tensor]]
"""Per-layer weights ``(B, n_out, n_in, C)`` and biases ``(B, n_out, C)``, channels last."""


# -- weight space of a chain network ------------------------------------------------------------


@dataclass(frozen=True)
class _Slice:
    offset: int
    stop: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ChainLayer:
    """Where one layer's tensors lie in the flat vector.

    Attributes:
        weight: the weight slot, shape ``(n_out, n_in, *kernel)``.
        bias: the bias slot, or None for a layer without bias.
        extras: 1-D per-unit tensors (norm affine parameters) read as extra bias channels.
    """

    weight: _Slice
    bias: _Slice | None
    extras: tuple[_Slice, ...]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def weight_channels(self) -> int:
        return math.prod(self.weight.shape[2:])

    @property
    def bias_channels(self) -> int:
        return 1 + len(self.extras)


def chain_layers(layout: ParamLayout, arch: ArchSpec) -> list[ChainLayer]:
    """The layers ``blocks.0.layer … blocks.{L-2}.layer, head`` of an MLP or CNN layout."""
    if arch.family not in SUPPORTED_FAMILIES:
        raise SpecError(
            f"nfn supports only the chain families {', '.join(SUPPORTED_FAMILIES)}; "
            f"got family '{arch.family}'"
        )
    slices = {s.name: _Slice(s.offset, s.stop, s.shape) for s in layout.slots}
    blocks = sorted({int(m.group(1)) for name in slices if (m := re.match(r"blocks\.(\d+)\.layer\.weight$", name))})
    prefixes = [f"blocks.{i}" for i in blocks] + ["head"]
    layers = []
    for prefix in prefixes:
        layer = prefix if prefix == "head" else f"{prefix}.layer"
        if f"{layer}.weight" not in slices:
            raise SpecError(f"nfn: the layout has no tensor '{layer}.weight'; is it an {'/'.join(SUPPORTED_FAMILIES)} zoo?")
        weight = slices[f"{layer}.weight"]
        extras = tuple(
            s for name, s in slices.items()
            if name.startswith(f"{prefix}.norm.") and s.shape == (weight.shape[0],)
        ) if prefix != "head" else ()
        layers.append(ChainLayer(weight, slices.get(f"{layer}.bias"), extras))
    for previous, current in zip(layers[:-1], layers[1:]):
        if current.n_in != previous.n_out:
            raise SpecError(f"nfn: a layer reads {current.n_in} units but the layer before has {previous.n_out}")
    return layers


def unflatten_chain(flat: Tensor, layers: list[ChainLayer], rescale: bool = False) -> WeightSpace:
    """Flat weights ``(B, P)`` → per-layer ``W_i (B, n_out, n_in, k)`` and ``b_i (B, n_out, 1 + extras)``.

    With ``rescale``, each layer's weight and bias are multiplied by ``sqrt(fan_in)`` (fan-in
    ``n_in · k``), which brings PyTorch-initialised layers of any width to unit scale; a constant
    per layer, it commutes with every permutation. Norm parameters are left as they are.
    """
    batch = flat.shape[0]
    weights, biases = [], []
    for layer in layers:
        scale = math.sqrt(layer.n_in * layer.weight_channels) if rescale else 1.0
        w = flat[:, layer.weight.offset : layer.weight.stop].reshape(batch, layer.n_out, layer.n_in, -1) * scale
        if layer.bias is None:
            bias = flat.new_zeros(batch, layer.n_out)
        else:
            bias = flat[:, layer.bias.offset : layer.bias.stop] * scale
        extras = [flat[:, s.offset : s.stop] for s in layer.extras]
        weights.append(w)
        biases.append(torch.stack([bias, *extras], dim=-1))
    return weights, biases


# -- layers -------------------------------------------------------------------------------------


def _init_linear(linear: nn.Linear, fan_in: int, terms: int) -> None:
    """Uniform init with bound ``1 / sqrt(fan_in * terms)``: ``terms`` such maps are summed."""
    bound = 1.0 / math.sqrt(max(fan_in, 1) * terms)
    nn.init.uniform_(linear.weight, -bound, bound)
    if linear.bias is not None:
        nn.init.uniform_(linear.bias, -bound, bound)


class _LayerMaps(nn.Module):
    """The channel maps of :class:`NPLinear` for one layer (see its docstring)."""

    def __init__(self, c_w: int, row: int, col: int, glob: int, out: int) -> None:
        super().__init__()
        self.w_self = nn.Linear(c_w, out, bias=False)
        self.w_row = nn.Linear(row, out, bias=False)
        self.w_col = nn.Linear(col, out, bias=False)
        self.w_glob = nn.Linear(glob, out)
        self.b_row = nn.Linear(row, out, bias=False)
        self.b_glob = nn.Linear(glob, out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.w_self, self.w_row, self.w_col, self.w_glob):
            _init_linear(linear, linear.in_features, 4)
        for linear in (self.b_row, self.b_glob):
            _init_linear(linear, linear.in_features, 2)


class NPLinear(nn.Module):
    r"""A linear layer on the weight space, equivariant to hidden-neuron permutations (NP).

    With :math:`\bar W_i[j] = \mathrm{mean}_k W_i[j, k]` (row means, indexed by level ``i+1``),
    :math:`\underline W_i[k] = \mathrm{mean}_j W_i[j, k]` (column means, indexed by level ``i``),
    full means :math:`\langle W_i \rangle, \langle b_i \rangle` and the invariant global vector
    :math:`g = \Vert_s (\langle W_s \rangle, \langle b_s \rangle)`, layer ``i`` maps

    .. math::

        W'_i[j, k] &= A_i W_i[j, k] + R_i\,\rho_i[j] + K_i\,\kappa_i[k] + G_i\,g + e_i, \\
        b'_i[j]    &= S_i\,\rho_i[j] + H_i\,g + f_i,

    where the row features :math:`\rho_i[j] = (\bar W_i[j], b_i[j], \underline W_{i+1}[j])` are all
    indexed by unit ``j`` of level ``i+1`` (the next layer's term only when ``i < L-1``), the column
    features :math:`\kappa_i[k] = (\underline W_i[k], b_{i-1}[k], \bar W_{i-1}[k])` by unit ``k`` of
    level ``i`` (the previous layer's terms only when ``i > 0``), and :math:`A, R, K, G, S, H`
    (matrices over channels) and :math:`e, f` are learned per layer. Every term is indexed by the
    units it is permuted with, and means are invariant, so permuting any hidden level permutes the
    outputs in the same way. This is the NP layer of Zhou et al. (2023) restricted to its
    permutation-tied terms: the extra freedom on the unpermuted input/output axes is not used.

    Args:
        weight_channels, bias_channels: input channels of each layer's weight and bias.
        out_channels: output channels of every weight and bias.
    """

    def __init__(self, weight_channels: list[int], bias_channels: list[int], out_channels: int) -> None:
        super().__init__()
        if len(weight_channels) != len(bias_channels) or not weight_channels:
            raise ValueError("weight_channels and bias_channels need one entry per layer")
        cw, cb, depth = weight_channels, bias_channels, len(weight_channels)
        glob = sum(cw) + sum(cb)
        self.maps = nn.ModuleList()
        for i in range(depth):
            row = cw[i] + cb[i] + (cw[i + 1] if i + 1 < depth else 0)
            col = cw[i] + (cb[i - 1] + cw[i - 1] if i > 0 else 0)
            self.maps.append(_LayerMaps(cw[i], row, col, glob, out_channels))
        self.out_channels = out_channels

    def reset_parameters(self) -> None:
        for maps in self.maps:
            maps.reset_parameters()

    def forward(self, weights: list[Tensor], biases: list[Tensor]) -> WeightSpace:
        depth = len(self.maps)
        row_means = [w.mean(dim=2) for w in weights]  # (B, n_out, C)
        col_means = [w.mean(dim=1) for w in weights]  # (B, n_in, C)
        g = torch.cat([w.mean(dim=(1, 2)) for w in weights] + [b.mean(dim=1) for b in biases], dim=-1)
        new_w, new_b = [], []
        for i, (maps, w, b) in enumerate(zip(self.maps, weights, biases)):
            row = [row_means[i], b] + ([col_means[i + 1]] if i + 1 < depth else [])
            col = [col_means[i]] + ([biases[i - 1], row_means[i - 1]] if i > 0 else [])
            rho, kappa = torch.cat(row, dim=-1), torch.cat(col, dim=-1)
            # the small row/column/global terms are combined first, then added in place to the big one
            row_term = maps.w_row(rho) + maps.w_glob(g)[:, None]
            out = maps.w_self(w)
            out.add_(row_term[:, :, None]).add_(maps.w_col(kappa)[:, None])
            new_w.append(out)
            new_b.append(maps.b_row(rho) + maps.b_glob(g)[:, None])
        return new_w, new_b


class NPPool(nn.Module):
    r"""Invariant readout: each tensor averaged over its hidden-unit axes, input/output axes kept.

    .. math::

        \mathrm{pool}(W, b) = \Vert_i\ \mathrm{mean}_{\text{hidden axes}} W_i
            \ \Vert_i\ \mathrm{mean}_{\text{hidden axes}} b_i,

    flattened and concatenated: ``W_0`` keeps its input axis, ``W_{L-1}`` and ``b_{L-1}`` keep the
    output axis, the others shrink to their channels. No parameters.
    """

    def __init__(self, n_in: int, n_out: int, depth: int, channels: int) -> None:
        super().__init__()
        self.depth = depth
        if depth == 1:  # no hidden level: nothing to pool
            units = n_in * n_out + n_out
        else:  # W_0 keeps n_in, W_{L-1} and b_{L-1} keep n_out, the rest are pooled to C
            units = n_in + 2 * n_out + (depth - 2) + (depth - 1)
        self.out_features = channels * units

    def reset_parameters(self) -> None:
        """Nothing to reset (no parameters)."""

    def forward(self, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
        last = self.depth - 1
        parts = []
        for i, w in enumerate(weights):
            hidden = [axis for axis, free in ((1, i < last), (2, i > 0)) if free]
            parts.append(w.mean(dim=hidden) if hidden else w)
        for i, b in enumerate(biases):
            parts.append(b if i == last else b.mean(dim=1))
        return torch.cat([p.flatten(1) for p in parts], dim=1)


class NFN(nn.Module):
    r"""NFN-NP: ``flat (B, P)`` → weight space → ``[NPLinear → ReLU] × layers`` → :class:`NPPool` → MLP → ``(B,)``.

    Invariant to hidden-unit permutations of the MLP/CNN it reads (exactly, up to float rounding).

    Args:
        layout, arch: the zoo's parameter layout and architecture (``mlp`` or ``cnn`` family).
        hidden: channels of the NP layers.
        layers: number of NP layers.
        head_hidden: width of the two hidden layers of the readout MLP.
        rescale: multiply each layer's weights and bias by ``sqrt(fan_in)`` (see :func:`unflatten_chain`).
    """

    def __init__(
        self,
        layout: ParamLayout,
        arch: ArchSpec,
        hidden: int = 16,
        layers: int = 3,
        head_hidden: int = 64,
        rescale: bool = True,
    ) -> None:
        super().__init__()
        self.rescale = rescale
        if layers < 1:
            raise ValueError("nfn needs at least one NP layer")
        self.chain = chain_layers(layout, arch)
        self.size = layout.size
        depth = len(self.chain)
        cw = [layer.weight_channels for layer in self.chain]
        cb = [layer.bias_channels for layer in self.chain]
        self.np_layers = nn.ModuleList(
            NPLinear(cw if i == 0 else [hidden] * depth, cb if i == 0 else [hidden] * depth, hidden)
            for i in range(layers)
        )
        self.pool = NPPool(self.chain[0].n_in, self.chain[-1].n_out, depth, hidden)
        self.head = nn.Sequential(
            nn.Linear(self.pool.out_features, head_hidden), nn.ReLU(),
            nn.Linear(head_hidden, head_hidden), nn.ReLU(),
            nn.Linear(head_hidden, 1),
        )

    def reset_parameters(self) -> None:
        for layer in self.np_layers:
            layer.reset_parameters()
        for module in self.head:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, flat: Tensor) -> Tensor:
        if flat.ndim != 2 or flat.shape[1] != self.size:
            raise ValueError(f"nfn expects flat weights of shape (B, {self.size}), got {tuple(flat.shape)}")
        weights, biases = unflatten_chain(flat, self.chain, rescale=self.rescale)
        for i, layer in enumerate(self.np_layers):
            if i > 0:
                weights, biases = [torch.relu(w) for w in weights], [torch.relu(b) for b in biases]
            weights, biases = layer(weights, biases)
        weights, biases = [torch.relu(w) for w in weights], [torch.relu(b) for b in biases]
        return self.head(self.pool(weights, biases)).squeeze(-1)


register_metanet("nfn", "flat", invariant=True)(lambda c: NFN(c.layout, c.arch))
