"""Masks, fixed values and FiGLU matrices depend only on explicit seeds, in any process."""

import hashlib
import json
import os
import subprocess
import sys

import torch

from zoo import get_arch
from zoo.seeding import derive_seed

ARCHS = ("resnet8", "resnet20", "mlp-mnist-lmc", "mlp-digits", "cnn-mnist")


def fingerprints(arch: str, variant: str) -> dict[str, str]:
    """sha256 of every mask, fixed-value tensor and FiGLU matrix of a freshly built network."""
    model = get_arch(arch, variant).build(init_seed=0)
    out = {}
    for name, buffer in model.named_buffers():
        out[name] = hashlib.sha256(buffer.contiguous().numpy().tobytes()).hexdigest()
    return out


def all_fingerprints() -> dict[str, dict[str, str]]:
    return {f"{a}/{v}": fingerprints(a, v) for a in ARCHS for v in ("w_asym", "sigma_asym")}


def test_asym_tensors_are_bit_identical_in_another_process():
    here = all_fingerprints()
    assert all(here.values())
    script = "import json, tests.test_seeds as t; print(json.dumps(t.all_fingerprints()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash salt must not matter
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(__file__)), check=True)
    assert json.loads(result.stdout) == here


def test_asym_seed_changes_masks_and_init_seed_does_not():
    spec = get_arch("mlp-digits", "w_asym")
    a, b = spec.build(init_seed=0), spec.build(init_seed=1)
    assert torch.equal(a.head.mask, b.head.mask) and torch.equal(a.head.fixed_values, b.head.fixed_values)
    assert not torch.equal(a.head.weight, b.head.weight)
    import dataclasses

    c = dataclasses.replace(spec, asym_seed=1).build(init_seed=0)
    assert not torch.equal(a.head.mask, c.head.mask)


def test_init_seed_determines_weights_and_leaves_global_rng_alone():
    spec = get_arch("cnn-mnist")
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = spec.build(init_seed=5)
    assert torch.equal(torch.rand(1), expected_next)  # global RNG untouched by build()
    b = spec.build(init_seed=5)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name


def test_variants_share_trainable_initial_values():
    standard = get_arch("resnet8").build(init_seed=3).state_dict()
    w_asym_model = get_arch("resnet8", "w_asym").build(init_seed=3)
    sigma = get_arch("resnet8", "sigma_asym").build(init_seed=3).state_dict()
    w_asym = w_asym_model.state_dict()
    head = w_asym_model.head
    assert torch.equal(w_asym["head.weight"][head.mask], standard["head.weight"][head.mask])
    for name, tensor in standard.items():
        assert torch.equal(sigma[name], tensor), name


def test_derive_seed_depends_on_every_key():
    seeds = {derive_seed(0, "a"), derive_seed(1, "a"), derive_seed(0, "b"), derive_seed(0, "a", "mask")}
    assert len(seeds) == 4
    assert all(0 <= s < 2**63 for s in seeds)
