"""The GMN's dense-block path computes the same function as PyG message passing (issue 16)."""

import dataclasses

import pytest
import torch

from metanets.gmn import GraphMetanet, dense_plan
from zoo import ParamLayout, get_arch
from zoo.graph import graph_template


def pair(arch: str, **kwargs) -> tuple[GraphMetanet, GraphMetanet, ParamLayout]:
    """A dense GMN and a general (PyG) one with the same parameters."""
    spec = get_arch(arch)
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    dense = GraphMetanet(layout, spec, **kwargs)
    general = GraphMetanet(layout, spec, dense=False)
    general.load_state_dict(dense.state_dict())
    return dense, general, layout


def networks(arch: str, layout: ParamLayout, n: int) -> torch.Tensor:
    spec = get_arch(arch)
    return torch.stack([layout.flatten(spec.build(init_seed=i)) for i in range(n)])


@pytest.mark.parametrize("arch", ["mlp-digits", "cnn-mnist", "resnet8"])
def test_dense_path_equals_message_passing_in_outputs_and_gradients(arch):
    dense, general, layout = pair(arch)
    assert dense.dense and not general.dense
    x = networks(arch, layout, 3)
    out_dense, out_general = dense(x), general(x)
    assert out_dense.shape == out_general.shape == (3,)
    assert torch.allclose(out_dense, out_general, atol=1e-5, rtol=0)
    (out_dense * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    (out_general * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    for (name, a), b in zip(dense.named_parameters(), general.parameters()):
        scale = b.grad.abs().max().clamp_min(1e-6)
        assert ((a.grad - b.grad).abs().max() / scale) < 1e-4, name


def test_one_vector_and_chunks_give_the_same_predictions():
    dense, general, layout = pair("mlp-digits", chunk_edges=1)  # one graph per chunk
    assert dense.chunk == 1
    x = networks("mlp-digits", layout, 5)
    with torch.no_grad():
        batched = dense(x)
        assert torch.allclose(batched, general(x), atol=1e-5, rtol=0)
        assert dense(x[2]).shape == general(x[2]).shape == (1,)
        assert torch.allclose(dense(x[2]), batched[2:3], atol=1e-6, rtol=0)


def test_blocks_follow_the_weight_tensors():
    spec = get_arch("mlp-digits")
    layout = ParamLayout.from_module(spec.build())
    template = graph_template(layout, spec)
    plan = dense_plan(template)
    assert [(b.n_out, b.n_in) for b in plan.blocks] == [(32, 64), (32, 32), (10, 32)]
    # inputs have no incoming edges, outputs no outgoing ones: their means are zero
    segments = [(s.start, s.stop, s.count) for s in plan.incoming]
    assert segments == [(0, 64, 0), (64, 96, 64), (96, 128, 32), (128, 138, 32)]
    segments = [(s.start, s.stop, s.count) for s in plan.outgoing]
    assert segments == [(0, 64, 32), (64, 96, 32), (96, 128, 10), (128, 138, 0)]


def test_resnet_streams_average_over_every_writer():
    spec = get_arch("resnet8")
    template = graph_template(ParamLayout.from_module(spec.build()), spec)
    plan = dense_plan(template)
    shared = [s for s in plan.incoming if len(s.blocks) > 1]
    assert shared  # the stem and conv2 write the same stream nodes
    for segment in shared:
        assert segment.count == sum(plan.blocks[i].n_in for i in segment.blocks)


def test_edges_that_are_not_dense_blocks_fall_back_to_message_passing():
    spec = get_arch("mlp-digits")
    template = graph_template(ParamLayout.from_module(spec.build()), spec)
    order = torch.arange(template.num_edges)
    order[:2] = torch.tensor([1, 0])  # two edges of the first tensor swapped: not row-major any more
    swapped = dataclasses.replace(template, edge_index=template.edge_index[:, order])
    assert dense_plan(template) is not None and dense_plan(swapped) is None
    missing = dataclasses.replace(template, edge_index=template.edge_index[:, 1:], edge_kind=template.edge_kind[1:],
                                  edge_gather=template.edge_gather[1:])
    assert dense_plan(missing) is None
