"""A graph metanetwork (GMN) on neural graphs: message passing over neurons with weights as edges.

Reads the ``flat`` view (all effective weights in layout order) and turns each row into the
network's neural graph (:mod:`zoo.graph`) inside ``forward``, so it plugs into the metanet
registry like any other model. Invariant to hidden-unit permutations by construction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing, global_max_pool, global_mean_pool

from zoo.graph import GraphTemplate, graph_template, to_graphs
from zoo.layout import ParamLayout
from zoo.nets import ArchSpec

__all__ = ["GraphMetanet", "EdgeNodeConv"]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


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
    """

    def __init__(self, layout: ParamLayout, arch: ArchSpec, hidden: int = 64, layers: int = 3,
                 update_edges: bool = True) -> None:
        super().__init__()
        template = graph_template(layout, arch)
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

    def forward(self, weights: Tensor) -> Tensor:
        """``weights``: ``(B, P)`` flat effective weights; returns ``(B,)``."""
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


