"""``symzoo bench mli``: monotonic linear interpolation from initialisation to trained weights
(docs/PAPER.md §5, Table 4).

For each model the train loss is measured at evenly spaced points of the straight line from its
stored initial weights (``weights_epoch_0``) to its final weights, and the path is summarised by
Δ, monotonicity and local/global convexity. Zoos are compared on the same models: the indices
trained without divergence in every zoo, so paired zoos compare the same hyperparameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from zoo.progress import progress_bar

from benchmarks.report import add_run_options, print_report, environment, log, pyplot, save_figure, summary, summary_text
from generators.data import ImageData, load_images
from generators.generate import generate
from generators.zoospec import ZOO_PRESETS, get_zoo_spec
from zoo.device import resolve_device
from zoo.errors import SpecError
from zoo.interpolation import evaluate_weights, interpolate_weights, mli_statistics, path_alphas
from zoo.nets import VARIANTS, check_variant
from zoo.storage import open_zoo
from zoo.storage.files import atomic_write_text
from zoo.storage.format import SPLITS
from zoo.storage.reader import Zoo

__all__ = ["run_mli", "paired_indices", "PAPER_TABLE4"]

# The paper's Table 4 (300 zoo-style ResNet8 per variant): Δ, share monotonic, local and global convexity.
PAPER_TABLE4 = {
    "standard": (0.079, 0.263, 0.548, 0.823),
    "sigma_asym": (0.004, 0.873, 0.675, 0.976),
    "w_asym": (-0.027, 1.0, 0.769, 1.0),
}
INIT_COLUMN = "weights_epoch_0"


def _columns(zoo: Zoo, split: str, names: list[str]) -> dict[str, Any]:
    return zoo.load(split, names) if zoo.num_rows(split) else {name: np.empty(0) for name in names}


def paired_indices(zoos: list[Zoo], models: int) -> list[int]:
    """The first ``models`` model indices stored with status ``ok`` in every zoo."""
    common: set[int] | None = None
    for zoo in zoos:
        if INIT_COLUMN not in zoo.columns():
            raise SpecError(f"{zoo.path}: no '{INIT_COLUMN}' column (initial weights); MLI needs zoos from symzoo generate")
        ok = set()
        for split in SPLITS:
            cols = _columns(zoo, split, ["index", "status"])
            ok |= {int(i) for i, s in zip(cols["index"], cols["status"]) if s == "ok"}
        common = ok if common is None else common & ok
    return sorted(common or ())[:models]


def _fewer_models(zoos: list[Zoo], usable: int, asked: int) -> str:
    """Why fewer models than ``--models`` are compared, in one line."""
    stored = [sum(zoo.num_rows(split) for split in SPLITS) for zoo in zoos]
    if len(zoos) == 1:
        has = f"the zoo has {stored[0]:,} models"
        if usable < stored[0]:
            has += f", {usable:,} of them trained without divergence"
    else:
        sizes = (f"{stored[0]:,} models each" if len(set(stored)) == 1
                 else " and ".join(f"{n:,}" for n in stored) + " models")
        has = f"the zoos have {sizes}"
        if usable < max(stored):
            has += f", {usable:,} of the indices trained without divergence in every zoo"
    which = "all" if usable == max(stored) else "those"
    return f"{has}; using {which} {usable:,}, not the {asked:,} of --models"


def _endpoints(zoo: Zoo, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial and final flat weights ``(n, P)`` of the models ``indices``, in that order."""
    where = {index: i for i, index in enumerate(indices)}
    start = torch.empty(len(indices), zoo.layout.size)
    end = torch.empty_like(start)
    for split in SPLITS:
        cols = _columns(zoo, split, ["index", INIT_COLUMN, "weights"])
        for row, index in enumerate(cols["index"]):
            if int(index) in where:
                start[where[int(index)]] = torch.from_numpy(np.asarray(cols[INIT_COLUMN][row]))
                end[where[int(index)]] = torch.from_numpy(np.asarray(cols["weights"][row]))
    return start, end


def _zoo_data(zoos: list[Zoo], data_dir: str | None, examples: int) -> ImageData:
    """The training images the zoos were trained on (the first ``examples`` of them)."""
    datasets = {json.dumps([z.manifest.metadata.dataset.get(k) for k in ("name", "train_subset")]) for z in zoos}
    if len(datasets) != 1:
        raise SpecError("the zoos were trained on different data sets; compare zoos of one data set")
    info = zoos[0].manifest.metadata.dataset
    if not info.get("name"):
        raise SpecError(f"{zoos[0].path}: zoo.json does not record its data set (metadata.dataset.name)")
    data = load_images(info["name"], data_dir)
    return data.subset(train=min(examples, info.get("train_subset") or examples))


