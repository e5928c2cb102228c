"""Local vs Ray engine on the same zoo, in one run: models/hour of each and Ray's overhead ratio.

    python3 -m benchmarks.engine_overhead [--preset digits-mlp] [--models 4096] [--batch-models 128]
                                          [--pairs overhead defaults] [--repeats 1] [--workdir DIR] [--json]

The same zoo spec is generated into fresh directories by two pairs of setups (`--pairs`):

- **overhead**: the local engine with 1 torch thread, then the Ray engine on a new local Ray
  instance with 1 CPU (so one shard at a time, 1 thread: the same compute). Ray's wall time over
  the local engine's is its overhead ratio (goal: <= 1.2 for zoos of a few minutes): starting
  Ray, worker processes, moving the data and results, staging and renaming shard files.
- **defaults**: what ``symzoo generate`` does on this machine with each engine: the local engine
  with torch's default threads, then ``--engine ray`` (a local instance with every core, 1 CPU
  per shard: shards in parallel, one thread each).

Ray's timings include ``ray.init`` and ``ray.shutdown``. All zoos must be byte-identical. With
``--repeats N`` the setups run N times, interleaved, and the fastest run of each counts (other
work on the machine only ever slows a run down).
A table goes to stdout (``--json``: one JSON object instead); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generators.engines import LocalEngine
from generators.generate import generate
from generators.ray_engine import RayEngine, import_ray
from generators.zoospec import ZooSpec, get_zoo_spec
from zoo.environment import machine_record


@dataclass(frozen=True)
class Setup:
    """One way of generating the zoo: the local engine (``ray_cpus`` None) or a new local Ray
    instance with ``ray_cpus`` CPUs (1 per shard)."""

    pair: str
    name: str
    ray_cpus: int | None = None
    torch_threads: int | None = None  # the local engine's; None: torch's default


def zoo_files(zoo: Path) -> dict[str, bytes]:
    """Every file of a zoo but hidden ones (caches, the lock), by relative path."""
    return {str(p.relative_to(zoo)): p.read_bytes() for p in sorted(zoo.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(zoo).parts)}


def timed_generate(setup: Setup, spec: ZooSpec, out: Path, data_dir: str | None) -> tuple[float, int]:
    """Seconds and models trained, as the command line would do it."""
    ray, threads = import_ray(), torch.get_num_threads()
    start = time.perf_counter()
    if setup.ray_cpus is None:
        torch.set_num_threads(setup.torch_threads or threads)
        try:
            report = generate(spec, out, device="cpu", data_dir=data_dir, quiet=True, engine=LocalEngine())
        finally:
            torch.set_num_threads(threads)
    else:
        ray.init(address="local", num_cpus=setup.ray_cpus, include_dashboard=False, logging_level=logging.ERROR)
        try:
            report = generate(spec, out, device="cpu", data_dir=data_dir, quiet=True, engine=RayEngine(cpus_per_shard=1))
        finally:
            ray.shutdown()
    return time.perf_counter() - start, report.trained


def run(args: argparse.Namespace) -> dict[str, Any]:
    ray = import_ray()
    cores = os.cpu_count() or 1
    spec = dataclasses.replace(get_zoo_spec(args.preset), n_models=args.models,
                               **({"batch_models": args.batch_models} if args.batch_models else {}))
    setups = [s for s in (
        Setup("overhead", "local, 1 thread", torch_threads=1),
        Setup("overhead", "ray, 1 CPU", ray_cpus=1),
        Setup("defaults", f"local, {torch.get_num_threads()} threads"),
        Setup("defaults", f"ray, {cores} CPUs", ray_cpus=cores),
    ) if s.pair in args.pairs]
    workdir = Path(tempfile.mkdtemp(prefix="engine-overhead-", dir=args.workdir))
    load_before = os.getloadavg()[0]
    seconds: dict[Setup, list[float]] = {s: [] for s in setups}
    identical, reference = True, None
    try:
        for repeat in range(args.repeats):  # interleaved, so that a change in the machine's load hits both
            for i, setup in enumerate(setups):
                print(f"[{repeat + 1}/{args.repeats}] {setup.name}: {spec.n_models} models in shards of "
                      f"{spec.batch_models} ...", file=sys.stderr)
                out = workdir / f"zoo-{repeat}-{i}"
                took, trained = timed_generate(setup, spec, out, args.data_dir)
                assert trained == spec.n_models, f"{setup.name} trained {trained} of {spec.n_models} models"
                seconds[setup].append(round(took, 2))
                files = zoo_files(out)
                reference = files if reference is None else reference
                identical &= files == reference
                shutil.rmtree(out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    runs = []
    for setup in setups:
        best = min(seconds[setup])
        local = next(r for r in runs + [{"pair": setup.pair, "seconds": best}] if r["pair"] == setup.pair)
        runs.append({"pair": setup.pair, "engine": setup.name, "seconds": best, "all_seconds": seconds[setup],
                     "models_per_hour": round(3600 * spec.n_models / best),
                     "ratio_vs_local": round(best / local["seconds"], 3)})
    return {"preset": args.preset, "models": spec.n_models, "batch_models": spec.batch_models,
            "shards": -(-spec.n_models // spec.batch_models), "repeats": args.repeats, "runs": runs,
            "identical_zoos": identical, "ray": ray.__version__, "machine": machine_record(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['preset']}: {report['models']} models, {report['shards']} shards of {report['batch_models']}; "
             f"ray {report['ray']}",
             f"{'pair':<9} {'engine':<18} {'seconds (best)':>14} {'models/hour':>12} {'vs local':>9}  all runs (s)"]
    for r in report["runs"]:
        lines.append(f"{r['pair']:<9} {r['engine']:<18} {r['seconds']:>14.1f} {r['models_per_hour']:>12,} "
                     f"{r['ratio_vs_local']:>8.2f}x  {', '.join(map(str, r['all_seconds']))}")
    lines.append(f"all zoos byte-identical: {report['identical_zoos']}")
    m, load = report["machine"], report["load_average_1min"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; "
                 f"load average {load['before']} before, {load['after']} after")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.engine_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="digits-mlp")
    parser.add_argument("--models", type=int, default=4096)
    parser.add_argument("--batch-models", type=int, help="models per shard (default: the preset's)")
    parser.add_argument("--pairs", nargs="+", choices=["overhead", "defaults"], default=["overhead", "defaults"])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each setup; the best counts")
    parser.add_argument("--data-dir")
    parser.add_argument("--workdir", help="where the zoos are written (default: the temp folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report, indent=1) if args.json else table(report))


if __name__ == "__main__":
    main()
