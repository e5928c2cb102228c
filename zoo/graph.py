"""Networks as neural graphs (Kofinas et al. 2024; Lim et al. 2024) for PyTorch Geometric.

Neurons and channels are nodes, weights are edges: ``W[i, j, ...]`` of a Linear or Conv2d layer
becomes an edge from input unit ``j`` to output unit ``i`` whose feature vector is the kernel
``W[i, j]`` (a Linear weight is a 1×1 kernel). Per-unit 1-D tensors (biases, norm parameters,
running statistics) become node features. The graph is built from the network's
:class:`~zoo.weightspace.WeightSpace` (derived from its permutation spec, not from module
types), so it is generic and
exactly as symmetric as the network: every permutation is one set of nodes, so units that share
a permutation across layers (a ResNet's residual stream) are the same nodes, and the identity
shortcut needs no edges. Permuting hidden units therefore permutes nodes and nothing else, which
is what makes a message-passing metanet on these graphs invariant.

The structure is fixed per architecture, so :func:`graph_template` computes index tensors once
and :func:`to_graphs` only gathers a batch of flat weight vectors through them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch_geometric.data import Batch

from zoo.layout import ParamLayout
from zoo.nets import ArchSpec
from zoo.weightspace import INPUT, OUTPUT, WeightSpace, WeightTensor, weight_space

__all__ = ["GraphTemplate", "graph_template", "graph_template_of", "to_graphs", "INPUT", "OUTPUT"]


@dataclass(frozen=True, eq=False)
class GraphTemplate:
    """Index tensors that turn a flat weight vector of one architecture into its neural graph.

    Attributes:
        edge_index: ``(2, E)`` source (input unit) and target (output unit) node of each weight.
        edge_gather: ``(E, K)`` flat-vector index of each edge feature entry, ``-1`` for padding;
            kernels are centred in the network's largest ``kh × kw`` kernel, so a 1×1 kernel (or a
            Linear weight) sits where it acts in a 3×3 one.
        edge_kind: ``(E,)`` index of the weight tensor of each edge (into ``edge_tensors``).
        node_gather: ``(N, F)`` flat-vector index of each node feature, ``-1`` where a node has
            fewer 1-D tensors than ``F``; column ``c`` of a node set is its ``c``-th 1-D tensor.
        node_kind: ``(N,)`` node type: one per permutation (units of a permutation are
            interchangeable), and one per input and output unit (those have fixed identities).
        node_sets: name of each node set (``INPUT``, permutation names, ``OUTPUT``) in node order.
        edge_tensors: weight tensor name of each edge kind.
    """

    edge_index: Tensor
    edge_gather: Tensor
    edge_kind: Tensor
    node_gather: Tensor
    node_kind: Tensor
    node_sets: tuple[str, ...]
    edge_tensors: tuple[str, ...]

    @property
    def num_nodes(self) -> int:
        return self.node_kind.numel()

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def node_features(self) -> int:
        return self.node_gather.shape[1]

    @property
    def edge_features(self) -> int:
        return self.edge_gather.shape[1]

    @property
    def num_node_kinds(self) -> int:
        return int(self.node_kind.max()) + 1 if self.num_nodes else 0

    def tensors(self) -> dict[str, Tensor]:
        """The index tensors by field name (metanets register them as buffers)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}


def graph_template(layout: ParamLayout, arch: ArchSpec) -> GraphTemplate:
    """The graph template of ``arch`` for flat vectors of ``layout``.

    The structure is the :func:`~zoo.weightspace.weight_space` of ``arch``: the standard
    network's spec (W-Asym and σ-Asym variants have the same tensor names, and their fixed entries
    are weights like any other; FiGLU matrices are ignored), placed by ``layout``.
    """
    return graph_template_of(weight_space(layout, arch))


def graph_template_of(space: WeightSpace) -> GraphTemplate:
    """The graph template of a weight space: one node per unit of each set (in set order), one
    edge per connection of each weight tensor, the set's 1-D tensors as node features."""
    starts = _starts(space.sizes)
    kernel = space.max_kernel
    edges = [_weight_edges(w, starts, kernel) for w in space.weights]
    edge_index = torch.cat([e[0] for e in edges], dim=1) if edges else torch.zeros(2, 0, dtype=torch.long)
    edge_gather = torch.cat([e[1] for e in edges]) if edges else torch.zeros(0, kernel[0] * kernel[1], dtype=torch.long)
    edge_kind = torch.cat([torch.full((e[0].shape[1],), i, dtype=torch.long) for i, e in enumerate(edges)]) \
        if edges else torch.zeros(0, dtype=torch.long)
    return GraphTemplate(
        edge_index=edge_index,
        edge_gather=edge_gather,
        edge_kind=edge_kind,
        node_gather=_node_gather(space, starts),
        node_kind=_node_kinds(space),
        node_sets=tuple(space.sizes),
        edge_tensors=tuple(w.name for w in space.weights),
    )


