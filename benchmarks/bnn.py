"""``symzoo bench bnn``: variational Bayesian networks, standard vs W-Asym (docs/PAPER.md §6, Table 2).

Each setting trains a Gaussian variational posterior (``generators.variational``: ELRG rank 4 by
default) over every variant's network, ``instances`` times. Instance ``i`` uses seed ``seed + i``
for the initial means, the W-Asym masks and fixed values, the data order and the noise, in every
variant, so the variants of one instance start from the same trainable values. Every finished run
is saved under ``runs/`` in a file named by its settings (``mlp8-mnist-standard-seed0-<hash>.json``,
the hash of every setting that shapes the run), so runs with other settings in the same folder sit
beside it and a re-run with the same settings reuses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from zoo.progress import progress_bar

from benchmarks.report import (add_run_options, environment, images_text, log, print_report, pyplot, save_figure,
                               settings_difference, summary, summary_text)
from generators.data import DATASETS, ImageData, load_images
from generators.recipe import Augment
from generators.variational import POSTERIORS, PosteriorConfig, VITrainConfig, fit_variational
from zoo.device import resolve_device
from zoo.errors import SpecError
from zoo.nets import VARIANTS, ArchSpec, LayerAsym, MLPSpec, WAsymSpec, check_variant, get_arch
from zoo.storage.files import atomic_write_text

__all__ = ["BNNSetting", "BNN_SETTINGS", "run_bnn", "run_file_name", "markdown_table"]

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

    def describe(self, train_images: int | None = None, test_images: int | None = None) -> str:
        """One line of what is trained and how it is tested; ``train_images`` and ``test_images``
        (the data set's sizes, when known) make it state the counts actually used."""
        p, t = self.posterior, self.train
        net = (f"MLP, {self.depth} hidden layers of {self.width} (LayerNorm + ReLU)" if self.arch == "mlp"
               else self.arch)
        family = f"ELRG rank {p.rank}" if p.kind == "elrg" else "mean field"
        subset = images_text(self.train_subset, train_images, "training")
        return (f"{net} on {self.dataset} ({subset}); {family}, prior precision {p.prior_precision:g}"
                f"{' × fan-in' if p.prior_fan_in else ''}; Adam lr {t.lr:g}, batch {t.batch_size}, {t.epochs} epochs; "
                f"final test: {_test_set(t.eval_samples, None, test_images)}; learning curves and early acc: "
                f"{_test_set(t.curve_samples, t.curve_test_size, test_images)}")


def _test_set(samples: int, first: int | None, test_images: int | None) -> str:
    """``"25 samples on all 10,000 test images"`` and the like."""
    return f"{samples} sample{'s' if samples != 1 else ''} on {images_text(first, test_images, 'test')}"


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


def run_file_name(setting: BNNSetting, variant: str, seed: int) -> str:
    """The run's file under ``runs/``: setting, data set, variant and seed for people, then a hash
    of every setting that shapes the run (``_run_config``), so runs that differ in anything (epochs,
    width, posterior, ...) get their own files: ``mlp8-mnist-standard-seed0-1a2b3c4d5e.json``."""
    config = _run_config(setting, variant, seed)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{setting.name}-{setting.dataset}-{variant}-seed{seed}-{digest}.json"


def _read_run(path: Path) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"bnn: {path} is not a readable run file ({err}); move it away and run again") from None
    if not isinstance(run, dict):
        raise SpecError(f"bnn: {path} is not a run file (expected a JSON object); move it away and run again")
    return run


def _saved_run(runs: Path, setting: BNNSetting, variant: str, instance: int,
               seed: int) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """The run's file name, its config and its saved result, if one with exactly these settings exists: under
    its settings-keyed name or, made before runs were keyed by settings, ``NAME-VARIANT-I.json``.
    A keyed file holding other settings is refused rather than overwritten."""
    config, name = _run_config(setting, variant, seed), run_file_name(setting, variant, seed)
    if (runs / name).exists():
        stored = _read_run(runs / name)
        if stored.get("config") != config:
            raise SpecError(f"bnn: {runs / name} holds a run made with other settings "
                            f"({settings_difference(stored.get('config'), config)}); refusing to overwrite it: "
                            "move it away or pass another --out")
        return name, config, stored
    legacy = runs / f"{setting.name}-{variant}-{instance}.json"  # kept as it is, never rewritten
    if legacy.exists():
        stored = _read_run(legacy)
        if stored.get("config") == config:
            return legacy.name, config, stored
    return name, config, None


def _subset(data: ImageData, n: int | None) -> ImageData:
    """The first ``n`` training images; unlike a zoo, a BNN setting refuses more than there are."""
    if n is not None and n > len(data.x_train):
        raise SpecError(f"bnn: --train-subset {n} exceeds the {len(data.x_train):,} training images of {data.name}; "
                        "pass --full-train or a smaller --train-subset")
    return data.subset(train=n)