def _path_losses(zoo: Zoo, indices: list[int], data: ImageData, points: int, device: torch.device,
                 label: str, quiet: bool) -> np.ndarray:
    """Train loss ``(n, points)`` along each model's path from init to final weights."""
    model = zoo.rebuild_weights(zoo.fixed[1]).to(device)  # a template carrying the zoo's masks
    start, end = _endpoints(zoo, indices)
    alphas = path_alphas(points)
    losses = np.empty((len(indices), points))
    per_pass = max(1, 64 // points)  # models evaluated together
    with progress_bar(total=len(indices), desc=f"mli {label}", unit="model", quiet=quiet) as bar:
        for first in range(0, len(indices), per_pass):
            chunk = range(first, min(first + per_pass, len(indices)))
            path = torch.cat([interpolate_weights(start[i], end[i], alphas) for i in chunk])
            loss, _ = evaluate_weights(model, zoo.layout, path, data.x_train, data.y_train, batch_size=1024,
                                       models_per_pass=len(path))
            losses[first : first + len(chunk)] = loss.view(len(chunk), points).numpy()
            bar.update(len(chunk))
    return losses


def run_mli(zoo_dirs: list[str | Path], out: str | Path, *, models: int = 300, points: int = 25,
            eval_examples: int = 4096, device: str = "auto", data_dir: str | None = None,
            quiet: bool = False) -> dict[str, Any]:
    """MLI statistics of the same models in each zoo; writes ``mli.json``, ``mli.md``, ``mli.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zoos = [open_zoo(d) for d in zoo_dirs]
    labels = [z.spec.variant for z in zoos]
    if len(set(labels)) < len(labels):
        labels = [Path(d).name for d in zoo_dirs]
    indices = paired_indices(zoos, models)
    if not indices:
        raise SpecError("no model index is stored without divergence in every zoo; nothing to compare")
    if len(indices) < models:  # said even with --quiet: the comparison is smaller than asked for
        print(f"mli: {_fewer_models(zoos, len(indices), models)}", file=sys.stderr)
    target = resolve_device(device)
    data = _zoo_data(zoos, data_dir, eval_examples).to(target)
    if len(data.x_train) < eval_examples:
        log(quiet, f"mli: the zoos were trained on {len(data.x_train):,} {data.name} training images; "
                   f"measuring the loss on all {len(data.x_train):,} (--eval-examples {eval_examples:,})")
    path_alphas(points)  # odd and >= 3
    started = time.perf_counter()
    rows = {}
    for label, zoo in zip(labels, zoos):
        losses = _path_losses(zoo, indices, data, points, target, label, quiet)
        stats = [mli_statistics(curve) for curve in losses]
        rows[label] = {
            "zoo": str(zoo.path),
            "delta": summary([s.delta for s in stats]),
            "monotonic": float(np.mean([s.monotonic for s in stats])),
            "local_convexity": summary([s.local_convexity for s in stats]),
            "global_convexity": summary([s.global_convexity for s in stats]),
            "init_loss": summary(losses[:, 0].tolist()),
            "final_loss": summary(losses[:, -1].tolist()),
            "models": [{"index": i, **dataclasses.asdict(s), "loss": curve.round(6).tolist()}
                       for i, s, curve in zip(indices, stats, losses)],
        }
        log(quiet, f"mli {label}: Δ {rows[label]['delta']['mean']:.4f}, {100 * rows[label]['monotonic']:.1f}% monotonic")
    report = {"models": len(indices), "points": points, "eval_examples": len(data.x_train),
              "dataset": zoos[0].manifest.metadata.dataset.get("name"), "arch": zoos[0].manifest.arch,
              "variants": rows, "seconds": round(time.perf_counter() - started, 1), **environment()}
    atomic_write_text(out / "mli.json", json.dumps(report, indent=2))
    atomic_write_text(out / "mli.md", markdown_table(report))
    _plot(report, out / "mli.png")
    return report


def markdown_table(report: dict[str, Any]) -> str:
    lines = [f"MLI from initialisation on {report['models']} models per zoo ({report['dataset']}): train loss on "
             f"{report['eval_examples']:,} training images at {report['points']} points.", "",
             "| variant | Δ | % monotonic | local convexity | global convexity | final train loss | paper (Δ / % mono / local / global) |",
             "|---|---|---|---|---|---|---|"]
    for label, row in report["variants"].items():
        paper = PAPER_TABLE4.get(label)
        paper_cell = f"{paper[0]:.3f} / {100 * paper[1]:.1f}% / {paper[2]:.3f} / {paper[3]:.3f}" if paper else "—"
        lines.append(f"| {label} | {summary_text(row['delta'], 4)} | {100 * row['monotonic']:.1f}% | "
                     f"{row['local_convexity']['mean']:.3f} | {row['global_convexity']['mean']:.3f} | "
                     f"{row['final_loss']['mean']:.3f} | {paper_cell} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> Any:
    """The median relative loss path per zoo and a histogram of Δ; returns the (closed) figure."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    alphas = np.linspace(0, 1, report["points"])
    deltas = np.concatenate([[m["delta"] for m in row["models"]] for row in report["variants"].values()])
    low, high = min(float(deltas.min()), 0.0), max(float(deltas.max()), 0.0)  # 0 (monotonic or not) in view
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 31)  # shared by the variants
    for i, (label, row) in enumerate(report["variants"].items()):
        curves = np.array([m["loss"] for m in row["models"]])
        relative = curves / curves[:, :1]
        q25, q50, q75 = np.quantile(relative, [0.25, 0.5, 0.75], axis=0)
        axes[0].plot(alphas, q50, color=f"C{i}", linewidth=2, label=label)
        axes[0].fill_between(alphas, q25, q75, color=f"C{i}", alpha=0.2)
        axes[1].hist([m["delta"] for m in row["models"]], bins=bins, alpha=0.5, color=f"C{i}", label=label)
    axes[0].set(xlabel="α (0 = init, 1 = trained)", ylabel="train loss / loss at init", title="median path (IQR band)")
    axes[1].axvline(0, color="grey", linewidth=0.8)
    axes[1].set(xlabel="Δ (max consecutive increase; ≤ 0 is monotonic)", ylabel="models", title="Δ per model")
    # few x ticks, scientific offset for tiny ranges, tilted so long labels never run together;
    # whole models on the count axis
    axes[1].xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes[1].ticklabel_format(axis="x", style="sci", scilimits=(-3, 3), useOffset=False)
    axes[1].tick_params(axis="x", labelrotation=30)
    axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    n = report["models"]
    save_figure(fig, path, f"Monotonic linear interpolation: {n} model{'s' if n != 1 else ''} per zoo on {report['dataset']}")
    return fig


