"""``symzoo info|verify|export|import``: inspect, check, convert and import zoos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from zoo.cli import can_write_in, models_kept, print_json
from zoo.errors import SpecError, SymzooError, interrupted_keeps, os_error_message
from zoo.storage import SPLITS, open_zoo
from zoo.storage.format import STATUSES


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("info", help="counts, accuracy statistics and size of a zoo (+ histogram PNG)")
    p.add_argument("zoo", metavar="DIR", help="zoo directory or HDF5 export")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="PNG", help="where to write the accuracy histogram (default: in the zoo)")
    p.set_defaults(handler=_info)

    p = commands.add_parser("verify", help="check checksums, schema, row counts, ids and weights lengths")
    p.add_argument("zoo", metavar="DIR", help="zoo directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_verify)

    p = commands.add_parser("export", help="convert a zoo to another format")
    p.add_argument("zoo", metavar="DIR", help="zoo directory")
    p.add_argument("--format", choices=["hdf5"], required=True, help="the format to write (hdf5: one file)")
    p.add_argument("--out", metavar="FILE", required=True, help="the file to write (a new file)")
    p.set_defaults(handler=_export)

    p = commands.add_parser("repair", help="quarantine damaged or foreign shards (then rerun generate/import to "
                            "make their models again); rebuild a lost zoo.json from the shards")
    p.add_argument("zoo", metavar="DIR", help="zoo directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_repair)

    p = commands.add_parser("import", help="convert an existing public zoo into a symzoo zoo")
    p.add_argument("source", choices=["seed-pt", "small-cnn-zoo"], help="format of SRC")
    p.add_argument("src", metavar="SRC", help="folder of the zoo to import")
    p.add_argument("--out", metavar="DIR", required=True, help="the symzoo zoo to write (re-running resumes it)")
    p.set_defaults(handler=_import)


def _stats(values: np.ndarray) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": None, "std": None, "min": None, "median": None, "max": None}
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "median": float(np.median(values)), "max": float(values.max())}


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)


def _info(args: argparse.Namespace) -> int:
    zoo = open_zoo(args.zoo)
    manifest = zoo.manifest
    splits: dict[str, Any] = {}
    accuracies: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        if not zoo.num_rows(split):
            splits[split] = {"models": 0, **{s: 0 for s in STATUSES}}
            continue
        data = zoo.load(split, ["status", "train_acc", "test_acc"])
        ok = np.array([s == "ok" for s in data["status"]])
        splits[split] = {"models": len(ok), **{s: int(sum(x == s for x in data["status"])) for s in STATUSES}}
        accuracies[split] = {k: np.asarray(data[k])[ok] for k in ("train_acc", "test_acc")}
    joined = {k: np.concatenate([a[k] for a in accuracies.values()]) if accuracies else np.array([])
              for k in ("train_acc", "test_acc")}
    plot: Path | None = Path(args.plot) if args.plot else (
        Path(args.zoo) / "accuracy_hist.png" if Path(args.zoo).is_dir() else Path(args.zoo).with_suffix(".accuracy_hist.png"))
    if not args.plot and not can_write_in(plot.parent):  # a read-only zoo still gets its numbers
        print(f"symzoo: note: {plot.parent} is read-only, so no histogram was written; pass --plot FILE to write "
              "it elsewhere", file=sys.stderr)
        plot = None
    if plot is not None:
        _histogram(accuracies, plot, f"{manifest.metadata.name}: {manifest.arch.get('family')} {manifest.arch.get('variant')}")
    report = {
        "zoo": str(args.zoo),
        "name": manifest.metadata.name,
        "family": manifest.arch.get("family"),
        "variant": manifest.arch.get("variant"),
        "num_params": manifest.num_params,
        "trainable_params": manifest.num_trainable,
        "models": manifest.rows(),
        "splits": splits,
        "train_acc": _stats(joined["train_acc"]),
        "test_acc": _stats(joined["test_acc"]),
        "size_bytes": _size_on_disk(Path(args.zoo)),
        "histogram": str(plot) if plot else None,
    }
    if args.json:
        print_json(report)
        return 0
    print(f"{report['name']} ({report['family']}, {report['variant']}): {report['models']:,} models, "
          f"{report['num_params']:,} weights each ({report['trainable_params']:,} trainable), "
          f"{report['size_bytes'] / 2**20:,.1f} MiB")
    for split, counts in splits.items():
        print(f"  {split:<11} {counts['models']:>7,} models ({counts['ok']:,} ok, {counts['diverged']:,} diverged)")
    for key in ("train_acc", "test_acc"):
        s = report[key]
        if s["mean"] is not None:
            print(f"  {key:<11} mean {s['mean']:.4f}  std {s['std']:.4f}  min {s['min']:.4f}  "
                  f"median {s['median']:.4f}  max {s['max']:.4f}")
    if plot:
        print(f"  histogram: {plot}")
    return 0


def _histogram(accuracies: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    finite = {split: v["test_acc"][np.isfinite(v["test_acc"])] for split, v in accuracies.items()}
    if finite:  # stacked, so that no split hides another; a bar's height is the zoo's count
        ax.hist(list(finite.values()), bins=bins, stacked=True,
                label=[f"{split} ({len(values):,})" for split, values in finite.items()])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("models (splits stacked)")
    ax.set_title(title)
    if accuracies:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _verify(args: argparse.Namespace) -> int:
    from zoo.storage.manifest import ZooFormatError
    from zoo.storage.verify import verify_zoo

    if not Path(args.zoo).exists():  # bad input (exit 2), not a damaged zoo (exit 1)
        raise ZooFormatError(f"{args.zoo}: no such zoo directory or HDF5 file; check the path")
    report = verify_zoo(args.zoo)
    if args.json:
        print_json({"zoo": args.zoo, "ok": report.ok, "models": report.models, "shards": report.shards,
                    "problems": report.problems})
    else:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        if report.ok:
            print(f"{args.zoo}: ok ({report.models:,} models in {report.shards} shards verified)")
    return 0 if report.ok else 1


def _export(args: argparse.Namespace) -> int:
    from zoo.storage.hdf5 import export_hdf5

    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir() or not can_write_in(out.parent):  # checked before the export's work
        reason = ("is a directory" if out.is_dir() else f"folder {out.parent} does not exist" if not out.parent.exists()
                  else f"{out.parent} is not a folder" if not out.parent.is_dir() else f"folder {out.parent} is read-only")
        raise SpecError(f"--out {out}: {reason}; expected a file path in an existing, writable folder (e.g. zoo.h5)")
    try:
        out = export_hdf5(args.zoo, out)
    except OSError as err:  # e.g. a full disk while writing
        raise SymzooError(f"--out {out}: cannot write the export: {os_error_message(err)}") from None
    print(f"wrote {out}")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from zoo.storage.repair import repair_zoo

    report = repair_zoo(args.zoo)
    if args.json:
        print_json({"zoo": str(report.zoo), "rebuilt_manifest": report.rebuilt_manifest,
                    "quarantined": [{"file": f, "why": why, "moved": moved} for f, why, moved in report.quarantined],
                    "quarantine": str(report.quarantine) if report.quarantine else None,
                    "dropped_models": report.dropped_models})
        return 0
    if report.rebuilt_manifest:
        print(f"{args.zoo}: rebuilt zoo.json from the shards' headers")
    for rel, why, moved in report.quarantined:
        print(f"{args.zoo}: {rel}: {why}; " + (f"moved to {report.quarantine}" if moved else "dropped from zoo.json"))
    if report.dropped_models:
        print(f"{report.dropped_models:,} models are no longer in the zoo: rerun the command that made it "
              "(generate or import) to make exactly those again")
    if not report.changed:
        print(f"{args.zoo}: nothing to repair")
    return 0


def _import(args: argparse.Namespace) -> int:
    from zoo.storage import importers

    run = {"seed-pt": importers.import_seed_pt, "small-cnn-zoo": importers.import_small_cnn_zoo}[args.source]
    with interrupted_keeps(lambda: models_kept(args.out)):  # Ctrl-C: the models listed so far stay
        out = run(args.src, args.out)
    print(f"imported {open_zoo(out).num_rows():,} models into {out}")
    return 0
