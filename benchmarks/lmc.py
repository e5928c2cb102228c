"""``symzoo bench lmc``: linear mode connectivity of independently trained pairs (docs/PAPER.md §4).

Per variant, ``2·pairs`` networks are trained together by the batched trainer: pair ``k`` is
models ``2k`` and ``2k+1``, with different seeds (init and data order) but the zoo's masks and
FiGLU matrices, and the same seeds in every variant. Each pair is interpolated on the test set;
standard pairs are also interpolated after Git Re-Basin weight matching. Trained weights are
saved, so a re-run only re-evaluates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.report import (add_run_options, environment, images_text, log, print_report, pyplot, save_figure,
                               summary, summary_text)
from generators.data import DATASETS, ImageData, load_images
from generators.recipe import Augment, Recipe, TrainJob
from generators.trainer import train_batched
from zoo.device import resolve_device
from zoo.errors import SpecError
from zoo.interpolation import InterpolationCurve, interpolate, path_alphas
from zoo.layout import ParamLayout
from zoo.matching import weight_matching
from zoo.nets import VARIANTS, check_variant, get_arch
from zoo.storage.files import atomic_write, atomic_write_text
from zoo.symmetry import permutation_spec, permute_state_dict

__all__ = ["LMCSetting", "LMC_SETTINGS", "lmc_setting", "run_lmc", "REBASIN"]

REBASIN = "standard+rebasin"

# The paper's Table 1 (midpoint barrier of the test loss), for the report.
PAPER_TABLE1 = {
    "mlp-mnist-lmc": {"standard": 0.188, REBASIN: -0.006, "sigma_asym": 0.117, "w_asym": -0.012},
    "resnet20": {"standard": 3.287, REBASIN: 2.041, "sigma_asym": 2.521, "w_asym": 0.934},
}


@dataclass(frozen=True)
class LMCSetting:
    """What to train and interpolate. One learning rate and weight decay for every model: only
    the seeds differ within a pair."""

    arch: str
    dataset: str
    epochs: int
    lr: float
    weight_decay: float
    recipe: Recipe
    pairs: int = 3
    train_subset: int | None = None
    points: int = 25
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS

    def __post_init__(self) -> None:
        if self.pairs <= 0 or self.epochs <= 0:
            raise SpecError(f"--pairs and --epochs must be positive, got {self.pairs} and {self.epochs}")
        if self.dataset not in DATASETS:
            raise SpecError(f"--dataset '{self.dataset}' is unknown; expected one of {', '.join(DATASETS)}")
        for variant in self.variants:
            check_variant(variant, source="--variants")
        try:
            path_alphas(self.points)
        except ValueError as err:
            raise SpecError(f"--points: {err}") from None
        get_arch(self.arch)  # unknown architecture -> one-line error before any work

    def describe(self, train_images: int | None = None) -> str:
        """The recipe in one line; ``train_images`` (the data set's training images, when known)
        makes it state how many images are actually trained on."""
        r = self.recipe
        schedule = "no schedule" if r.schedule == "constant" else f"triangular schedule peaking at {r.peak_epoch or r.peak_fraction}"
        augment = ", augmentation " + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(r.augment).items() if v) if r.augment.active else ""
        return (f"AdamW lr {self.lr:g}, wd {self.weight_decay:g}, batch {r.batch_size}, {schedule}{augment}, "
                f"{self.epochs} epochs on {images_text(self.train_subset, train_images, 'training')}")

    def training_key(self) -> str:
        """What determines the trained networks: every field but the evaluation's ``points`` and
        the ``variants`` list (each variant is saved on its own), so changing those re-evaluates
        without retraining."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("points", "variants")}
        return json.dumps(fields, sort_keys=True, default=str)

    def jobs(self) -> list[TrainJob]:
        return [TrainJob(index=i, seed=self.seed * 1_000_003 + i, lr=self.lr, weight_decay=self.weight_decay,
                         label_smoothing=0.0, epochs=self.epochs) for i in range(2 * self.pairs)]


_MNIST_PAPER = dict(arch="mlp-mnist-lmc", dataset="mnist", lr=1e-3, weight_decay=0.03,
                    recipe=Recipe(batch_size=64, schedule="constant"))

# Named recipes per architecture: ``paper`` is the paper's (a GPU job), ``cpu`` a reduced one for
# 2 CPU cores (fewer images and epochs, same optimiser). The ResNet20 recipe is ours (docs/PAPER.md
# gives none): AdamW with the zoo's triangular schedule and augmentation, longer.
LMC_SETTINGS: dict[tuple[str, str], LMCSetting] = {
    ("mlp-mnist-lmc", "paper"): LMCSetting(**_MNIST_PAPER, epochs=25),
    ("mlp-mnist-lmc", "cpu"): LMCSetting(**_MNIST_PAPER, epochs=10, train_subset=10_000),
    ("resnet20", "paper"): LMCSetting(arch="resnet20", dataset="cifar10", epochs=50, lr=2e-3, weight_decay=5e-4,
                                      recipe=Recipe(batch_size=128, peak_fraction=0.2, augment=Augment(flip=True, translate=2))),
    ("resnet20", "cpu"): LMCSetting(arch="resnet20", dataset="cifar10", epochs=5, lr=2e-3, weight_decay=5e-4, train_subset=10_000,
                                    recipe=Recipe(batch_size=128, peak_fraction=0.2, augment=Augment(flip=True, translate=2))),
}


def lmc_setting(arch: str, recipe: str, **overrides: Any) -> LMCSetting:
    """The named setting of ``arch`` (or, for other architectures, the MNIST recipe on ``dataset``)
    with ``overrides`` (fields of :class:`LMCSetting`; ``None`` values are ignored)."""
    if recipe not in ("paper", "cpu"):
        raise SpecError(f"--recipe '{recipe}' is unknown; expected paper, cpu or auto")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    base = LMC_SETTINGS.get((arch, recipe))
    if base is None:
        if "dataset" not in overrides:
            known = ", ".join(sorted({a for a, _ in LMC_SETTINGS}))
            raise SpecError(f"--arch {arch} has no LMC recipe; give --dataset (then the MNIST recipe applies) or use {known}")
        base = dataclasses.replace(LMC_SETTINGS[("mlp-mnist-lmc", recipe)], arch=arch)
    return dataclasses.replace(base, **overrides)


# -- training -------------------------------------------------------------------------------------
def _train_variant(setting: LMCSetting, variant: str, data: ImageData, out: Path, device: torch.device,
                   quiet: bool) -> dict[str, Any]:
    """The variant's trained networks, from ``out/models`` if the same training saved them."""
    path = out / "models" / f"{variant}.pt"
    key = setting.training_key()
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved["setting"] == key:
            log(quiet, f"lmc {variant}: {len(saved['weights'])} trained networks loaded from {path}")
            return saved
    spec = get_arch(setting.arch, variant)
    started = time.perf_counter()
    progress = _EpochProgress(f"lmc {variant}", setting.epochs, quiet)
    results = train_batched(spec, data, setting.jobs(), setting.recipe, device=device, on_epoch=progress)
    saved = {"setting": key, "weights": torch.stack([r.weights for r in results]),
             "test_acc": [r.metrics["test_acc"] for r in results], "status": [r.status for r in results],
             "seconds": time.perf_counter() - started}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(saved, tmp))
    log(quiet, f"lmc {variant}: trained {len(results)} networks in {saved['seconds']:.0f} s, test acc "
               + ", ".join(f"{a:.3f}" for a in saved["test_acc"]))
    return saved


