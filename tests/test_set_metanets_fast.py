"""DeepSets' closed-form pooling and DMC's fast path compute the same function as evaluating the
modules directly (issue 16): same outputs, gradients equal to float rounding."""

import copy

import pytest
import torch
import torch.nn.functional as F

from metanets.models import DMC, DeepSets, _Conv1d, _PairMax


def max_relative_grad_error(model: torch.nn.Module, reference: torch.nn.Module) -> float:
    errors = []
    for a, b in zip(model.parameters(), reference.parameters()):
        scale = b.grad.double().abs().max().clamp_min(1e-12)
        errors.append(float((a.grad.double() - b.grad.double()).abs().max() / scale))
    return max(errors)


def weight_sets() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "gaussian": torch.randn(6, 3466, generator=g) * 0.3,
        "ties": torch.randint(-3, 4, (4, 500), generator=g).float() * 0.1,  # many equal weights
        "constant rows": torch.full((2, 50), 0.7),
        "one element": torch.randn(3, 1, generator=g),
        "large and one-signed": torch.rand(3, 300, generator=g) * 100,
        "zeros": torch.zeros(2, 10),
    }


def perturb(model: DeepSets, seed: int) -> None:
    """Away from the initialisation, where LayerNorm's bias is zero (a degenerate case of its own)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.phi.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)


@pytest.mark.parametrize("perturbed", [False, True])
@pytest.mark.parametrize("case", list(weight_sets()))
def test_deepsets_closed_form_matches_phi_on_every_weight(case, perturbed):
    x = weight_sets()[case]
    torch.manual_seed(0)
    fast = DeepSets()
    if perturbed:
        perturb(fast, seed=len(case))
    reference = copy.deepcopy(fast).double()
    reference.closed_form = False
    out, out_ref = fast(x), reference(x.double())
    assert fast.closed_form and out.dtype == torch.float32
    assert torch.allclose(out.double(), out_ref, atol=1e-5, rtol=0)
    (out * torch.arange(1.0, len(x) + 1)).sum().backward()
    (out_ref * torch.arange(1.0, len(x) + 1)).sum().backward()
    assert max_relative_grad_error(fast, reference) < 1e-4


def test_deepsets_float32_paths_agree_and_channels_keep_the_direct_path():
    torch.manual_seed(1)
    fast, direct = DeepSets(), DeepSets(closed_form=False)
    direct.load_state_dict(fast.state_dict())
    x = torch.randn(8, 3466) * 0.2
    assert torch.allclose(fast(x), direct(x), atol=1e-5, rtol=0)
    assert torch.allclose(fast(x[:, None, :]), fast(x), atol=0, rtol=0)
    assert not DeepSets(in_channels=4).closed_form  # Linear(4, h) has no scalar closed form
    assert sum(p.numel() for p in fast.parameters()) == 8_897


def test_pair_max_is_max_pool_including_ties_and_odd_lengths():
    g = torch.Generator().manual_seed(0)
    for length in (8, 9, 101):
        x = torch.randint(-2, 3, (3, 4, length), generator=g).float().requires_grad_()
        grad = torch.randn(3, 4, length // 2, generator=g)
        ours, theirs = _PairMax.apply(x), F.max_pool1d(x, 2)
        assert torch.equal(ours, theirs)
        assert torch.equal(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0])


def test_conv1d_backward_matches_pytorch():
    g = torch.Generator().manual_seed(0)
    for c_in, c_out in ((1, 2), (2, 4), (8, 16)):
        x = torch.randn(5, c_in, 40, generator=g, requires_grad=True)
        w = torch.randn(c_out, c_in, 5, generator=g, requires_grad=True)
        b = torch.randn(c_out, generator=g, requires_grad=True)
        grad = torch.randn(5, c_out, 36, generator=g)
        ours = torch.autograd.grad(_Conv1d.apply(x, w, b), (x, w, b), grad)
        theirs = torch.autograd.grad(F.conv1d(x, w, b), (x, w, b), grad)
        for a, t in zip(ours, theirs):
            assert torch.allclose(a, t, atol=1e-4, rtol=1e-5)


def test_dmc_fast_path_trains_and_evaluates_like_the_modules():
    torch.manual_seed(0)
    fast = DMC(eval_chunk=3)
    slow = DMC(fast=False)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(8, 3466) * 0.3
    x[:, 1000:1200] = 0.0  # ties after ReLU and in the pooling
    out, out_slow = fast(x), slow(x)
    assert torch.allclose(out, out_slow, atol=1e-5, rtol=0)
    (out**2).sum().backward()
    (out_slow**2).sum().backward()
    assert max_relative_grad_error(fast, slow) < 1e-4
    for a, b in zip(fast.buffers(), slow.buffers()):  # BatchNorm's running statistics
        assert torch.allclose(a.double(), b.double(), atol=1e-6, rtol=1e-6)
    fast.eval(), slow.eval()
    with torch.no_grad():  # eval mode: 8 rows in chunks of 3
        assert torch.allclose(fast(x), slow(x), atol=1e-5, rtol=0)


def test_deepsets_closed_form_on_random_parameters_and_degenerate_cases():
    """Random scales of weights and parameters, zero biases (roots at w = 0) and rounded weights
    (weights exactly at a root of g, where ReLU's gradient is zero)."""
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        fast = DeepSets(hidden=16)
        with torch.no_grad():
            for p in fast.phi.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 10 ** (torch.rand(1, generator=g).item() * 4 - 2))
            if seed % 3 == 0:
                fast.phi[1].bias.zero_()
            if seed % 4 == 0:
                fast.phi[0].bias.zero_()
        reference = copy.deepcopy(fast).double()
        reference.closed_form = False
        scale = 10 ** (torch.rand(1, generator=g).item() * 4 - 2)
        x = (torch.randn(3, 200, generator=g) + torch.randn(3, 1, generator=g)) * scale
        x = x.round() if seed % 2 == 0 else x
        out, out_ref = fast(x), reference(x.double())
        tolerance = 1e-5 * max(1.0, float(out_ref.detach().abs().max()))
        assert torch.allclose(out.double(), out_ref, atol=tolerance, rtol=0), seed
        out.sum().backward()
        out_ref.sum().backward()
        assert max_relative_grad_error(fast, reference) < 1e-4, seed
