"""``symzoo bench bnn``: variational Bayesian networks, standard vs W-Asym (docs/PAPER.md §6, Table 2).

Each setting trains a Gaussian variational posterior (``generators.variational``: ELRG rank 4 by
default) over every variant's network, ``instances`` times. Instance ``i`` uses seed ``seed + i``
for the initial means, the W-Asym masks and fixed values, the data order and the noise, in every
variant, so the variants of one instance start from the same trainable values. Every finished run
is saved under ``runs/``; a re-run with the same settings reuses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.report import add_run_options, print_report, environment, log, pyplot, save_figure, summary
from generators.data import DATASETS, ImageData, load_images
from generators.generate import resolve_device
from generators.recipe import Augment
from generators.variational import POSTERIORS, PosteriorConfig, VITrainConfig, fit_variational
from zoo.errors import SpecError
from zoo.nets import VARIANTS, ArchSpec, LayerAsym, MLPSpec, WAsymSpec, get_arch
from zoo.storage.files import atomic_write_text

__all__ = ["BNNSetting", "BNN_SETTINGS", "run_bnn", "markdown_table"]

# The paper's Table 2 (test accuracy; docs/PAPER.md §6). Its MLP rows are CIFAR-10 networks (the
# authors' code), its ResNet20 row CIFAR-100 with BatchNorm.
PAPER_TABLE2 = {
    "mlp8": {"standard": 0.564, "w_asym": 0.571},
    "mlp16": {"standard": 0.135, "w_asym": 0.552},
    "resnet20-cifar10": {"standard": 0.568, "w_asym": 0.584},
}
PAPER_NOTE = {
    "mlp8": "CIFAR-10 in the paper", "mlp16": "CIFAR-10 in the paper",
    "resnet20-cifar10": "CIFAR-100, BatchNorm ResNet20 in the paper",
}


@dataclass(frozen=True)
class BNNSetting:
    """One row group of the table: a network family on a data set, and how to train it.

    Attributes:
        name: setting name (``mlp8``, ``mlp16``, ``resnet20-cifar10`` or your own).
        dataset: a :data:`generators.data.DATASETS` name.
        arch: ``mlp`` (``depth`` hidden layers of ``width`` units, LayerNorm + ReLU, input and
            output sizes from the data) or an architecture preset / spec file (input shape and
            classes taken from the data).
        depth, width: the MLP's hidden layers. Its W-Asym variant fixes ``max(1, width // 8)``
            entries per row (32 at width 256) with κ = 0.5 in every layer, the head included (the
            paper's BNN code: one n_fix and κ = 0.5 for all layers).
        train_subset: train on the first N training images (None: all).
        early_epoch: the epoch whose test accuracy the table reports as "early".
        posterior, train: the variational family, prior and the ELBO training settings.
    """

    name: str
    dataset: str
    arch: str = "mlp"
    depth: int = 8
    width: int = 256
    train_subset: int | None = None
    early_epoch: int = 1
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    train: VITrainConfig = field(default_factory=VITrainConfig)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise SpecError(f"bnn: data set '{self.dataset}' is unknown; expected one of {', '.join(DATASETS)}")
        if self.depth < 1 or self.width < 1:
            raise SpecError(f"bnn: depth and width must be positive, got {self.depth} and {self.width}")
        if self.train_subset is not None and self.train_subset < 1:
            raise SpecError(f"bnn: --train-subset must be positive, got {self.train_subset}")
        if not 1 <= self.early_epoch <= self.train.epochs:
            raise SpecError(f"bnn: early epoch {self.early_epoch} is not within the {self.train.epochs} training epochs")

    @property
    def n_fix(self) -> int:
        return max(1, self.width // 8)

    def arch_spec(self, data: ImageData, variant: str, seed: int) -> ArchSpec:
        """The network of ``variant`` for ``data``; ``seed`` seeds its masks and fixed values."""
        if self.arch == "mlp":
            return MLPSpec(in_features=math.prod(data.input_shape), widths=(self.width,) * self.depth,
                           out_features=data.num_classes, layer_norm=True, activation="relu", variant=variant,
                           w_asym=WAsymSpec(default=LayerAsym(self.n_fix, 0.5)), asym_seed=seed)
        spec = get_arch(self.arch, variant)
        shape = {"in_features": math.prod(data.input_shape)} if isinstance(spec, MLPSpec) else {
            "in_channels": data.input_shape[0], "image_size": data.input_shape[-1]}
        classes = "out_features" if isinstance(spec, MLPSpec) else "num_classes"
        try:
            return dataclasses.replace(spec, **shape, **{classes: data.num_classes}, asym_seed=seed)
        except TypeError as err:
            raise SpecError(f"bnn: architecture '{self.arch}' cannot be fitted to {self.dataset} ({err})") from None

    def describe(self) -> str:
        p, t = self.posterior, self.train
        net = (f"MLP, {self.depth} hidden layers of {self.width} (LayerNorm + ReLU)" if self.arch == "mlp"
               else self.arch)
        family = f"ELRG rank {p.rank}" if p.kind == "elrg" else "mean field"
        subset = f"first {self.train_subset:,} training images" if self.train_subset else "all training images"
        return (f"{net} on {self.dataset} ({subset}); {family}, prior precision {p.prior_precision:g}"
                f"{' × fan-in' if p.prior_fan_in else ''}; Adam lr {t.lr:g}, batch {t.batch_size}, {t.epochs} epochs; "
                f"test: {t.eval_samples} samples")


# CPU scale (2 cores): 5,000 MNIST images, 4 epochs (80 steps); curves from 5 samples on the first
# 2,000 test images; the final test uses 25 samples on all 10,000. The paper trained 10,000 steps
# at lr 5e-4; a few dozen steps need a larger learning rate.
_CPU_TRAIN = VITrainConfig(epochs=4, batch_size=250, lr=2e-3, eval_samples=25, curve_samples=5, curve_test_size=2000)

BNN_SETTINGS: dict[str, BNNSetting] = {
    "mlp8": BNNSetting("mlp8", "mnist", depth=8, train_subset=5000, train=_CPU_TRAIN),
    "mlp16": BNNSetting("mlp16", "mnist", depth=16, train_subset=5000, train=_CPU_TRAIN),
    # GPU and the user's CIFAR-10 files: the paper's optimiser settings, flip + translate 4.
    "resnet20-cifar10": BNNSetting(
        "resnet20-cifar10", "cifar10", arch="resnet20", early_epoch=25,
        train=VITrainConfig(epochs=100, batch_size=250, lr=5e-4, eval_samples=25, curve_samples=25,
                            augment=Augment(flip=True, translate=4)),
    ),
}


# -- runs -----------------------------------------------------------------------------------------
def _run_config(setting: BNNSetting, variant: str, seed: int) -> dict[str, Any]:
    config = dataclasses.asdict(setting)
    config.pop("name")
    return json.loads(json.dumps({**config, "variant": variant, "seed": seed}))


def _subset(data: ImageData, n: int | None) -> ImageData:
    if n is None:
        return data
    if n > len(data.x_train):
        raise SpecError(f"bnn: --train-subset {n} exceeds the {len(data.x_train):,} training images of {data.name}; "
                        "pass --full-train or a smaller --train-subset")
    return dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


def run_bnn(settings: list[BNNSetting], out: str | Path, *, variants: tuple[str, ...] = ("standard", "w_asym"),
            instances: int = 2, seed: int = 0, device: str = "auto", data_dir: str | None = None,
            quiet: bool = False) -> dict[str, Any]:
    """Train every (setting, variant, instance) not yet saved; write ``bnn.json``, ``bnn.md`` and
    ``bnn.png`` (learning curves) in ``out``; return the report."""
    if instances < 1:
        raise SpecError(f"bnn: --instances must be >= 1, got {instances}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SpecError(f"bnn: variant '{unknown[0]}' is unknown; expected some of {', '.join(VARIANTS)}")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    target = resolve_device(device)
    started = time.perf_counter()
    datasets = {name: load_images(name, data_dir) for name in dict.fromkeys(s.dataset for s in settings)}
    data = {s.name: _subset(datasets[s.dataset], s.train_subset) for s in settings}

    jobs, done = [], {}
    for s in settings:
        for variant in variants:
            for i in range(instances):
                key, config = f"{s.name}-{variant}-{i}", _run_config(s, variant, seed + i)
                path = out / "runs" / f"{key}.json"
                stored = json.loads(path.read_text()) if path.exists() else None
                if stored is not None and stored.get("config") == config:
                    done[key] = stored
                else:
                    jobs.append((s, variant, i, key, config))
    steps = sum(s.train.epochs * math.ceil(len(data[s.name].x_train) / s.train.batch_size) for s, *_ in jobs)
    log(quiet, f"bnn: {len(jobs)} runs to train ({len(done)} already saved) on {target}")
    with tqdm(total=steps, unit="step", file=sys.stderr, disable=quiet or None, dynamic_ncols=True) as bar:
        for s, variant, i, key, config in jobs:
            bar.set_description(f"{s.name} {variant} #{i}")
            spec = s.arch_spec(data[s.name], variant, seed + i)
            result = fit_variational(spec, data[s.name], s.posterior, s.train, seed=seed + i, device=target,
                                     on_step=lambda: bar.update(),
                                     on_epoch=lambda e, p: bar.set_postfix(epoch=e, test_acc=f"{p['test_acc']:.3f}"))
            curves = result.curves["test_acc"]
            run = {"setting": s.name, "variant": variant, "instance": i, "seed": seed + i, "status": result.status,
                   **result.metrics,
                   "early_acc": curves[s.early_epoch - 1] if len(curves) >= s.early_epoch else math.nan,
                   "trainable_params": result.num_variational, "fixed_params": result.num_fixed,
                   "seconds": round(result.seconds, 1), "curves": result.curves, "config": config, **environment()}
            atomic_write_text(out / "runs" / f"{key}.json", json.dumps(run, indent=2))
            done[key] = run
            bar.write(f"{key}: test acc {run['test_acc']:.4f}, NLL {run['test_nll']:.4f}, ECE {run['test_ece']:.4f}, "
                      f"epoch-{s.early_epoch} acc {run['early_acc']:.4f} ({run['seconds']:.0f} s)", file=sys.stderr)

    rows = []
    for s in settings:
        for variant in variants:
            runs = [done[f"{s.name}-{variant}-{i}"] for i in range(instances)]
            ok = [r for r in runs if r["status"] == "ok"]
            rows.append({
                "setting": s.name, "variant": variant, "instances": len(runs), "diverged": len(runs) - len(ok),
                "trainable_params": runs[0]["trainable_params"],
                **{m: summary([r[m] for r in ok]) if ok else None
                   for m in ("test_acc", "test_nll", "test_ece", "early_acc")},
                "paper_test_acc": PAPER_TABLE2.get(s.name, {}).get(variant),
            })
    report = {"settings": {s.name: {**dataclasses.asdict(s), "describe": s.describe()} for s in settings},
              "variants": list(variants), "instances": instances, "seed": seed, "rows": rows,
              "runs": [done[k] for k in sorted(done)],
              "seconds": round(time.perf_counter() - started, 1), **environment()}
    atomic_write_text(out / "bnn.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "bnn.md", markdown_table(report))
    _plot(report, settings, out / "bnn.png")
    return report


# -- reports --------------------------------------------------------------------------------------
def _fmt(cell: dict[str, float] | None, digits: int = 3) -> str:
    return "—" if cell is None else f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def markdown_table(report: dict[str, Any]) -> str:
    """The results beside the paper's Table 2 accuracies, one line per (setting, variant)."""
    intro = f"Variational BNNs: test metrics with the posterior predictive (mean ± std over {report['instances']} instances)."
    lines = [intro, ""]
    for name, s in report["settings"].items():
        lines.append(f"- `{name}`: {s['describe']}")
    header = "| setting | variant | trainable params | test acc | test NLL | ECE (15 bins) | early acc (epoch) | paper test acc |"
    lines += ["", header, "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        s = report["settings"][row["setting"]]
        note = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        paper = row["paper_test_acc"]
        paper = "—" if paper is None else f"{paper:.3f} ({PAPER_NOTE.get(row['setting'], '')})"
        lines.append(f"| {row['setting']} | {row['variant']}{note} | {row['trainable_params']:,} | {_fmt(row['test_acc'])} | "
                     f"{_fmt(row['test_nll'])} | {_fmt(row['test_ece'])} | {_fmt(row['early_acc'])} ({s['early_epoch']}) "
                     f"| {paper} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], settings: list[BNNSetting], path: Path) -> None:
    """Test accuracy and NLL per epoch: thin lines per instance, thick the mean over instances."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(2, len(settings), figsize=(4.5 * len(settings), 6.5), squeeze=False)
    for col, s in enumerate(settings):
        for j, variant in enumerate(report["variants"]):
            runs = [r for r in report["runs"] if r["setting"] == s.name and r["variant"] == variant and r["status"] == "ok"]
            for row, metric in enumerate(("test_acc", "test_nll")):
                ax = axes[row][col]
                curves = [r["curves"][metric] for r in runs]
                for curve in curves:
                    ax.plot(range(1, len(curve) + 1), curve, color=f"C{j}", alpha=0.3, linewidth=0.8)
                if curves:
                    mean = np.mean(np.array(curves), axis=0)
                    ax.plot(range(1, len(mean) + 1), mean, color=f"C{j}", linewidth=2, marker="o", markersize=3,
                            label=variant)
                ax.set(xlabel="epoch", ylabel={"test_acc": "test accuracy", "test_nll": "test NLL"}[metric])
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][col].set_title(f"{s.name}: {s.dataset}", fontsize=10)
        axes[0][col].legend(fontsize=8)
    save_figure(fig, path, "Variational BNNs: posterior-predictive test accuracy and NLL during training")


# -- command line ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bnn", help="variational Bayesian networks, standard vs W-Asym (Table 2)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--settings", nargs="+", default=["mlp8", "mlp16"], choices=list(BNN_SETTINGS), metavar="NAME",
                   help=f"of {', '.join(BNN_SETTINGS)} (default: mlp8 mlp16, MNIST at CPU scale)")
    p.add_argument("--variants", nargs="+", default=["standard", "w_asym"], choices=VARIANTS, metavar="V")
    p.add_argument("--instances", type=int, default=2, help="runs per (setting, variant), seeds seed..seed+N-1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", choices=DATASETS, help="override the settings' data set")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on the first N training images")
    p.add_argument("--full-train", action="store_true", help="train on all training images")
    p.add_argument("--depth", type=int, help="MLP hidden layers")
    p.add_argument("--width", type=int, help="MLP hidden width")
    p.add_argument("--epochs", type=int)
    p.add_argument("--early-epoch", type=int, help="epoch of the reported early accuracy")
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--samples", type=int, help="posterior samples of the final test (default 25)")
    p.add_argument("--curve-samples", type=int, help="posterior samples per learning-curve point")
    p.add_argument("--posterior", choices=POSTERIORS, help="elrg (default) or mean_field")
    p.add_argument("--rank", type=int, help="ELRG rank (default 4)")
    p.add_argument("--prior-precision", type=float, help="prior precision τ (× fan-in; default 0.01)")
    add_run_options(p)
    p.set_defaults(handler=_main)


def _override(setting: BNNSetting, args: argparse.Namespace) -> BNNSetting:
    """The setting with the command line's overrides (each applies to every chosen setting)."""
    pick = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # noqa: E731
    try:
        train = dataclasses.replace(setting.train, **pick(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                                          eval_samples=args.samples, curve_samples=args.curve_samples))
        posterior = dataclasses.replace(setting.posterior, **pick(kind=args.posterior, rank=args.rank,
                                                                  prior_precision=args.prior_precision))
    except SpecError as err:
        raise SpecError(f"bnn: {err}") from None
    changes = pick(dataset=args.dataset, depth=args.depth, width=args.width, early_epoch=args.early_epoch)
    if args.full_train:
        changes["train_subset"] = None
    elif args.train_subset is not None:
        changes["train_subset"] = args.train_subset
    return dataclasses.replace(setting, train=train, posterior=posterior, **changes)


def _main(args: argparse.Namespace) -> int:
    settings = [_override(BNN_SETTINGS[name], args) for name in dict.fromkeys(args.settings)]
    report = run_bnn(settings, args.out, variants=tuple(dict.fromkeys(args.variants)), instances=args.instances,
                     seed=args.seed, device=args.device, data_dir=args.data_dir, quiet=args.quiet)
    print_report(args, report, markdown_table(report), f"{args.out}/bnn.json, bnn.md, bnn.png and runs/ ({report['seconds']:.0f} s)")
    return 0