class _EpochProgress:
    """Epochs done, seconds per epoch and ETA on stderr."""

    def __init__(self, label: str, epochs: int, quiet: bool) -> None:
        self.label, self.epochs, self.quiet, self.started = label, epochs, quiet, time.perf_counter()

    def __call__(self, epoch: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        log(self.quiet, f"{self.label}: epoch {epoch}/{total}, {elapsed / epoch:.1f} s/epoch, "
                        f"ETA {elapsed / epoch * (total - epoch):.0f} s")


# -- interpolation --------------------------------------------------------------------------------
def _curves(setting: LMCSetting, variant: str, weights: torch.Tensor, data: ImageData, device: torch.device,
            batchnorm: bool) -> dict[str, list[InterpolationCurve]]:
    """The interpolation curve of every pair; for standard networks also after weight matching."""
    model = get_arch(setting.arch, variant).build().to(device)
    layout = ParamLayout.from_module(model)
    bn_data = data.x_train if batchnorm else None
    curves: dict[str, list[InterpolationCurve]] = {variant: []}
    if variant == "standard":
        curves[REBASIN] = []
        spec = permutation_spec(model)
    for k in range(setting.pairs):
        a, b = weights[2 * k], weights[2 * k + 1]
        run = lambda start, end: interpolate(model, start, end, data.x_test, data.y_test,  # noqa: E731
                                             points=setting.points, layout=layout, batchnorm_data=bn_data)
        curves[variant].append(run(a, b))
        if variant == "standard":
            perms = weight_matching(spec, layout.unflatten(a), layout.unflatten(b), seed=setting.seed + k)
            aligned = layout.flatten(permute_state_dict(layout.unflatten(b), spec, perms))
            curves[REBASIN].append(run(a, aligned))
    return curves


def run_lmc(setting: LMCSetting, out: str | Path, *, device: str = "auto", data_dir: str | None = None,
            batchnorm: bool = False, quiet: bool = False, recipe: str | None = None) -> dict[str, Any]:
    """Train, interpolate and report; writes ``lmc.json``, ``lmc.md`` and ``lmc.png`` in ``out``.
    ``recipe`` (the recipe's name, for the log line) is only reported."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = resolve_device(device)
    data = load_images(setting.dataset, data_dir)
    n_train = len(data.x_train)
    if setting.train_subset is not None and setting.train_subset > n_train:
        log(quiet, f"lmc: {setting.dataset} has {n_train:,} training images, fewer than the {setting.train_subset:,} "
                   f"of the train subset; training on all {n_train:,}")
    named = f", recipe '{recipe}'" if recipe else ""
    log(quiet, f"lmc: {setting.arch} on {setting.dataset}{named}: {setting.describe(n_train)}")
    data = data.subset(train=setting.train_subset).to(target)
    started = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    for variant in setting.variants:
        trained = _train_variant(setting, variant, data, out, target, quiet)
        ok = [s == "ok" for s in trained["status"]]
        for name, curves in _curves(setting, variant, trained["weights"], data, target, batchnorm).items():
            pairs = [c for k, c in enumerate(curves) if ok[2 * k] and ok[2 * k + 1]]
            rows[name] = {
                "pairs": [c.to_dict() for c in curves],
                "diverged_pairs": len(curves) - len(pairs),
                "midpoint_barrier": summary([c.midpoint_barrier for c in pairs]) if pairs else None,
                "max_barrier": summary([c.max_barrier for c in pairs]) if pairs else None,
                "endpoint_test_acc": summary(trained["test_acc"]),
                "train_seconds": trained["seconds"],
            }
            if rows[name]["midpoint_barrier"] is not None:
                log(quiet, f"lmc {name}: midpoint barrier {summary_text(rows[name]['midpoint_barrier'], 4)}")
    report = {"setting": dataclasses.asdict(setting), "recipe": setting.describe(n_train),
              "train_images": min(n_train, setting.train_subset or n_train), "variants": rows,
              "paper_table1": PAPER_TABLE1.get(setting.arch), "seconds": round(time.perf_counter() - started, 1), **environment()}
    atomic_write_text(out / "lmc.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "lmc.md", markdown_table(report))
    _plot(report, out / "lmc.png")
    return report


# -- reports --------------------------------------------------------------------------------------
def markdown_table(report: dict[str, Any]) -> str:
    setting, paper = report["setting"], report["paper_table1"] or {}
    lines = [f"Linear mode connectivity of `{setting['arch']}` on {setting['dataset']}: {setting['pairs']} pairs, "
             f"{setting['epochs']} epochs, test cross-entropy along {setting['points']} points "
             f"({report['recipe']}).", "",
             "| variant | midpoint barrier | max barrier | endpoint test acc | paper (midpoint) |", "|---|---|---|---|---|"]
    for name, row in report["variants"].items():
        note = f" ({row['diverged_pairs']} pairs diverged)" if row["diverged_pairs"] else ""
        lines.append(f"| {name}{note} | {summary_text(row['midpoint_barrier'], 4)} | {summary_text(row['max_barrier'], 4)} | "
                     f"{summary_text(row['endpoint_test_acc'])} | {paper.get(name, '—')} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, row) in enumerate(report["variants"].items()):
        color = f"C{i}"
        for metric, ax in zip(("loss", "acc"), axes):
            values = np.array([p[metric] for p in row["pairs"]])
            alphas = row["pairs"][0]["alphas"]
            for curve in values:
                ax.plot(alphas, curve, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(alphas, values.mean(0), color=color, linewidth=2, label=name)
    axes[0].set(xlabel="α", ylabel="test loss", title="loss along (1−α)θ₁ + αθ₂")
    axes[1].set(xlabel="α", ylabel="test accuracy", title="accuracy")
    axes[0].legend(fontsize=8)
    save_figure(fig, path, f"LMC: {report['setting']['arch']} on {report['setting']['dataset']}")


# -- command line ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lmc", help="linear mode connectivity of independently trained pairs (Table 1)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for lmc.json, lmc.md, lmc.png and models/ (the trained networks, reused by a re-run "
                        "with the same training settings) (required)")
    p.add_argument("--arch", default="mlp-mnist-lmc",
                   help="architecture: mlp-mnist-lmc or resnet20 (their own recipes), or any other with --dataset "
                        "(the MNIST MLP's recipe) (default: %(default)s)")
    p.add_argument("--recipe", default="auto",
                   help="paper (the paper's training), cpu (reduced for 2 CPU cores: fewer images and epochs), or "
                        "auto (paper on CUDA, else cpu) (default: %(default)s)")
    p.add_argument("--dataset", metavar="NAME",
                   help=f"data set, of {', '.join(DATASETS)} (default: the recipe's: {_recipe_default('dataset')})")
    p.add_argument("--pairs", type=int, metavar="N",
                   help=f"independently trained pairs per variant (default: {_recipe_default('pairs')})")
    p.add_argument("--epochs", type=int, metavar="N", help=f"training epochs (default: {_recipe_default('epochs')})")
    p.add_argument("--train-subset", type=int, metavar="N",
                   help="train on the first N training images, all of them when the data set has fewer "
                        f"(default: {_recipe_default('train_subset')})")
    p.add_argument("--variants", nargs="+", metavar="V",
                   help=f"variants to train, of {', '.join(VARIANTS)}; standard also gives standard+rebasin "
                        f"(default: all: {' '.join(VARIANTS)})")
    p.add_argument("--points", type=int, metavar="N",
                   help=f"evenly spaced points along each path; odd (default: {_recipe_default('points')})")
    p.add_argument("--seed", type=int, help=f"seed of the pairs' inits and data orders (default: {_recipe_default('seed')})")
    p.add_argument("--batchnorm-reset", action="store_true",
                   help="re-estimate BatchNorm statistics on the training images at every point (default: off)")
    add_run_options(p)
    p.set_defaults(handler=_main)


def _recipe_default(name: str) -> str:
    """A field's value in the named recipes, for ``--help``: ``"3"`` or ``"25 (paper), 10 (cpu) for mlp-mnist-lmc; ..."``."""
    shown = lambda v: "all" if v is None else f"{v:,}" if isinstance(v, int) else str(v)  # noqa: E731
    values = {key: shown(getattr(setting, name)) for key, setting in LMC_SETTINGS.items()}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    by_arch: dict[str, dict[str, str]] = {}
    for (arch, recipe), value in values.items():
        by_arch.setdefault(arch, {})[recipe] = value
    return "; ".join(f"{arch}: " + (next(iter(v.values())) if len(set(v.values())) == 1
                                    else ", ".join(f"{value} ({recipe})" for recipe, value in v.items()))
                     for arch, v in by_arch.items())


def _main(args: argparse.Namespace) -> int:
    recipe = args.recipe
    if recipe == "auto":
        recipe = "paper" if resolve_device(args.device).type == "cuda" else "cpu"
    setting = lmc_setting(args.arch, recipe, dataset=args.dataset, pairs=args.pairs, epochs=args.epochs,
                          train_subset=args.train_subset, points=args.points, seed=args.seed,
                          variants=tuple(args.variants) if args.variants else None)
    report = run_lmc(setting, args.out, device=args.device, data_dir=args.data_dir, batchnorm=args.batchnorm_reset,
                     quiet=args.quiet, recipe=recipe)
    print_report(args, report, markdown_table(report), f"{args.out}/lmc.json, lmc.md, lmc.png")
    return 0
