"""A graph metanetwork (GMN) on neural graphs: message passing over neurons with weights as edges.

Reads the ``flat`` view (all effective weights in layout order) and turns each row into the
network's neural graph (:mod:`zoo.graph`) inside ``forward``, so it plugs into the metanet
registry like any other model. Invariant to hidden-unit permutations by construction.

Two ways to run the same model (issue 16):

- **dense** (default where it applies): a neural graph's edges are the entries of its weight
  tensors, and the edges of one tensor form a dense bipartite block between two node sets. So edge
  states are kept per tensor as ``(B, n_out, n_in, h)`` blocks, :math:`a_i + b_j` is a broadcast
  sum, and "mean over incoming (outgoing) edges" is a mean over one axis of a block: no gathers,
  scatters or per-batch ``edge_index``. The first round's :math:`C e^0_{ij}` is folded into the
  edge encoder (:math:`C (W_e f + c) = (C W_e) f + C c`), a rank-``K`` product instead of an
  ``h × h`` one per edge. Graphs are independent, so a batch runs in chunks of ~32k edges (9
  digits-MLP graphs) whose ``(edges, h)`` tensors stay in cache across the dozen elementwise
  passes over them (forward and backward). About 4x faster per epoch on one CPU core for the
  digits-MLP zoo (``benchmarks/metanet_speed.py``).
- **general** (``dense=False``, or a graph whose tensors are not dense blocks): PyG message
  passing over the batched graph of :func:`~zoo.graph.to_graphs`.

Both compute the same function of the same parameters (``tests/test_gmn_dense.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing, global_max_pool, global_mean_pool

from zoo.graph import GraphTemplate, graph_template, to_graphs
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec

__all__ = ["DensePlan", "EdgeNodeConv", "GraphMetanet", "dense_plan"]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


# -- dense blocks -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Block:
    """The edges of one weight tensor: template edges ``first : first + n_out·n_in``, row-major,
    from nodes ``src : src + n_in`` to nodes ``dst : dst + n_out`` (every pair once)."""

    kind: int
    first: int
    dst: int
    src: int
    n_out: int
    n_in: int


@dataclass(frozen=True)
class _Segment:
    """Nodes ``start : stop`` and the blocks whose edges end at them (incoming) or start at them
    (outgoing); ``count``: edges per node, the denominator of their mean (0: no edges)."""

    start: int
    stop: int
    blocks: tuple[int, ...]
    count: int


@dataclass(frozen=True)
class DensePlan:
    """A neural graph as dense blocks, and which blocks each node averages over. Plain integers,
    derived once from a :class:`~zoo.graph.GraphTemplate` by :func:`dense_plan`."""

    blocks: tuple[_Block, ...]
    incoming: tuple[_Segment, ...]
    outgoing: tuple[_Segment, ...]
    num_nodes: int


def dense_plan(template: GraphTemplate) -> DensePlan | None:
    """The template's edges as one dense block per weight tensor, or None when some tensor's
    edges are not a complete row-major ``n_out × n_in`` block, or node ranges of blocks overlap
    without coinciding (then only the general path applies)."""
    src_all, dst_all = template.edge_index
    blocks = []
    for kind in range(len(template.edge_tensors)):
        where = (template.edge_kind == kind).nonzero().flatten()
        if where.numel() == 0:
            continue
        first, count = int(where[0]), where.numel()
        if int(where[-1]) - first + 1 != count:
            return None
        src, dst = src_all[first : first + count], dst_all[first : first + count]
        d0, s0 = int(dst.min()), int(src.min())
        n_out, n_in = int(dst.max()) - d0 + 1, int(src.max()) - s0 + 1
        if n_out * n_in != count:
            return None
        if not (torch.equal(dst, d0 + torch.arange(n_out).repeat_interleave(n_in))
                and torch.equal(src, s0 + torch.arange(n_in).repeat(n_out))):
            return None
        blocks.append(_Block(kind, first, d0, s0, n_out, n_in))
    n = template.num_nodes
    if not blocks or n == 0:
        return None
    incoming = _segments([(b.dst, b.dst + b.n_out, b.n_in) for b in blocks], n)
    outgoing = _segments([(b.src, b.src + b.n_in, b.n_out) for b in blocks], n)
    if incoming is None or outgoing is None:
        return None
    return DensePlan(tuple(blocks), incoming, outgoing, n)


def _segments(ranges: list[tuple[int, int, int]], num_nodes: int) -> tuple[_Segment, ...] | None:
    """``[0, num_nodes)`` cut into the blocks' node ranges (``(start, stop, edges per node)``,
    one per block) and the gaps between them; None if two ranges overlap without coinciding."""
    by_range: dict[tuple[int, int], list[int]] = {}
    for i, (start, stop, _) in enumerate(ranges):
        by_range.setdefault((start, stop), []).append(i)
    segments, at = [], 0
    for (start, stop), members in sorted(by_range.items()):
        if start < at:
            return None
        if start > at:
            segments.append(_Segment(at, start, (), 0))
        segments.append(_Segment(start, stop, tuple(members), sum(ranges[i][2] for i in members)))
        at = stop
    if at < num_nodes:
        segments.append(_Segment(at, num_nodes, (), 0))
    return tuple(segments)


def _edge_means(messages: list[Tensor], segments: tuple[_Segment, ...], dim: int, like: Tensor) -> Tensor:
    """``(B, N, h)``: each node's mean message over its edges in the blocks of ``segments``
    (``dim`` 2: over a block's inputs, i.e. incoming edges; 1: over its outputs), zero for nodes
    without edges, as PyG's mean aggregation gives."""
    b, h = like.shape[0], like.shape[-1]
    pieces = []
    for seg in segments:
        if not seg.blocks:
            pieces.append(like.new_zeros(b, seg.stop - seg.start, h))
        else:  # sum, then divide the small result: a mean's backward would divide every edge
            pieces.append(sum(messages[i].sum(dim) for i in seg.blocks) / seg.count)
    return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]