def run_bnn(settings: list[BNNSetting], out: str | Path, *, variants: tuple[str, ...] = ("standard", "w_asym"),
            instances: int = 2, seed: int = 0, device: str = "auto", data_dir: str | None = None,
            quiet: bool = False) -> dict[str, Any]:
    """Train every (setting, variant, instance) not yet saved; write ``bnn.json``, ``bnn.md`` and
    ``bnn.png`` (learning curves) in ``out``; return the report."""
    if instances < 1:
        raise SpecError(f"bnn: --instances must be >= 1, got {instances}")
    for variant in variants:
        check_variant(variant, source="bnn")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    target = resolve_device(device)
    started = time.perf_counter()
    datasets = {name: load_images(name, data_dir) for name in dict.fromkeys(s.dataset for s in settings)}
    data = {s.name: _subset(datasets[s.dataset], s.train_subset) for s in settings}

    jobs, done, names = [], {}, {}
    for s in settings:
        for variant in variants:
            for i in range(instances):
                name, config, stored = _saved_run(out / "runs", s, variant, i, seed + i)
                key = name.removesuffix(".json")
                names[s.name, variant, i] = key
                if stored is not None:
                    done[key] = {**stored, "instance": i}
                else:
                    jobs.append((s, variant, i, key, config))
    steps = sum(s.train.epochs * math.ceil(len(data[s.name].x_train) / s.train.batch_size) for s, *_ in jobs)
    log(quiet, f"bnn: {len(jobs)} runs to train ({len(done)} already saved) on {target}")
    with progress_bar(total=steps, unit="step", file=sys.stderr, quiet=quiet, dynamic_ncols=True) as bar:
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
            runs = [done[names[s.name, variant, i]] for i in range(instances)]
            ok = [r for r in runs if r["status"] == "ok"]
            rows.append({
                "setting": s.name, "variant": variant, "instances": len(runs), "diverged": len(runs) - len(ok),
                "trainable_params": runs[0]["trainable_params"],
                **{m: summary([r[m] for r in ok]) if ok else None
                   for m in ("test_acc", "test_nll", "test_ece", "early_acc")},
                "paper_test_acc": PAPER_TABLE2.get(s.name, {}).get(variant),
            })
    sizes = {s.name: {"train_images": len(data[s.name].x_train), "test_images": len(data[s.name].x_test)}
             for s in settings}
    report = {"settings": {s.name: {**dataclasses.asdict(s), **sizes[s.name],
                                    "describe": s.describe(**sizes[s.name])} for s in settings},
              "variants": list(variants), "instances": instances, "seed": seed, "rows": rows,
              "runs": [{**done[k], "file": f"runs/{k}.json"} for k in sorted(done)],
              "seconds": round(time.perf_counter() - started, 1), **environment()}
    atomic_write_text(out / "bnn.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "bnn.md", markdown_table(report))
    _plot(report, settings, out / "bnn.png")
    return report


# -- reports --------------------------------------------------------------------------------------
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
        lines.append(f"| {row['setting']} | {row['variant']}{note} | {row['trainable_params']:,} | {summary_text(row['test_acc'])} | "
                     f"{summary_text(row['test_nll'])} | {summary_text(row['test_ece'])} | {summary_text(row['early_acc'])} ({s['early_epoch']}) "
                     f"| {paper} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], settings: list[BNNSetting], path: Path) -> Any:
    """Test accuracy and NLL per epoch (thin lines per instance, thick the mean over instances)
    and, at the last epoch, the final test of the table (diamonds, mean ± std over instances).

    The two measure the same posteriors differently: a curve point is the predictive of
    ``curve_samples`` weight samples on the first ``curve_test_size`` test images (cheap, once per
    epoch), the final test that of ``eval_samples`` samples on every test image; averaging more
    samples usually predicts better, so the diamonds can sit off the curves' ends. The caption
    under the plots says which is which. Returns the (closed) figure."""
    import textwrap

    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    width = max(6.4, 4.5 * len(settings))
    fig, axes = plt.subplots(2, len(settings), figsize=(width, 7.2), squeeze=False)
    for col, s in enumerate(settings):
        offsets = np.linspace(-0.12, 0.12, len(report["variants"])) if len(report["variants"]) > 1 else [0.0]
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
                    final = [r[metric] for r in runs]
                    ax.errorbar(s.train.epochs + 0.3 + offsets[j], np.mean(final), yerr=np.std(final), color=f"C{j}",
                                marker="D", markersize=6, markeredgecolor="black", capsize=3, linestyle="none")
                ax.set(xlabel="epoch", ylabel={"test_acc": "test accuracy", "test_nll": "test NLL"}[metric])
                ax.set_xlim(0.7, s.train.epochs + 0.7)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][col].set_title(f"{s.name}: {s.dataset}", fontsize=10)
        handles, _ = axes[0][col].get_legend_handles_labels()
        final_marker = Line2D([], [], color="grey", marker="D", markeredgecolor="black", linestyle="none",
                              label="final test (table)")
        axes[0][col].legend(handles=[*handles, final_marker], fontsize=8, loc="best")
    # what the curves and the diamonds measure, per group of settings that measure alike
    groups: dict[str, list[str]] = {}
    for s in settings:
        info = report["settings"][s.name]
        t, n_test = s.train, info.get("test_images")
        text = (f"lines: each epoch, posterior predictive of {_test_set(t.curve_samples, t.curve_test_size, n_test)} "
                f"(thin: instances, thick: mean); diamonds: the table's final test, "
                f"{_test_set(t.eval_samples, None, n_test)} (mean ± std over instances)")
        groups.setdefault(text, []).append(s.name)
    lines = [f"{', '.join(names)}: {text}" if len(groups) > 1 else text for text, names in groups.items()]
    lines.append("More samples average more networks, so the final test is usually more accurate than the last curve point.")
    wrap = int(width * 16)
    fig.supxlabel("\n".join(textwrap.fill(line, wrap) for line in lines), fontsize=8, ha="center")
    save_figure(fig, path, "Variational BNNs: test accuracy and NLL during training")
    return fig


# -- command line ---------------------------------------------------------------------------------
def _per_setting(value: Any, settings: tuple[str, ...] | None = None) -> str:
    """The built-in settings' value of a field, for ``--help``: ``"4"`` or ``"8 for mlp8; 16 for mlp16"``;
    ``value(setting)`` gives it (None: the setting has none)."""
    groups: dict[str, list[str]] = {}
    for name, setting in BNN_SETTINGS.items():
        if settings is None or name in settings:
            shown = value(setting)
            if shown is not None:
                groups.setdefault(f"{shown:,}" if isinstance(shown, int) else str(shown), []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{shown} for {', '.join(names)}" for shown, names in groups.items())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bnn", help="variational Bayesian networks, standard vs W-Asym (Table 2)",
                       description="Train variational posteriors over each setting's networks, every variant, "
                                   "--instances times, and report test accuracy, NLL and calibration beside the "
                                   "paper's Table 2. Options without a value of their own keep each setting's.")
    mlps = tuple(name for name, s in BNN_SETTINGS.items() if s.arch == "mlp")
    default = _per_setting
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for bnn.json, bnn.md, bnn.png and runs/ (required); each run is saved in runs/ under "
                        "a name made from its settings, so runs with other settings in the same folder are kept and "
                        "the same command run again reuses them")
    p.add_argument("--settings", nargs="+", default=["mlp8", "mlp16"], choices=list(BNN_SETTINGS), metavar="NAME",
                   help=f"settings to run, of {', '.join(BNN_SETTINGS)} (default: mlp8 mlp16, MNIST at CPU scale)")
    p.add_argument("--variants", nargs="+", default=["standard", "w_asym"], choices=VARIANTS, metavar="V",
                   help=f"network variants to compare, of {', '.join(VARIANTS)} (default: standard w_asym)")
    p.add_argument("--instances", type=int, default=2, metavar="N",
                   help="runs per (setting, variant); instance i uses seed SEED+i (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of instance 0: initial means, W-Asym masks, data order and noise (default: %(default)s)")
    p.add_argument("--dataset", choices=DATASETS,
                   help=f"data set instead of the settings', of {', '.join(DATASETS)} "
                        f"(default: {default(lambda s: s.dataset)})")
    p.add_argument("--train-subset", type=int, metavar="N",
                   help="train on the first N training images "
                        f"(default: {default(lambda s: s.train_subset or 'all')})")
    p.add_argument("--full-train", action="store_true",
                   help="train on all training images, whatever the setting's subset (default: off)")
    p.add_argument("--depth", type=int, metavar="N",
                   help=f"MLP hidden layers (default: {default(lambda s: s.depth, mlps)}; MLP settings only)")
    p.add_argument("--width", type=int, metavar="N",
                   help=f"MLP hidden width (default: {default(lambda s: s.width, mlps)}; MLP settings only)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"training epochs (default: {default(lambda s: s.train.epochs)})")
    p.add_argument("--early-epoch", type=int, metavar="E",
                   help=f"epoch of the table's early accuracy (default: {default(lambda s: s.early_epoch)})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default: {default(lambda s: f'{s.train.lr:g}')})")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=f"training batch size (default: {default(lambda s: s.train.batch_size)})")
    p.add_argument("--samples", type=int, metavar="N",
                   help="posterior samples of the final test, on every test image "
                        f"(default: {default(lambda s: s.train.eval_samples)})")
    p.add_argument("--curve-samples", type=int, metavar="N",
                   help="posterior samples per learning-curve point (each epoch, also the early accuracy; test "
                        f"images: {default(lambda s: f'first {s.train.curve_test_size:,}' if s.train.curve_test_size else 'all')}) "
                        f"(default: {default(lambda s: s.train.curve_samples)})")
    p.add_argument("--posterior", choices=POSTERIORS,
                   help=f"variational family, of {', '.join(POSTERIORS)} (default: {default(lambda s: s.posterior.kind)})")
    p.add_argument("--rank", type=int, metavar="K",
                   help=f"ELRG rank of the low-rank covariance factor (default: {default(lambda s: s.posterior.rank)})")
    p.add_argument("--prior-precision", type=float, metavar="TAU",
                   help="prior precision τ, times each layer's fan-in "
                        f"(default: {default(lambda s: f'{s.posterior.prior_precision:g}')})")
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
