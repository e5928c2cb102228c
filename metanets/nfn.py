r"""Neural Functional Networks (NFN) of Zhou et al. 2023, "Permutation Equivariant Neural Functionals".

Both published forms, for every family the zoo has (MLP, CNN, ResNet), on the weight-space
description of :mod:`zoo.weightspace`:

* **NP** (:class:`NPLinear`, :class:`NPPool`): every unit set is exchangeable, the network's
  inputs and outputs included; the layers are equivariant to permutations of all of them.
* **HNP** (:class:`HNPLinear`, :class:`HNPPool`): only hidden units are exchangeable; input units
  (pixels, image channels) and output units (classes) keep their identities, so the maps may
  depend on their index. The authors' best invariant model for predicting accuracy.

Both reduce to one construction. A :class:`FeatureSpace` lists the weight-space tensors with the
unit sets the layers treat as exchangeable (*permuted axes*); every other axis (the unpermuted
input/output axes in HNP, and the kernel entries of a conv weight) is folded into the channels.
Each tensor then has 0, 1 or 2 permuted axes, and :class:`EquivariantLinear` is the general
linear map that commutes with permutations of those axes (see its formula). A residual stream
is one set, so every tensor on it (stem, each ``conv2``, shortcut, their norms) is tied to the
same permutation, as in Universal Neural Functionals. Tensors no permutation acts on (σ-Asym's
FiGLU matrices) are not read.

The model reads the ``flat`` view (all effective weights in layout order) and is invariant to
hidden-unit permutations of the networks it reads (exactly, up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn

from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.weightspace import INPUT, OUTPUT, WeightSpace, weight_space

__all__ = [
    "FeatureTensor",
    "FeatureSpace",
    "EquivariantLinear",
    "NPLinear",
    "HNPLinear",
    "ChannelNorm",
    "InvariantPool",
    "NPPool",
    "HNPPool",
    "NFN",
    "MODES",
]

MODES = ("np", "hnp")

Features = list[Tensor]
"""One tensor per :class:`FeatureTensor`, shape ``(B, *sizes, mult · C)``, channels last."""


# -- the weight space as the layers see it ------------------------------------------------------


@dataclass(frozen=True)
class FeatureTensor:
    """One weight-space tensor as an NFN reads it.

    Attributes:
        name: its ``state_dict`` key.
        axes: the exchangeable unit sets of its leading axes (0, 1 or 2; output axis first).
        sizes: the number of units of each of ``axes``.
        mult: values per position and channel: kernel entries times the sizes of its unpermuted
            axes, which are folded into the channels.
        offset, shape: where it lies in the flat vector, as ``(n_out, n_in, kernel entries)``
            for a weight and ``(n,)`` for a 1-D tensor.
        order: the order its raw axes are read in (permuted axes first, then the folded ones).
        scale: a constant it is multiplied by when read (see ``rescale`` of :meth:`FeatureSpace.of`).
    """

    name: str
    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    mult: int
    offset: int
    shape: tuple[int, ...]
    order: tuple[int, ...]
    scale: float = 1.0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class FeatureSpace:
    """The tensors of a weight space with the unit sets an NFN's layers permute.

    Attributes:
        tensors: weights first (description order), then 1-D tensors.
        sets: the exchangeable sets, name -> size, in description order.
        size: length of the flat vectors read.
    """

    tensors: tuple[FeatureTensor, ...]
    sets: dict[str, int]
    size: int

    @classmethod
    def of(cls, space: WeightSpace, permuted: Iterable[str], rescale: bool = False) -> FeatureSpace:
        """The features of ``space`` with the sets ``permuted`` exchangeable.

        With ``rescale``, each weight and its layer's bias are multiplied by ``sqrt(fan_in)``
        (``n_in ·`` kernel entries), which brings PyTorch-initialised layers of any width to unit
        scale; a constant per tensor, it commutes with every permutation. Norm parameters and
        running statistics are read as they are.
        """
        permuted = set(permuted)
        sizes = space.sizes
        fan_in = {w.name.rpartition(".")[0]: w.n_in * w.kernel_size for w in space.weights}
        tensors = []
        for w in space.weights:
            sets = (w.out_set, w.in_set)
            kept = tuple(a for a in (0, 1) if sets[a] in permuted)
            folded = tuple(a for a in (0, 1) if sets[a] not in permuted)
            tensors.append(FeatureTensor(
                w.name, tuple(sets[a] for a in kept), tuple(w.shape[a] for a in kept),
                w.kernel_size * math.prod(w.shape[a] for a in folded), w.offset,
                (w.n_out, w.n_in, w.kernel_size), (*kept, *folded, 2),
                math.sqrt(w.n_in * w.kernel_size) if rescale else 1.0))
        for u in space.units:
            scale = math.sqrt(fan_in[u.name.rpartition(".")[0]]) if rescale and u.role == "bias" else 1.0
            if u.unit_set in permuted:
                tensors.append(FeatureTensor(u.name, (u.unit_set,), (u.size,), 1, u.offset, (u.size,), (0, 1), scale))
            else:
                tensors.append(FeatureTensor(u.name, (), (), u.size, u.offset, (u.size,), (0, 1), scale))
        used = {s for t in tensors for s in t.axes}
        return cls(tuple(tensors), {s: n for s, n in sizes.items() if s in used}, space.size)

    @classmethod
    def np(cls, space: WeightSpace, rescale: bool = False) -> FeatureSpace:
        """NP: every set exchangeable, the network's inputs and outputs included."""
        return cls.of(space, [s.name for s in space.sets], rescale)

    @classmethod
    def hnp(cls, space: WeightSpace, rescale: bool = False) -> FeatureSpace:
        """HNP: only the hidden sets exchangeable; input and output axes fold into channels."""
        return cls.of(space, [s.name for s in space.hidden], rescale)

    def incidences(self, name: str) -> list[tuple[int, int]]:
        """``(tensor index, axis position)`` for every permuted axis on set ``name``."""
        return [(i, a) for i, t in enumerate(self.tensors) for a, s in enumerate(t.axes) if s == name]

    def read(self, flat: Tensor) -> Features:
        """Flat weights ``(B, P)`` -> features with one channel per value (``C = 1``)."""
        b = flat.shape[0]
        out = []
        for t in self.tensors:
            x = flat[:, t.offset : t.offset + t.numel].reshape(b, *t.shape)
            x = x[..., None] if len(t.shape) == 1 else x
            x = x.permute(0, *(a + 1 for a in t.order)).reshape(b, *t.sizes, t.mult)
            out.append(x * t.scale if t.scale != 1.0 else x)
        return out

    def permute(self, features: Features, perms: dict[str, Tensor]) -> Features:
        """Features with ``perms`` applied along each permuted axis (``new[i] = old[perm[i]]``);
        sets without a permutation in ``perms`` stay put."""
        out = []
        for t, x in zip(self.tensors, features):
            for a, s in enumerate(t.axes):
                if s in perms:
                    x = x.index_select(a + 1, perms[s].to(x.device))
            out.append(x)
        return out