# -- command line ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mli", help="monotonic linear interpolation from init, across variants (Table 4)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--zoo", nargs="+", metavar="DIR",
                        help="zoo folders to compare, e.g. paired zoos of one preset and seed in different variants "
                             "(this or --preset is required)")
    source.add_argument("--preset", help="generate paired zoos of this preset in OUT/zoos first, one per --variants, "
                                         f"--models models each, then compare them; of {', '.join(ZOO_PRESETS)} "
                                         "(this or --zoo is required)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for mli.json, mli.md and mli.png (required)")
    p.add_argument("--models", type=int, default=300, metavar="N",
                   help="models compared per zoo: the first N indices trained without divergence in every zoo "
                        "(all of them when the zoos hold fewer, said on stderr); with --preset also the size of the "
                        "generated zoos (default: %(default)s)")
    p.add_argument("--variants", nargs="+", default=["standard", "sigma_asym", "w_asym"], metavar="V",
                   help=f"with --preset: the variants to generate, of {', '.join(VARIANTS)} "
                        "(default: standard sigma_asym w_asym)")
    p.add_argument("--points", type=int, default=25, metavar="N",
                   help="evenly spaced points on each path from init (α = 0) to trained (α = 1); odd, at least 3 "
                        "(default: %(default)s)")
    p.add_argument("--eval-examples", type=int, default=4096, metavar="N",
                   help="training images the loss is measured on: the first N of those the zoos were trained on, "
                        "all of them when there are fewer (default: %(default)s)")
    add_run_options(p)
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if args.models <= 0 or args.eval_examples <= 0:
        raise SpecError("--models and --eval-examples must be positive")
    zoo_dirs = args.zoo
    if args.preset:
        for variant in args.variants:
            check_variant(variant, source="--variants")
        base = get_zoo_spec(args.preset)
        zoo_dirs = []
        for variant in args.variants:
            zoo_dirs.append(Path(args.out) / "zoos" / f"{args.preset}-{variant}")
            generate(dataclasses.replace(base, variant=variant, n_models=args.models), zoo_dirs[-1],
                     device=args.device, data_dir=args.data_dir, quiet=args.quiet)
    report = run_mli(zoo_dirs, args.out, models=args.models, points=args.points, eval_examples=args.eval_examples,
                     device=args.device, data_dir=args.data_dir, quiet=args.quiet)
    print_report(args, report, markdown_table(report), f"{args.out}/mli.json, mli.md, mli.png")
    return 0
