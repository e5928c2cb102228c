"""``symzoo metanet train|predict``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from metanets.checkpoint import CHECKPOINT_FILE, CheckpointError, MetanetCheckpoint
from metanets.config import TARGETS, MetanetConfig
from metanets.features import load_features
from metanets.metrics import evaluate
from metanets.registry import METANETS, get_metanet
from metanets.train import train_metanet
from zoo.cli import can_write_in, print_json
from zoo.errors import SpecError, interrupted_keeps
from zoo.storage import SPLITS, open_zoo
from zoo.storage.files import atomic_write_text


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MetanetConfig)}


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("metanet", help="train metanets that predict a zoo's accuracies from weights")
    sub = group.add_subparsers(dest="metanet_command", metavar="ACTION", required=True)

    p = sub.add_parser("train", help="learning-rate search + K seeds; R² and Kendall τ",
                       description="Train a metanet to predict a property of each network of a zoo from its "
                                   "weights, on the zoo's train split: the learning rate is chosen by validation "
                                   "R², then --seeds runs report test R² and Kendall τ at their best-validation epoch.")
    p.add_argument("--zoo", required=True, metavar="DIR", help="the zoo to train and evaluate on")
    p.add_argument("--model", required=True, help="the metanet: " + ", ".join(METANETS))
    p.add_argument("--target", default="test_acc", choices=TARGETS, help="what to predict (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=_DEFAULTS["seeds"], help="training runs at the chosen learning rate (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=_DEFAULTS["epochs"], help="epochs per run (default: %(default)s)")
    p.add_argument("--lrs", type=float, nargs="+", help="learning-rate grid (default: the paper's, "
                   f"{' '.join(f'{lr:g}' for lr in _DEFAULTS['lrs'])})")
    p.add_argument("--include-diverged", action="store_true", help="keep diverged networks (default: left out, counted)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="standardise inputs with train-split statistics, per weight tensor "
                        "(default: the metanet's protocol: on for statnn and gmn)")
    p.add_argument("--sigmoid", action=argparse.BooleanOptionalAction,
                   help="bound predictions to (0, 1) (accuracy targets; default: the metanet's protocol: on for gmn and nfn, as their authors train them)")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N",
                   help="raise the learning rate linearly over the first N steps")
    p.add_argument("--augment", action="store_true",
                   help="permute each network's hidden units at random in every training batch")
    p.add_argument("--out", metavar="DIR", help="where results go (default ZOO/metanets/MODEL-TARGET)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=_train)

    p = sub.add_parser("predict", help="score a zoo with a trained metanet",
                       description="Score every split of a zoo with a metanet written by 'metanet train' (R² and "
                                   "Kendall τ per split), with the train-split normalisation it was trained with.")
    p.add_argument("--metanet", required=True, metavar="FILE", help=f"{CHECKPOINT_FILE} written by metanet train")
    p.add_argument("--zoo", required=True, metavar="DIR", help="a zoo of the architecture and variant it was trained on")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.set_defaults(handler=_predict)


def _train(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"target": args.target, "seeds": args.seeds, "epochs": args.epochs,
                               "include_diverged": args.include_diverged, "normalize": args.normalize,
                               "sigmoid": args.sigmoid, "augment": args.augment, "warmup_steps": args.warmup_steps}
    if args.lrs:
        options["lrs"] = tuple(args.lrs)
    config = MetanetConfig(model=args.model, **options)
    out = Path(args.out) if args.out else Path(args.zoo) / "metanets" / f"{args.model}-{args.target}"
    if not can_write_in(out):  # said now, not after the training it would throw away
        raise SpecError(f"{out}: cannot write the results there (read-only, or not a folder); "
                        "pass --out DIR to put them elsewhere")
    with interrupted_keeps(f"nothing is written to {out} until training ends; run the same command again"):
        run = train_metanet(args.zoo, config, quiet=args.quiet)
    result, state, features = run.summary, run.best_state, run.features
    out.mkdir(parents=True, exist_ok=True)
    MetanetCheckpoint(config, result["input_dim"], result["view"], state, features.normalizer,
                      str(args.zoo), features.arch.to_dict()).save(out / CHECKPOINT_FILE)
    model = features.build(config.sigmoid)
    model.load_state_dict(state)
    pred, shown = evaluate(model, features, "test")
    seeds = f"the best-validation seed of {config.seeds}" if config.seeds > 1 else "1 seed"
    _scatter(pred, features.targets["test"].numpy(), out / "scatter.png",
             f"{args.model} on {Path(args.zoo).name}, {len(pred):,} test models ({seeds}):\n"
             f"R² {shown['r2']:.3f}, Kendall τ {shown['kendall_tau']:.3f}", args.target)
    result["files"] = {"results": str(out / "results.json"), "scatter": str(out / "scatter.png"),
                       "metanet": str(out / CHECKPOINT_FILE)}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    if args.json:
        print_json(result)
    else:
        print(f"{args.model} on {args.zoo} ({result['target']}, lr {result['lr']:g}, {config.seeds} seeds, "
              f"{result['excluded_diverged']} diverged models excluded)")
        for split in ("val", "test"):
            print(f"  {split:<5} R² {result[split]['r2']:.4f}   Kendall τ {result[split]['kendall_tau']:.4f}")
        print(f"  wrote {out}/results.json, scatter.png, {CHECKPOINT_FILE}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    saved = MetanetCheckpoint.load(args.metanet)
    config = saved.config
    entry = get_metanet(config.model)
    zoo = open_zoo(args.zoo)
    features = load_features(zoo, entry, config.target, config.include_diverged, saved.normalizer,
                             normalize=False)  # only the saved normalizer: the train split's, not this zoo's
    mismatch = _arch_mismatch(saved.arch, zoo.spec.to_dict())
    if features.input_dim != saved.input_dim:
        raise SpecError(f"{args.zoo}: the metanet reads {saved.input_dim} inputs but this zoo gives {features.input_dim}"
                        f"{f' ({mismatch})' if mismatch else ''}; predict on a zoo of the architecture and variant "
                        "it was trained on")
    if mismatch:
        print(f"symzoo: warning: {mismatch}; the scores measure transfer to another kind of network", file=sys.stderr)
    model = features.build(config.sigmoid)
    try:
        model.load_state_dict(saved.state_dict)
    except RuntimeError:  # torch's message spans many lines; the names do not help the user
        raise CheckpointError.for_file(args.metanet, f"its weights do not fit a {config.model} metanet of "
                                                     f"{saved.input_dim} inputs") from None
    report = {"metanet": args.metanet, "zoo": args.zoo, "model": config.model, "target": config.target,
              **{split: evaluate(model, features, split)[1] for split in SPLITS if len(features.targets[split]) > 1}}
    if args.json:
        print_json(report)
    else:
        for split in SPLITS:
            if split in report:
                print(f"{split:<11} R² {report[split]['r2']:.4f}   Kendall τ {report[split]['kendall_tau']:.4f}")
    return 0


def _arch_mismatch(trained: dict[str, Any] | None, here: dict[str, Any]) -> str | None:
    """How the zoo a metanet was trained on differs from ``here``, in words; ``None`` when it does
    not (or when the metanet file predates recording it)."""
    if trained is None or trained == here:
        return None
    if trained.get("variant") != here.get("variant"):
        return f"it was trained on a {trained.get('variant')} zoo, this zoo is {here.get('variant')}"
    return f"it was trained on a {trained.get('family')} zoo of another architecture than this {here.get('family')} zoo"


def _scatter(pred: np.ndarray, true: np.ndarray, path: Path, title: str, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(true, pred, s=8, alpha=0.6)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