# -- layers -------------------------------------------------------------------------------------


def _pooled(x: Tensor, axes: int, keep: Sequence[bool] = ()) -> Tensor:
    """Mean of ``(B, *sizes, C)`` over its ``axes`` permuted axes (except those ``keep`` marks),
    flattened to ``(B, features)``."""
    dims = tuple(1 + a for a in range(axes) if not (keep and keep[a]))
    return (x.mean(dim=dims) if dims else x).flatten(1)


def _uniform_rows(weight: Tensor, bias: Tensor | None, blocks: Sequence[tuple[int, int]]) -> None:
    """Initialise output rows in blocks ``(rows, fan_in)``: uniform with bound ``1/sqrt(fan_in)``,
    ``fan_in`` counting every map summed into those outputs (as ``set_init_`` of the authors' code)."""
    start = 0
    with torch.no_grad():
        for rows, fan_in in blocks:
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            weight[start : start + rows].uniform_(-bound, bound)
            if bias is not None:
                bias[start : start + rows].uniform_(-bound, bound)
            start += rows


class EquivariantLinear(nn.Module):
    r"""The linear layer of an NFN on a :class:`FeatureSpace`, equivariant to permutations of its sets.

    For a set :math:`S` let :math:`F_S[s]` concatenate, over every tensor with a permuted axis on
    :math:`S`, that tensor's mean over its *other* permuted axis at unit :math:`s` (or the tensor
    itself when :math:`S` is its only permuted axis); let :math:`g` concatenate every tensor's
    mean over all its permuted axes. Then a tensor :math:`X` with permuted axes ``(O, I)`` (a
    weight), ``(S,)`` (a bias, norm parameter, or in HNP a weight whose other axis is an input or
    output axis) or ``()`` maps to

    .. math::

        X'[o, i] &= A\,X[o, i] + R\,F_O[o] + K\,F_I[i] + G\,g + e, \\
        X'[s]    &= R\,F_S[s] + G\,g + e, \qquad
        X'       = G\,g + e,

    with :math:`A, R, K, G` matrices over channels and :math:`e` a vector, learned per tensor
    (:math:`F_S` contains :math:`X` itself in the 1-axis case, so it has a self map too). Every
    term is indexed by the units it is permuted with and the means are invariant, so permuting
    any set permutes the output the same way. On a chain this is the NP layer of Zhou et al.
    (2023); tensors on a shared set (a residual stream) are tied through :math:`F_S`.

    The maps of one set are one matrix product over :math:`F_S`, those of :math:`g` another.

    Args:
        space: the feature space.
        in_channels, out_channels: channels ``C`` per value before and after.
    """

    def __init__(self, space: FeatureSpace, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.space, self.c_in, self.c_out = space, in_channels, out_channels
        tensors = space.tensors
        self.out_dims = [t.mult * out_channels for t in tensors]
        self.self_index = [i for i, t in enumerate(tensors) if len(t.axes) == 2]
        self.self_maps = nn.ModuleList(
            nn.Linear(tensors[i].mult * in_channels, self.out_dims[i], bias=False) for i in self.self_index
        )
        self.set_names = list(space.sets)
        self.set_incidences = [space.incidences(s) for s in self.set_names]
        self.set_dims = [sum(tensors[i].mult for i, _ in inc) * in_channels for inc in self.set_incidences]
        self.set_maps = nn.ModuleList(
            nn.Linear(dim, sum(self.out_dims[i] for i, _ in inc), bias=False)
            for dim, inc in zip(self.set_dims, self.set_incidences)
        )
        self.global_dim = sum(t.mult for t in tensors) * in_channels
        self.global_map = nn.Linear(self.global_dim, sum(self.out_dims))
        self.reset_parameters()

    def _fan_in(self) -> list[int]:
        """Per tensor: the inputs of every map summed into its outputs."""
        fan = [self.global_dim + (t.mult * self.c_in if len(t.axes) == 2 else 0) for t in self.space.tensors]
        for dim, inc in zip(self.set_dims, self.set_incidences):
            for i, _ in inc:
                fan[i] += dim
        return fan

    def reset_parameters(self) -> None:
        fan = self._fan_in()
        for i, linear in zip(self.self_index, self.self_maps):
            _uniform_rows(linear.weight, None, [(self.out_dims[i], fan[i])])
        for linear, inc in zip(self.set_maps, self.set_incidences):
            _uniform_rows(linear.weight, None, [(self.out_dims[i], fan[i]) for i, _ in inc])
        _uniform_rows(self.global_map.weight, self.global_map.bias, list(zip(self.out_dims, fan)))

    def forward(self, features: Features) -> Features:
        tensors = self.space.tensors
        g = torch.cat([_pooled(x, len(t.axes)) for t, x in zip(tensors, features)], dim=-1)
        out = list(self.global_map(g).split(self.out_dims, dim=-1))
        # per tensor and permuted axis: the set term indexed by that axis
        terms: dict[tuple[int, int], Tensor] = {}
        for linear, inc in zip(self.set_maps, self.set_incidences):
            parts = []
            for i, a in inc:
                x = features[i]
                parts.append(x.mean(dim=2 - a) if len(tensors[i].axes) == 2 else x)
            chunks = linear(torch.cat(parts, dim=-1)).split([self.out_dims[i] for i, _ in inc], dim=-1)
            terms.update(zip(inc, chunks))
        maps = dict(zip(self.self_index, self.self_maps))
        for i, t in enumerate(tensors):
            glob = out[i]
            if len(t.axes) == 0:
                continue
            if len(t.axes) == 1:
                out[i] = terms[(i, 0)] + glob[:, None]
                continue
            small = terms[(i, 0)] + glob[:, None]  # (B, n_O, C'): the row terms, added first
            y = maps[i](features[i])
            y.add_(small[:, :, None]).add_(terms[(i, 1)][:, None])
            out[i] = y
        return out


class NPLinear(EquivariantLinear):
    r""":class:`EquivariantLinear` on the NP feature space of a weight space (every set exchangeable).

    On a chain with levels :math:`0 \dots L`, layer ``i`` weight :math:`W_i` and bias :math:`b_i`:

    .. math::

        W'_i[j, k] &= A_i W_i[j, k] + R_i\,\rho_i[j] + K_i\,\kappa_i[k] + G_i\,g + e_i, \\
        b'_i[j] &= S_i\,\rho_i[j] + H_i\,g + f_i,

    with row features :math:`\rho_i[j] = (\bar W_i[j], b_i[j], \underline W_{i+1}[j])`, column
    features :math:`\kappa_i[k] = (\underline W_i[k], b_{i-1}[k], \bar W_{i-1}[k])` (row means
    :math:`\bar W`, column means :math:`\underline W`) and :math:`g` all tensors' full means:
    the NP layer of Zhou et al. (2023). Norm parameters join their units' features.
    """

    def __init__(self, space: WeightSpace, in_channels: int, out_channels: int, rescale: bool = False) -> None:
        super().__init__(FeatureSpace.np(space, rescale), in_channels, out_channels)


class HNPLinear(EquivariantLinear):
    r""":class:`EquivariantLinear` on the HNP feature space (only hidden sets exchangeable).

    The input axis of a first layer and the output axis of the last are folded into channels: the
    first weight :math:`W_0[j, :]` is a feature vector of hidden unit ``j``, the last weight
    :math:`W_{L-1}[:, k]` one of hidden unit ``k``, the output bias a global vector. So

    .. math::

        W'_0[j, :] &= R_0\,\rho[j] + G_0\,g + e_0, \qquad
        W'_{L-1}[:, k] = R_{L-1}\,\kappa[k] + G_{L-1}\,g + e_{L-1}, \qquad
        b'_{L-1} = G\,g + e,

    where :math:`\rho[j]` gathers everything indexed by hidden unit ``j`` of level 1 (the row
    :math:`W_0[j, :]`, :math:`b_0[j]`, the column mean of :math:`W_1`), :math:`\kappa[k]` likewise
    for level :math:`L-1`, and :math:`g` every tensor's mean over its hidden axes (so the input-
    and output-indexed means :math:`\mathrm{mean}_j W_0[j, :]`, :math:`\mathrm{mean}_k W_{L-1}[:, k]`
    and :math:`b_{L-1}` keep their index). Middle layers are as in :class:`NPLinear`. This is
    ``HNPLinear`` of Zhou et al. (2023); it also reads the bias of level :math:`L-1` into
    :math:`\kappa`, and on a ResNet the input set is the image channels, the output set the classes.
    """

    def __init__(self, space: WeightSpace, in_channels: int, out_channels: int, rescale: bool = False) -> None:
        super().__init__(FeatureSpace.hnp(space, rescale), in_channels, out_channels)


class ChannelNorm(nn.Module):
    r"""LayerNorm of each tensor's channels at every position of its permuted axes.

    .. math::

        X'[p] = \gamma_t \odot \frac{X[p] - \mu(X[p])}{\sigma(X[p])} + \beta_t,

    with mean and deviation over the ``mult · C`` channels of position ``p`` (folded input/output
    axes and kernel entries included) and :math:`\gamma_t, \beta_t` learned per tensor. It acts
    on each position alike, so it commutes with every permutation of the permuted axes; it keeps
    activations at unit scale however large the maps' updates are (the authors' ``lnorm`` option of
    their invariant NFN, off in their accuracy configs; here it is what makes ``nfn`` strongest).
    """

    def __init__(self, space: FeatureSpace, channels: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(t.mult * channels) for t in space.tensors)

    def reset_parameters(self) -> None:
        for norm in self.norms:
            norm.reset_parameters()

    def forward(self, features: Features) -> Features:
        return [norm(x) for norm, x in zip(self.norms, features)]


class InvariantPool(nn.Module):
    r"""Invariant readout: each tensor averaged over its permuted axes, except those on ``keep``
    sets, which are flattened into features with the channels.

    .. math::

        \mathrm{pool}(X_1, \dots, X_T) = \Vert_t\ \mathrm{vec}\,\mathrm{mean}_{\text{permuted axes not kept}}\ X_t.

    No parameters.
    """

    def __init__(self, space: FeatureSpace, channels: int, keep: Iterable[str] = ()) -> None:
        super().__init__()
        keep = set(keep)
        self.space = space
        self.keep = [tuple(s in keep for s in t.axes) for t in space.tensors]
        self.out_features = channels * sum(
            t.mult * math.prod(n for n, k in zip(t.sizes, kept) if k) for t, kept in zip(space.tensors, self.keep)
        )

    def reset_parameters(self) -> None:
        """Nothing to reset (no parameters)."""

    def forward(self, features: Features) -> Tensor:
        return torch.cat([_pooled(x, len(t.axes), kept)
                          for t, x, kept in zip(self.space.tensors, features, self.keep)], dim=1)


class NPPool(InvariantPool):
    r"""NP pooling: every tensor averaged over all its permuted axes (``NPPool`` of Zhou et al.):
    :math:`\Vert_t\ \mathrm{mean}\,X_t`. On an NP feature space it is invariant to input and
    output permutations too. No parameters."""

    def __init__(self, space: FeatureSpace, channels: int) -> None:
        super().__init__(space, channels)


class HNPPool(InvariantPool):
    r"""HNP pooling: every tensor averaged over its *hidden* axes only; input and output axes keep
    their index (``HNPPool`` of Zhou et al.): :math:`\mathrm{mean}_j W_0[j, :]`,
    :math:`\mathrm{mean}_k W_{L-1}[:, k]` and :math:`b_{L-1}` stay vectors. No parameters."""

    def __init__(self, space: FeatureSpace, channels: int) -> None:
        super().__init__(space, channels, keep=(INPUT, OUTPUT))


# -- the model ----------------------------------------------------------------------------------


class NFN(nn.Module):
    r"""An invariant NFN: ``flat (B, P)`` -> features -> ``[layer -> ReLU] × len(channels)`` -> pool -> MLP -> ``(B,)``.

    The defaults are the authors' best invariant model for predicting accuracy (``hnp_inv`` with
    the ``mlp`` head of their ``predict_gen`` configs): HNP layers with 16, 16, 5 channels, no
    normalisation, raw weights in, HNP pooling, two hidden layers of 1,000; their sigmoid output is
    the metanet option ``sigmoid`` (on by default for the registered NFNs, see :mod:`metanets.registry`).

    Args:
        layout, arch: the zoo's parameter layout and architecture (any family and variant).
        mode: ``hnp`` (only hidden units exchangeable) or ``np`` (inputs and outputs too).
        channels: channels of each equivariant layer.
        pool: ``hnp`` (keep input and output indices) or ``np`` (average them too); default: ``mode``.
        head_hidden: width of the two hidden layers of the readout MLP.
        head_norm: a LayerNorm before each ReLU of the readout MLP (``lnorm`` of the authors' head).
        norm: a :class:`ChannelNorm` after each equivariant layer, before its ReLU.
        rescale: multiply each weight and its bias by ``sqrt(fan_in)`` (see :meth:`FeatureSpace.of`);
            off by default (one seed of three fell into the sigmoid's flat tail with it on the
            digits zoo); it has no effect when the trainer standardises each tensor anyway.
        max_width: the most values a tensor position may carry (folded axes × kernel entries ×
            channels). The dense maps grow with its square, and HNP folds the input units into
            it: on a 784-pixel MLP, 784 × 16 channels would need about 450M parameters, so such a
            network is refused with a pointer to NP rather than built.
    """

    def __init__(
        self,
        layout: ParamLayout,
        arch: ArchSpec,
        mode: str = "hnp",
        channels: Sequence[int] = (16, 16, 5),
        pool: str | None = None,
        head_hidden: int = 1000,
        head_norm: bool = False,
        norm: bool = False,
        rescale: bool = False,
        max_width: int = 4096,
    ) -> None:
        super().__init__()
        pool = mode if pool is None else pool
        for label, value, valid in (("mode", mode, MODES), ("pool", pool, MODES)):
            if value not in valid:
                raise ValueError(f"nfn {label} must be one of {', '.join(valid)}, got {value!r}")
        if not channels or min(channels) < 1:
            raise ValueError("nfn needs at least one equivariant layer with at least one channel")
        space = weight_space(layout, arch)
        self.size = layout.size
        self.features = FeatureSpace.np(space, rescale) if mode == "np" else FeatureSpace.hnp(space, rescale)
        widest = max(self.features.tensors, key=lambda t: t.mult)
        if widest.mult * max(channels) > max_width:
            raise SpecError(
                f"nfn ({mode.upper()}): tensor '{widest.name}' carries {widest.mult} values per unit "
                f"(unpermuted axes folded into channels), {widest.mult * max(channels)} features with "
                f"{max(channels)} channels, over max_width={max_width}; use the NP form (nfn_np) or fewer channels")
        widths = [1, *channels]
        self.layers = nn.ModuleList(EquivariantLinear(self.features, c_in, c_out)
                                    for c_in, c_out in pairwise(widths))
        self.norms = nn.ModuleList(ChannelNorm(self.features, c) for c in channels) if norm else None
        self.pool = (NPPool if pool == "np" else HNPPool)(self.features, widths[-1])
        norm = (lambda: [nn.LayerNorm(head_hidden)]) if head_norm else list
        self.head = nn.Sequential(
            nn.Linear(self.pool.out_features, head_hidden), *norm(), nn.ReLU(),
            nn.Linear(head_hidden, head_hidden), *norm(), nn.ReLU(),
            nn.Linear(head_hidden, 1),
        )

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        for norm in self.norms or ():
            norm.reset_parameters()
        for module in self.head:
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()

    def forward(self, flat: Tensor) -> Tensor:
        if flat.ndim != 2 or flat.shape[1] != self.size:
            raise ValueError(f"nfn expects flat weights of shape (B, {self.size}), got {tuple(flat.shape)}")
        features = self.features.read(flat)
        for i, layer in enumerate(self.layers):
            features = layer(features)
            if self.norms is not None:
                features = self.norms[i](features)
            features = [torch.relu(x) for x in features]
        return self.head(self.pool(features)).squeeze(-1)

