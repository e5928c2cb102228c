"""Metanet training the old way and the new way, in one run: seconds per epoch and their ratio (issue 16).

    python3 -m benchmarks.metanet_speed --zoo ZOO --model gmn --epochs 1
    python3 -m benchmarks.metanet_speed --zoo ZOO --model deepsets,dmc --epochs 3 --repeats 2 --json
    python3 -m benchmarks.metanet_speed --smoke        # a tiny zoo of its own, every model, 1 epoch

where ZOO is e.g. ``symzoo generate --preset digits-mlp --n-models 2000 --out ZOO``.

Both ways are the same model (same parameters, same function; ``tests/test_metanet_speed.py`` and
``tests/test_gmn_dense.py`` check outputs and gradients) computed differently:

- ``gmn``: old = PyG message passing over the batched graph of ``zoo.graph.to_graphs``
  (``GraphMetanet(dense=False)``); new = dense per-tensor blocks, run ~32k edges at a time.
- ``deepsets``: old = φ on every weight (``DeepSets(closed_form=False)``); new = the mean of φ
  in closed form over the sorted weights.
- ``dmc``: old = the modules as they are (``DMC(fast=False)``); new = hand-written backward
  passes for the convolutions and the max-pooling, and evaluation in chunks of 128 rows.

Each run is ``metanets.train._fit``, the real training loop of one learning rate and seed
(train pass, validation every epoch, test when validation improves), for ``--epochs`` epochs.
The ways alternate ``--repeats`` times and the fastest of each counts (other work on a shared
machine only slows a run down); process CPU time is reported beside wall-clock time. With one
thread (``--threads``, default 1) a run is one core's work, as in the leaderboard's one-thread
cells. Seconds per epoch project to a cell: the paper protocol (6 learning rates + 4 more seeds,
50 epochs: 500 epochs) and the reduced GMN protocol (3 + 2 runs of 20 epochs: 100 epochs). As a
check that the two ways are one model, the report also gives the largest difference of their
predictions on validation rows (same parameters, eval mode) and both runs' validation R².
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metanets.models import DMC, DeepSets, MetanetContext, get_metanet
from metanets.train import MetanetConfig, ZooFeatures, _fit, load_features
from zoo.environment import machine_record
from zoo.storage import open_zoo

__all__ = ["OLD_WAYS", "PROTOCOLS", "main", "time_model"]


def _old_gmn(context: MetanetContext) -> nn.Module:
    # torch_geometric takes seconds to import: only when a GMN is asked for
    from metanets.gmn import GraphMetanet

    return GraphMetanet(context.layout, context.arch, dense=False)


# the previous implementation of each model, selected by a flag of the model itself
OLD_WAYS: dict[str, Callable[[MetanetContext], nn.Module]] = {
    "gmn": _old_gmn,
    "deepsets": lambda context: DeepSets(closed_form=False),
    "dmc": lambda context: DMC(fast=False),
}
# epochs of one cell: (runs, epochs per run)
PROTOCOLS = {"paper": (6 + 4, 50), "gmn_reduced": (3 + 2, 20)}


def _features(base: ZooFeatures, build: Callable[[MetanetContext], nn.Module]) -> ZooFeatures:
    return dataclasses.replace(base, entry=dataclasses.replace(base.entry, build=build))


def _run(features: ZooFeatures, config: MetanetConfig, lr: float, seed: int) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and best validation R² of one ``_fit``."""
    start, cpu = time.perf_counter(), time.process_time()
    best = _fit(features, config, lr, seed)
    return time.perf_counter() - start, time.process_time() - cpu, float(best["val"]["r2"])


@torch.no_grad()
def _max_difference(old: ZooFeatures, new: ZooFeatures, rows: int = 64) -> float:
    """Largest |old - new| prediction on the first validation rows, both built from one seed."""
    torch.manual_seed(0)
    new_model = new.build().eval()
    old_model = old.build().eval()
    old_model.load_state_dict(new_model.state_dict())
    n = min(rows, len(new.targets["validation"]))
    x = new.batch("validation", torch.arange(n))
    return float((old_model(x) - new_model(x)).abs().max()) if n else 0.0


