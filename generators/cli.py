"""``symzoo generate``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from generators.data import DATA_DIR_HELP
from generators.zoospec import ZOO_PRESETS, get_zoo_spec, load_zoo_spec
from zoo.cli import models_kept, print_json
from zoo.errors import SpecError, SymzooError, interrupted_keeps, os_error_message
from zoo.nets import VARIANTS

if TYPE_CHECKING:
    from generators.engines import Engine


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("generate", help="train a zoo of networks into shards (resumable)",
                            description="Train a zoo of networks (each with its own sampled hyperparameters) and store "
                                        "them in checksummed shards. Re-running the same command resumes the zoo; a "
                                        "larger --n-models grows it. Unset options take the preset's or config's value.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help=f"zoo preset: {', '.join(ZOO_PRESETS)}")
    source.add_argument("--config", metavar="FILE", help="zoo spec YAML file")
    p.add_argument("--out", required=True, metavar="DIR", help="zoo directory (re-running resumes it)")
    p.add_argument("--n-models", type=int, metavar="N", help="number of models (default: the preset's, "
                   "e.g. 1000 for digits-mlp); re-running with more grows the zoo")
    p.add_argument("--variant", choices=VARIANTS, help="standard, w_asym or sigma_asym (default: the preset's, standard)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--batch-models", type=int, metavar="M", help="models trained together per step "
                   "and per shard (default: the preset's, e.g. 128 for digits-mlp)")
    p.add_argument("--workers", type=int, metavar="N", help="--engine local: worker processes (default: one per "
                   "CPU core with one torch thread each, or one per GPU)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: shards one after another here; ray: one Ray task per shard (in a clone: pip install -e '.[ray]')")
    p.add_argument("--address", metavar="ADDR", help="--engine ray: the Ray cluster (host:port, ray://host:10001, "
                   "auto); default: $RAY_ADDRESS or a cluster started here with `ray start`, else a new local "
                   "instance; 'local' always starts a new one")
    p.add_argument("--gpus-per-shard", type=float, metavar="G", help="--engine ray: GPUs per shard task, a "
                   "fraction packs shards on one GPU (default: 1 with --device cuda or on a cluster with GPUs, else 0)")
    p.add_argument("--cpus-per-shard", type=float, metavar="C", help="--engine ray: CPU cores (torch threads) per shard task (default 1)")
    p.add_argument("--max-retries", type=int, metavar="N", help="--engine ray: retries of a shard whose worker "
                   "dies or that raises (default 3)")
    p.add_argument("--seed", type=int, help="zoo seed: model i's hyperparameters and init depend only on it and i, "
                   "so zoos of different variants with one seed are paired row by row (default: the preset's, 0)")
    p.add_argument("--data-dir", metavar="D", help=DATA_DIR_HELP)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from generators.generate import generate

    engine = _engine(args)
    spec = get_zoo_spec(args.preset) if args.preset else load_zoo_spec(args.config)
    overrides = {"n_models": args.n_models, "variant": args.variant, "batch_models": args.batch_models, "seed": args.seed}
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    try:
        with interrupted_keeps(lambda: models_kept(args.out)):  # Ctrl-C: the models listed so far stay
            report = generate(spec, args.out, device=args.device, data_dir=args.data_dir, quiet=args.quiet,
                              autocast_bf16=args.bf16, engine=engine)
    except OSError as err:  # e.g. a full disk, whose errors name no file: name the zoo
        raise SymzooError(os_error_message(err, args.out)) from None
    summary = {"zoo": str(report.out), "trained": report.trained, "already_stored": report.skipped,
               "diverged": report.diverged, "seconds": round(report.seconds, 2),
               "models_per_hour": round(report.models_per_hour, 1) if report.trained else None}
    if args.json:
        print_json(summary)
    else:
        print(f"{report.out}: trained {report.trained} models ({report.skipped} already stored, "
              f"{report.diverged} diverged) in {report.seconds:.1f} s")
    return 0


_RAY_OPTIONS = {"address": "--address", "gpus_per_shard": "--gpus-per-shard", "cpus_per_shard": "--cpus-per-shard",
                "max_retries": "--max-retries"}


def _engine(args: argparse.Namespace) -> Engine:
    """The engine the flags ask for (imported here: ``symzoo --help`` must not load torch or Ray)."""
    from generators.engines import LocalEngine

    given = {field: getattr(args, field) for field in _RAY_OPTIONS if getattr(args, field) is not None}
    if args.engine == "local":
        if given:
            raise SpecError(f"{', '.join(_RAY_OPTIONS[f] for f in given)}: only used with --engine ray")
        return LocalEngine(workers=args.workers)
    if args.workers is not None:
        raise SpecError("--workers: only used with --engine local (Ray places shards itself)")
    from generators.ray_engine import RayEngine

    return RayEngine(**given)