def _gather(weights: Tensor, index: Tensor) -> Tensor:
    """``weights[:, index]`` with ``-1`` entries read as zero (padding)."""
    padded = F.pad(weights, (0, 1))
    return padded[:, torch.where(index < 0, weights.shape[1], index)]


class EdgeNodeConv(MessagePassing):
    r"""One round of edge and node updates on a directed neural graph.

    For a weight edge :math:`j \to i` with state :math:`e_{ij}`:

    .. math::
        m_{ij} = \mathrm{ReLU}(A x_i + B x_j + C e_{ij}), \qquad
        e'_{ij} = \mathrm{LN}(e_{ij} + m_{ij}),

        x'_i = \mathrm{LN}\Big(x_i + \mathrm{MLP}_x\big([x_i,\;
            W_{\mathrm{in}} \mathrm{mean}_{j \to i}\, m_{ij},\;
            W_{\mathrm{out}} \mathrm{mean}_{i \to k}\, m_{ki}]\big)\Big).

    The message is an MLP on :math:`[x_i, x_j, e_{ij}]` whose output layer
    (:math:`W_{\mathrm{in}}`, :math:`W_{\mathrm{out}}`) is applied after the mean, where it is
    equal and ``E/N`` times cheaper; :math:`A x` and :math:`B x` are computed per node. The only
    per-edge matrix product is :math:`C e_{ij}`, which matters with millions of edges per batch.
    Each node hears from the layer below and the layer above through separate projections, so
    one edge state serves both directions without duplicating the edges.
    """

    def __init__(self, hidden: int, update_edges: bool = True) -> None:
        super().__init__(aggr="mean")
        self.msg_dst = nn.Linear(hidden, hidden)
        self.msg_src = nn.Linear(hidden, hidden, bias=False)
        self.msg_edge = nn.Linear(hidden, hidden, bias=False)
        self.to_dst = nn.Linear(hidden, hidden)
        self.to_src = nn.Linear(hidden, hidden)
        self.node_mlp = _mlp(3 * hidden, hidden, hidden)
        self.node_norm = nn.LayerNorm(hidden)
        self.edge_norm = nn.LayerNorm(hidden) if update_edges else None

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the new node and edge states (the edge states unchanged without edge updates)."""
        size = (x.shape[0], x.shape[0])
        m = self.edge_updater(edge_index, a=self.msg_dst(x), b=self.msg_src(x), e=self.msg_edge(edge_attr))
        incoming = self.to_dst(self.propagate(edge_index, m=m, size=size))
        outgoing = self.to_src(self.propagate(edge_index.flip(0), m=m, size=size))
        x = self.node_norm(x + self.node_mlp(torch.cat([x, incoming, outgoing], dim=-1)))
        if self.edge_norm is not None:
            edge_attr = self.edge_norm(edge_attr + m)
        return x, edge_attr

    def forward_dense(self, x: Tensor, edges: list[Tensor], plan: DensePlan,
                      edge_products: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """The same round on dense blocks: ``x`` ``(B, N, h)``, ``edges[t]`` ``(B, n_out, n_in, h)``
        the states of block ``t`` of ``plan``. ``edge_products[t]``, if given, is
        :math:`C e_{ij}` of block ``t`` computed by the caller (the first round folds it into the
        edge encoder), and is overwritten. Returns the new node and edge states."""
        a, b = self.msg_dst(x), self.msg_src(x)
        messages = []
        for t, block in enumerate(plan.blocks):
            m = self.msg_edge(edges[t]) if edge_products is None else edge_products[t]
            m = m.add_(a[:, block.dst : block.dst + block.n_out, None])
            m = m.add_(b[:, None, block.src : block.src + block.n_in])
            messages.append(m.relu_())
        incoming = self.to_dst(_edge_means(messages, plan.incoming, 2, x))
        outgoing = self.to_src(_edge_means(messages, plan.outgoing, 1, x))
        x = self.node_norm(x + self.node_mlp(torch.cat([x, incoming, outgoing], dim=-1)))
        if self.edge_norm is not None:
            edges = [self.edge_norm(e + m) for e, m in zip(edges, messages)]
        return x, edges

    def edge_update(self, a_i: Tensor, b_j: Tensor, e: Tensor) -> Tensor:
        """The message/edge update :math:`m_{ij}`; in place on one fresh ``(E, h)`` tensor, as
        these sums are memory-bound."""
        return (a_i + b_j).add_(e).relu_()

    def message(self, m: Tensor) -> Tensor:
        """Edges pass their precomputed state; the output layer is applied after the mean."""
        return m


class GraphMetanet(nn.Module):
    r"""Predicts one scalar per network from its neural graph.

    Node states start as :math:`x_i^0 = W_x f_i + \mathrm{emb}(\mathrm{kind}_i)` from the node
    features :math:`f_i` (biases, norm parameters) and the node's kind (its permutation, or the
    identity of an input/output unit); edge states as :math:`e_{ij}^0 = W_e \sqrt{n_t} w_{ij} +
    \mathrm{emb}(t)` from the (padded) kernel :math:`w_{ij}` of tensor :math:`t` with fan-in
    :math:`n_t` (the scale makes weights of every layer O(1) at standard initialisation).
    ``layers`` rounds of :class:`EdgeNodeConv` follow, then :math:`\hat y =
    \mathrm{MLP}([\mathrm{mean}_i\, x_i^L, \max_i x_i^L])`. Kinds are shared by all units of a permutation, so permuting hidden units only
    permutes nodes and edges and leaves :math:`\hat y` unchanged (up to float rounding).

    ``dense`` runs it on dense per-tensor blocks (see the module docstring) where the graph
    allows, ``chunk_edges`` edges at a time; ``dense=False`` runs PyG message passing. Both are
    the same function of the same parameters.
    """

    def __init__(self, layout: ParamLayout, arch: ArchSpec, hidden: int = 64, layers: int = 3,
                 update_edges: bool = True, dense: bool = True, chunk_edges: int = 32768) -> None:
        super().__init__()
        template = graph_template(layout, arch)
        # dense blocks where the graph allows (every architecture of symzoo's zoos), else PyG
        self.plan = dense_plan(template) if dense else None
        # the dense path runs ~chunk_edges edges at a time, so that a block's (edges, h) tensors
        # (8 MB at h = 64) stay in cache between the dozen elementwise passes over them
        self.chunk = max(1, chunk_edges // max(template.num_edges, 1))
        self._names = (template.node_sets, template.edge_tensors)
        self._buffers_of_template = tuple(template.tensors())
        for name, tensor in template.tensors().items():
            self.register_buffer(f"_{name}", tensor, persistent=False)
        fan_in = [math.prod(layout[k].shape[1:]) for k in template.edge_tensors]
        self.register_buffer("_edge_scale", torch.tensor(fan_in, dtype=torch.float32).sqrt(), persistent=False)
        self.node_encoder = nn.Linear(max(template.node_features, 1), hidden)
        self.node_kind = nn.Embedding(max(template.num_node_kinds, 1), hidden)
        self.edge_encoder = nn.Linear(template.edge_features, hidden)
        self.edge_kind = nn.Embedding(max(len(template.edge_tensors), 1), hidden)
        # the last round's edge states are never read, so it skips the edge update
        self.convs = nn.ModuleList(EdgeNodeConv(hidden, update_edges and i < layers - 1) for i in range(layers))
        self.readout = _mlp(2 * hidden, hidden, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every layer (PyTorch defaults; kind embeddings small next to features)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for embedding in (self.node_kind, self.edge_kind):
            nn.init.normal_(embedding.weight, std=0.1)

    def _template(self) -> GraphTemplate:
        """The template with the buffers' device, so ``.to(device)`` moves the graph indices."""
        node_sets, edge_tensors = self._names
        return GraphTemplate(**{name: getattr(self, f"_{name}") for name in self._buffers_of_template},
                             node_sets=node_sets, edge_tensors=edge_tensors)

    @property
    def dense(self) -> bool:
        """Whether ``forward`` runs on dense blocks (else on PyG's batched graph)."""
        return self.plan is not None

    def forward(self, weights: Tensor) -> Tensor:
        """``weights``: ``(B, P)`` flat effective weights; returns ``(B,)``."""
        if self.plan is not None:
            weights = weights[None] if weights.ndim == 1 else weights
            if weights.shape[0] <= self.chunk:
                return self._forward_dense(weights, self.plan)
            # graphs are independent, so chunks give the same result, and autograd's backward
            # also runs chunk by chunk
            return torch.cat([self._forward_dense(w, self.plan) for w in weights.split(self.chunk)])
        graphs = to_graphs(weights, self._template())
        x_features = graphs.x if graphs.x.shape[1] else graphs.x.new_zeros(graphs.x.shape[0], 1)
        x = self.node_encoder(x_features) + self.node_kind(graphs.node_kind)
        scale = self._edge_scale[graphs.edge_kind, None]
        e = self.edge_encoder(graphs.edge_attr * scale) + self.edge_kind(graphs.edge_kind)
        for conv in self.convs:
            x, e = conv(x, graphs.edge_index, e)
        size = weights.shape[0] if weights.ndim == 2 else 1
        pooled = torch.cat([global_mean_pool(x, graphs.batch, size), global_max_pool(x, graphs.batch, size)], dim=-1)
        return self.readout(pooled).squeeze(-1)

    def _forward_dense(self, weights: Tensor, plan: DensePlan) -> Tensor:
        """:meth:`forward` on dense blocks (see the module docstring): the same equations."""
        node_features = _gather(weights, self._node_gather)
        if node_features.shape[-1] == 0:
            node_features = node_features.new_zeros(*node_features.shape[:-1], 1)
        x = self.node_encoder(node_features) + self.node_kind(self._node_kind)
        edge_features = _gather(weights, self._edge_gather)
        w_e, c_e = self.edge_encoder.weight, self.edge_encoder.bias
        first = self.convs[0] if len(self.convs) else None
        edges, products = [], []
        for block in plan.blocks:
            count = block.n_out * block.n_in
            f = edge_features[:, block.first : block.first + count]
            f = f.reshape(len(weights), block.n_out, block.n_in, w_e.shape[1])
            weight = w_e * self._edge_scale[block.kind]  # W_e (s_t w) = (s_t W_e) w
            bias = c_e + self.edge_kind.weight[block.kind]
            if first is not None and first.edge_norm is not None:  # e^0 is read by an edge update
                edges.append(F.linear(f, weight, bias))
            if first is not None:  # C e^0 = (C W_e) w + C c: no h x h product per edge
                c = first.msg_edge.weight
                products.append(F.linear(f, c @ weight, c @ bias))
        for i, conv in enumerate(self.convs):
            x, edges = conv.forward_dense(x, edges, plan, products if i == 0 else None)
        return self.readout(torch.cat([x.mean(1), x.amax(1)], dim=-1)).squeeze(-1)