def time_model(zoo: str | Path, model: str, epochs: int, repeats: int = 1, lr: float = 1e-3,
               seed: int = 0, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """One metanet's report: seconds per epoch each way, their ratio, and projected cell times."""
    if model not in OLD_WAYS:
        raise ValueError(f"no old way for '{model}'; expected one of {', '.join(OLD_WAYS)}")
    # what the training loop imports on its first evaluation (~1.5 s), so no timed run pays for it
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401

    entry = get_metanet(model)
    base = load_features(open_zoo(zoo), entry, "test_acc")
    ways = {"old": _features(base, OLD_WAYS[model]), "new": base}
    config = MetanetConfig(model=model, epochs=epochs, lrs=(lr,), seeds=1)
    wall: dict[str, list[float]] = {w: [] for w in ways}
    cpu: dict[str, list[float]] = {w: [] for w in ways}
    r2: dict[str, float] = {}
    for _ in range(repeats):
        for way, features in ways.items():
            log(f"{model} {way}: {epochs} epoch(s) on {len(base.targets['train'])} train models ...")
            seconds, cpu_seconds, r2[way] = _run(features, config, lr, seed)
            wall[way].append(seconds)
            cpu[way].append(cpu_seconds)
    per_epoch = {w: min(t) / epochs for w, t in wall.items()}
    cpu_per_epoch = {w: min(t) / epochs for w, t in cpu.items()}
    projected = {name: {w: round(per_epoch[w] * runs * run_epochs / 60, 2) for w in ways}
                 for name, (runs, run_epochs) in PROTOCOLS.items()}
    return {
        "model": model, "epochs": epochs, "repeats": repeats, "lr": lr, "seed": seed,
        "models": {split: len(t) for split, t in base.targets.items()}, "input_dim": base.input_dim,
        "seconds": {w: [round(t, 3) for t in v] for w, v in wall.items()},
        "cpu_seconds": {w: [round(t, 3) for t in v] for w, v in cpu.items()},
        "seconds_per_epoch": {w: round(v, 3) for w, v in per_epoch.items()},
        "cpu_seconds_per_epoch": {w: round(v, 3) for w, v in cpu_per_epoch.items()},
        "ratio": round(per_epoch["old"] / per_epoch["new"], 2),
        "cpu_ratio": round(cpu_per_epoch["old"] / cpu_per_epoch["new"], 2),
        "projected_cell_minutes": projected,
        "val_r2": {w: round(v, 5) if math.isfinite(v) else None for w, v in r2.items()},
        "max_abs_difference": _max_difference(ways["old"], ways["new"]),
    }


def _tiny_zoo(out: Path) -> Path:
    """A 32-model digits-MLP zoo (``--smoke``), each model trained one epoch: about 16 train,
    8 validation and 8 test models (the split is a function of the model id)."""
    from generators.generate import generate
    from generators.zoospec import Dist, get_zoo_spec

    spec = get_zoo_spec("digits-mlp")
    space = dataclasses.replace(spec.hyperparameters, epochs=Dist("fixed", 1))
    generate(dataclasses.replace(spec, n_models=32, hyperparameters=space), out, quiet=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", help="zoo folder (with --smoke: default a fresh 32-model digits zoo)")
    parser.add_argument("--model", default="gmn,deepsets,dmc", help=f"comma-separated, of {', '.join(OLD_WAYS)}")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each timed run")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each way; the fastest counts")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch on a tiny zoo: the code path, for tests")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    unknown = [m for m in models if m not in OLD_WAYS]
    if unknown or not models:
        parser.error(f"--model {args.model}: expected a comma-separated list of {', '.join(OLD_WAYS)}")
    if not args.zoo and not args.smoke:
        parser.error("--zoo is required (or --smoke)")

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="metanet_speed_") as tmp:
            zoo = Path(args.zoo) if args.zoo else _tiny_zoo(Path(tmp) / "zoo")
            epochs = 1 if args.smoke else args.epochs
            load_before = os.getloadavg()
            results = [time_model(zoo, m, epochs, args.repeats, args.lr, log=lambda s: print(s, file=sys.stderr))
                       for m in models]
            load_after = os.getloadavg()
            report = {"zoo": str(args.zoo or "tiny digits-mlp zoo (--smoke)"), "smoke": args.smoke, "results": results,
                      "load_average": {"before": [round(v, 2) for v in load_before],
                                       "after": [round(v, 2) for v in load_after]},
                      "machine": machine_record()}
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['zoo']}, {args.threads} thread(s), torch {torch.__version__}, {report['machine']['cpu']}")
    for r in results:
        s, c = r["seconds_per_epoch"], r["cpu_seconds_per_epoch"]
        paper, gmn = r["projected_cell_minutes"]["paper"], r["projected_cell_minutes"]["gmn_reduced"]
        print(f"  {r['model']:9} old {s['old']:8.2f} s/epoch  new {s['new']:7.2f} s/epoch  ratio {r['ratio']:5.2f} "
              f"(CPU {c['old']:.2f} / {c['new']:.2f} = {r['cpu_ratio']:.2f})  cell: paper {paper['old']:.1f} -> "
              f"{paper['new']:.1f} min, gmn-reduced {gmn['old']:.1f} -> {gmn['new']:.1f} min  "
              f"max |old-new| {r['max_abs_difference']:.1e}  val R2 {r['val_r2']['old']} / {r['val_r2']['new']}")
    print(f"  load average {report['load_average']['before'][0]:.1f} -> {report['load_average']['after'][0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
