"""Metanetwork baselines of the paper (PAPER.md §3), behind one registry.

Each entry says which input view it reads and how to build the model for an input size; new
metanets join with :func:`register_metanet` without editing symzoo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from zoo.errors import SpecError
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec

__all__ = ["MetanetContext", "MetanetEntry", "METANETS", "VIEWS", "register_metanet", "get_metanet", "MLPMetanet", "StatNN", "DeepSets", "DMC"]


@dataclass(frozen=True)
class MetanetContext:
    """What a metanet may know when it is built: its input size, and the zoo's layout and
    architecture (graph and weight-space metanets rebuild per-layer structure from them)."""

    input_dim: int
    layout: ParamLayout
    arch: ArchSpec


@dataclass(frozen=True)
class MetanetEntry:
    """``view``: ``weights`` (trainable entries of the flat vector), ``statistics`` (per-tensor
    statistics) or ``flat`` (all effective weights, in layout order)."""

    name: str
    view: str
    build: Callable[[MetanetContext], nn.Module]
    invariant: bool  # invariant to hidden-unit permutations by construction
    normalize: bool = False  # standardise its inputs with train-split statistics unless told otherwise


VIEWS = ("weights", "statistics", "flat")
METANETS: dict[str, MetanetEntry] = {}

Builder = Callable[[MetanetContext], nn.Module]


def register_metanet(name: str, view: str, invariant: bool = False,
                     normalize: bool | None = None) -> Callable[[Builder], Builder]:
    """Decorator registering ``build(context) -> nn.Module`` under ``name``; the module maps a
    batch of inputs of the given view to one prediction per row. ``normalize`` is whether its
    inputs are standardised by default (per feature for ``statistics``, per tensor otherwise;
    default: only ``statistics``, as in the paper's protocol)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")

    def decorate(build: Builder) -> Builder:
        METANETS[name] = MetanetEntry(name, view, build, invariant,
                                      view == "statistics" if normalize is None else normalize)
        return build

    return decorate


def get_metanet(name: str) -> MetanetEntry:
    if name not in METANETS:
        raise SpecError(f"unknown metanet '{name}'; valid metanets: {', '.join(METANETS)}")
    return METANETS[name]


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
    a linear readout (8,897 parameters at ``h = 64``). Invariant to any permutation of entries."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, rho_layers: int = 2) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(in_channels, hidden), nn.LayerNorm(hidden), nn.ReLU())
        rho: list[nn.Module] = []
        for _ in range(rho_layers):
            rho += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        self.rho = nn.Sequential(*rho, nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, N)`` scalars or ``(B, C, N)`` channels of ``N`` set elements."""
        x = x[:, None, :] if x.ndim == 2 else x
        return self.rho(self.phi(x.transpose(1, 2)).mean(1)).squeeze(-1)


class DMC(nn.Module):
    """A 1-D CNN over the flat weight vector (Eilertsen et al. 2020): six conv blocks doubling the
    channels to ``hidden`` (each Conv1d(k=5) → ReLU → BatchNorm → MaxPool(2)), ``extra`` more at
    ``hidden`` channels (every second one pooled), then a DeepSets readout over positions
    (105,357 parameters at ``hidden = 64``, ``extra = 4``)."""

    def __init__(self, hidden: int = 64, extra: int = 4) -> None:
        super().__init__()
        widths = [1] + [hidden // 2**k for k in range(5, -1, -1)]
        blocks = [self._block(c_in, c_out, pool=True) for c_in, c_out in zip(widths[:-1], widths[1:])]
        blocks += [self._block(hidden, hidden, pool=i % 2 == 1) for i in range(extra)]
        self.convs = nn.Sequential(*blocks)
        self.readout = _SetReadout(hidden)

    @staticmethod
    def _block(c_in: int, c_out: int, pool: bool) -> nn.Module:
        layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, 5), nn.ReLU(), nn.BatchNorm1d(c_out)]
        return nn.Sequential(*layers, nn.MaxPool1d(2)) if pool else nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.convs(x[:, None, :]))


class _SetReadout(DeepSets):
    """DMC's readout: DeepSets over positions with ``hidden`` channels and one ρ block."""

    def __init__(self, hidden: int) -> None:
        super().__init__(in_channels=hidden, hidden=hidden, rho_layers=1)


register_metanet("linear", "weights")(lambda c: nn.Sequential(nn.Linear(c.input_dim, 1), nn.Flatten(0)))
register_metanet("mlp", "weights")(lambda c: MLPMetanet(c.input_dim))
register_metanet("statnn", "statistics", invariant=True)(lambda c: StatNN(c.input_dim))
register_metanet("deepsets", "weights", invariant=True)(lambda c: DeepSets())
register_metanet("dmc", "weights")(lambda c: DMC())