def to_graphs(weights: Tensor, template: GraphTemplate) -> Batch:
    """A PyG batch of ``B`` neural graphs from flat weights ``(B, P)`` (or one vector ``(P,)``).

    Attributes of the batch: ``x`` ``(B·N, F)``, ``edge_index`` ``(2, B·E)``, ``edge_attr``
    ``(B·E, K)``, ``node_kind``, ``edge_kind``, ``batch`` and ``ptr``. Built directly rather than
    through ``Batch.from_data_list``, so its cost does not grow with Python work per graph.
    """
    weights = weights[None] if weights.ndim == 1 else weights
    b, n, e = weights.shape[0], template.num_nodes, template.num_edges
    device = weights.device
    x = _gather(weights, template.node_gather.to(device))
    edge_attr = _gather(weights, template.edge_gather.to(device))
    graph = torch.arange(b, device=device)
    offsets = (graph * n).repeat_interleave(e)
    edge_index = template.edge_index.to(device).repeat(1, b) + offsets
    return Batch(
        x=x.reshape(b * n, -1),
        edge_index=edge_index,
        edge_attr=edge_attr.reshape(b * e, -1),
        node_kind=template.node_kind.to(device).repeat(b),
        edge_kind=template.edge_kind.to(device).repeat(b),
        batch=graph.repeat_interleave(n),
        ptr=torch.arange(b + 1, device=device) * n,
    )


# -- helpers ------------------------------------------------------------------------------------


def _gather(weights: Tensor, index: Tensor) -> Tensor:
    """``weights[:, index]`` with ``-1`` entries read as zero: index into a zero-padded copy."""
    padded = torch.cat([weights, weights.new_zeros(weights.shape[0], 1)], dim=1)
    flat = torch.where(index < 0, weights.shape[1], index)
    return padded[:, flat.reshape(-1)].reshape(weights.shape[0], *index.shape)


def _starts(sizes: dict[str, int]) -> dict[str, int]:
    starts, offset = {}, 0
    for name, size in sizes.items():
        starts[name], offset = offset, offset + size
    return starts


def _weight_edges(weight: WeightTensor, starts: dict[str, int], kernel: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Edges of one weight tensor: ``(2, out·in)`` index and ``(out·in, K)`` gather indices."""
    c_out, c_in = weight.n_out, weight.n_in
    kh, kw = weight.kernel
    dst = starts[weight.out_set] + torch.arange(c_out).repeat_interleave(c_in)
    src = starts[weight.in_set] + torch.arange(c_in).repeat(c_out)
    entries = weight.offset + torch.arange(weight.numel).reshape(c_out * c_in, kh, kw)
    gather = torch.full((c_out * c_in, *kernel), -1, dtype=torch.long)
    top, left = (kernel[0] - kh) // 2, (kernel[1] - kw) // 2
    gather[:, top : top + kh, left : left + kw] = entries
    return torch.stack([src, dst]), gather.reshape(c_out * c_in, -1)


def _node_gather(space: WeightSpace, starts: dict[str, int]) -> Tensor:
    """``(N, F)`` gather indices: the ``c``-th 1-D tensor of a node set fills its column ``c``."""
    columns = {s.name: space.units_of(s.name) for s in space.sets}
    width = max((len(c) for c in columns.values()), default=0)
    gather = torch.full((sum(space.sizes.values()), width), -1, dtype=torch.long)
    for name, units in columns.items():
        for c, unit in enumerate(units):
            gather[starts[name] : starts[name] + unit.size, c] = unit.offset + torch.arange(unit.size)
    return gather


def _node_kinds(space: WeightSpace) -> Tensor:
    """Hidden units of one permutation share a kind; each input and output unit has its own."""
    kinds, nxt = [], 0
    for s in space.sets:
        if not s.permuted:
            kinds.append(nxt + torch.arange(s.size))
            nxt += s.size
        else:
            kinds.append(torch.full((s.size,), nxt, dtype=torch.long))
            nxt += 1
    return torch.cat(kinds) if kinds else torch.zeros(0, dtype=torch.long)
