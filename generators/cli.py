"""``symzoo generate``."""

from __future__ import annotations

import argparse
import dataclasses

from generators.zoospec import ZOO_PRESETS, get_zoo_spec, load_zoo_spec
from zoo.cli import print_json
from zoo.errors import SpecError
from zoo.nets import VARIANTS


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("generate", help="train a zoo of networks into shards (resumable)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help=f"zoo preset: {', '.join(ZOO_PRESETS)}")
    source.add_argument("--config", metavar="FILE", help="zoo spec YAML file")
    p.add_argument("--out", required=True, metavar="DIR", help="zoo directory (re-running resumes it)")
    p.add_argument("--n-models", type=int, help="number of models (grows or resumes the zoo)")
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--batch-models", type=int, metavar="M", help="models trained together per step")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--seed", type=int, help="zoo seed")
    p.add_argument("--data-dir", metavar="D", help="folder with the data set files (else $SYMZOO_DATA)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from generators.generate import generate

    if args.engine == "ray":
        raise SpecError("--engine ray is not available yet; use --engine local")
    spec = get_zoo_spec(args.preset) if args.preset else load_zoo_spec(args.config)
    overrides = {"n_models": args.n_models, "variant": args.variant, "batch_models": args.batch_models, "seed": args.seed}
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    report = generate(spec, args.out, device=args.device, data_dir=args.data_dir, quiet=args.quiet,
                      autocast_bf16=args.bf16)
    summary = {"zoo": str(report.out), "trained": report.trained, "already_stored": report.skipped,
               "diverged": report.diverged, "seconds": round(report.seconds, 2),
               "models_per_hour": round(report.models_per_hour, 1) if report.trained else None}
    if args.json:
        print_json(summary)
    else:
        print(f"{report.out}: trained {report.trained} models ({report.skipped} already stored, "
              f"{report.diverged} diverged) in {report.seconds:.1f} s")
    return 0
