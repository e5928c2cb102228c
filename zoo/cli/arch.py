"""``symzoo arch list|describe|symmetry``: inspect architectures and check their symmetries."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from zoo.cli import print_json
from zoo.layout import ParamLayout
from zoo.nets import PRESETS, VARIANTS, ArchSpec, get_arch
from zoo.symmetry import symmetry_deviation

# A standard network's outputs must not move more than this under a hidden-unit permutation
# (the check runs in float64, where an exact symmetry shows as ~1e-15).
SYMMETRY_TOLERANCE = 1e-5


def register(commands: argparse._SubParsersAction) -> None:
    arch = commands.add_parser("arch", help="list, describe and check architectures")
    sub = arch.add_subparsers(dest="arch_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="the architecture presets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_list)

    def add_arch_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("arch", metavar="ARCH", help="preset name, or a .yaml/.json architecture spec file")
        p.add_argument("--variant", choices=VARIANTS, default=None,
                       help="standard (default for presets), w_asym or sigma_asym")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("describe", help="parameter counts and the tensor layout")
    add_arch_args(p)
    p.set_defaults(handler=_describe)

    p = sub.add_parser("symmetry", help="apply random hidden-unit permutations and measure the output change")
    add_arch_args(p)
    p.add_argument("--trials", type=int, default=5, help="random permutations to try (default 5)")
    p.add_argument("--batch", type=int, default=32, help="random inputs per check (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the network init, inputs and permutations")
    p.set_defaults(handler=_symmetry)


def _spec(args: argparse.Namespace) -> ArchSpec:
    return get_arch(args.arch, args.variant)


def _counts(layout: ParamLayout) -> dict[str, int]:
    return {"total_params": layout.size, "trainable_params": layout.num_trainable, "fixed_params": layout.num_fixed}


def _list(args: argparse.Namespace) -> int:
    rows = []
    for name, preset in PRESETS.items():
        counts = {v: ParamLayout.from_module(preset.spec.with_variant(v).build()) for v in VARIANTS}
        rows.append({
            "name": name,
            "family": preset.spec.family,
            "description": preset.description,
            "params": {v: _counts(layout) for v, layout in counts.items()},
        })
    if args.json:
        print_json({"architectures": rows})
        return 0
    print(f"{'name':<15}{'family':<8}{'params':>10}{'w_asym trainable':>18}  description")
    for row in rows:
        p = row["params"]
        print(f"{row['name']:<15}{row['family']:<8}{p['standard']['total_params']:>10,}"
              f"{p['w_asym']['trainable_params']:>18,}  {row['description']}")
    print("\nvariants: " + ", ".join(VARIANTS) + "; details: symzoo arch describe NAME [--variant V]")
    return 0


def _describe(args: argparse.Namespace) -> int:
    spec = _spec(args)
    layout = ParamLayout.from_module(spec.build())
    report: dict[str, Any] = {
        "arch": args.arch,
        "family": spec.family,
        "variant": spec.variant,
        **_counts(layout),
        "input_shape": list(spec.input_shape()),
        "tensors": [
            {"name": s.name, "shape": list(s.shape), "numel": s.numel, "fixed": s.fixed, "offset": s.offset}
            for s in layout.slots
        ],
        "spec": spec.to_dict(),
    }
    if args.json:
        print_json(report)
        return 0
    print(f"{args.arch} ({spec.family}, {spec.variant}), input {tuple(spec.input_shape())}")
    print(layout.table())
    print(f"total {layout.size:,} = trainable {layout.num_trainable:,} + fixed {layout.num_fixed:,}")
    return 0


def _symmetry(args: argparse.Namespace) -> int:
    spec = _spec(args)
    model = spec.build(init_seed=args.seed)
    generator = torch.Generator()
    generator.manual_seed(args.seed)
    inputs = torch.randn(args.batch, *spec.input_shape(), generator=generator)
    deviations = symmetry_deviation(model, inputs, trials=args.trials, seed=args.seed)
    worst = max(deviations)
    holds = worst <= SYMMETRY_TOLERANCE
    if args.json:
        print_json({
            "arch": args.arch,
            "variant": spec.variant,
            "trials": args.trials,
            "max_rel_deviation": worst,
            "deviations": deviations,
            "tolerance": SYMMETRY_TOLERANCE,
            "symmetry_holds": holds,
        })
        return 0
    verdict = "the permutation symmetry holds" if holds else "the permutation symmetry is broken"
    print(f"{args.arch} ({spec.variant}): max relative output deviation over {args.trials} random "
          f"hidden-unit permutations = {worst:.3g} -> {verdict}")
    return 0
