import pytest
import torch

from metanets.registry import MetanetContext, get_metanet
from tests.helpers import fit, permuted_networks
from zoo import ParamLayout, get_arch, permutation_spec
from zoo.graph import INPUT, OUTPUT, graph_template, to_graphs


def template_of(arch: str, variant: str = "standard"):
    spec = get_arch(arch, variant)
    model = spec.build()
    layout = ParamLayout.from_module(model)
    return model, layout, graph_template(layout, spec)


def gmn(arch: str) -> torch.nn.Module:
    spec = get_arch(arch)
    layout = ParamLayout.from_module(spec.build())
    torch.manual_seed(0)
    return get_metanet("gmn").build(MetanetContext(layout.size, layout, spec))


def test_mlp_digits_graph_has_one_node_per_unit_and_one_edge_per_weight():
    model, layout, template = template_of("mlp-digits")
    assert template.num_nodes == 64 + 32 + 32 + 10
    assert template.num_edges == 64 * 32 + 32 * 32 + 32 * 10
    assert (template.edge_features, template.node_features) == (1, 1)
    graphs = to_graphs(torch.stack([layout.flatten(model)] * 3), template)
    assert graphs.num_graphs == 3 and graphs.x.shape == (3 * 138, 1)
    head = model.head.weight  # edge from hidden unit j (of blocks.1) to output i
    start = dict(zip(template.node_sets, [0, 64, 96, 128]))
    src, dst = template.edge_index
    k = int(((src == start["blocks.1"] + 5) & (dst == start[OUTPUT] + 2)).nonzero())
    assert graphs.edge_attr[k, 0] == head[2, 5]
    assert torch.equal(graphs.x[start[OUTPUT] : start[OUTPUT] + 10, 0], model.head.bias.detach())
    assert torch.equal(graphs.x[: 64, 0], torch.zeros(64))  # inputs have no features


def test_cnn_mnist_graph_pads_linear_weights_to_the_kernel_centre():
    model, layout, template = template_of("cnn-mnist")
    assert template.num_nodes == 1 + 3 * 16 + 10
    assert template.num_edges == 1 * 16 + 2 * 16 * 16 + 16 * 10
    assert template.edge_features == 9
    graphs = to_graphs(layout.flatten(model), template)
    kinds = graphs.edge_kind
    conv = graphs.edge_attr[kinds == template.edge_tensors.index("blocks.1.layer.weight")]
    assert torch.equal(conv, model.blocks[1].layer.weight.detach().reshape(16 * 16, 9))
    head = graphs.edge_attr[kinds == template.edge_tensors.index("head.weight")]
    assert torch.equal(head[:, 4], model.head.weight.detach().reshape(-1))
    assert torch.count_nonzero(head[:, [0, 1, 2, 3, 5, 6, 7, 8]]) == 0


def test_resnet8_residual_streams_share_nodes():
    model, layout, template = template_of("resnet8")
    spec = permutation_spec(model)
    assert template.num_nodes == 3 + sum(spec.sizes.values()) + 10
    assert template.node_sets == (INPUT, *spec.sizes, OUTPUT)
    assert template.node_sets[1] == "stream.0"
    src, dst = template.edge_index
    kinds = template.edge_kind
    stream = range(3, 3 + spec.sizes["stream.0"])  # the first node set after the 3 inputs
    # the stem writes and block 0.0's conv2 writes into the same stream nodes that conv1 reads
    for writer in ("stem.layer.weight", "stages.0.0.conv2.weight"):
        targets = dst[kinds == template.edge_tensors.index(writer)].unique()
        assert targets.tolist() == list(stream)
    assert src[kinds == template.edge_tensors.index("stages.0.0.conv1.weight")].unique().tolist() == list(stream)
    # a stream node carries its norms: stem.norm and stages.0.0.norm2 (weight, bias each)
    assert template.node_features == 4
    assert bool((template.node_gather[list(stream)] >= 0).all())


@pytest.mark.parametrize("variant", ["w_asym", "sigma_asym"])
def test_variants_have_the_standard_graph(variant):
    _, _, standard = template_of("resnet8")
    _, _, other = template_of("resnet8", variant)
    assert torch.equal(standard.edge_index, other.edge_index)
    assert other.num_edges == standard.num_edges and other.edge_features == standard.edge_features


@pytest.mark.parametrize("arch", ["mlp-digits", "cnn-mnist", "resnet8"])
def test_gmn_is_invariant_to_hidden_unit_permutations(arch):
    _, x, x_perm = permuted_networks(get_arch(arch), n=2)
    assert not torch.equal(x, x_perm)
    model = gmn(arch).eval()
    with torch.no_grad():
        out, out_perm = model(x), model(x_perm)
    assert out.shape == (2,)
    assert torch.allclose(out, out_perm, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_gmn_trains_on_a_batch_of_graphs():
    model = gmn("mlp-digits")
    spec = get_arch("mlp-digits")
    layout = ParamLayout.from_module(spec.build())
    weights = torch.stack([layout.flatten(spec.build(init_seed=i)) for i in range(4)])
    targets = torch.tensor([0.2, -0.5, 1.0, 0.3])
    losses = fit(model, weights, targets)
    # below what predicting the mean achieves: the model tells the four networks apart
    assert losses[-1] < 0.1 * losses[0] and losses[-1] < 0.2 * targets.var(unbiased=False).item()
