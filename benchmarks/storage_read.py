"""Read throughput of one zoo stored four ways: Parquet via ``datasets``, Parquet via ``zoo.load``,
HDF5, and one ``.pt`` file per model (the format of the paper's released zoos).

    python3 -m benchmarks.storage_read [--models 2000] [--arch resnet8] [--workdir DIR] [--json]

The script writes N models of ``zoo.get_arch(ARCH)`` (standard variant) as a Parquet zoo
(``ZooWriter``, shards of ``--shard-models``), exports it to HDF5 (``export_hdf5``) and writes the
same models as ``{i}.pt`` files holding ``(state_dict, test_acc_percent)``. Then, in the same run,
it times reading ALL N weight vectors into one preallocated ``(N, P)`` float32 array (plus
``test_acc``) along each path, checks that every path returned the same numbers, and reports
models/s and the ratio of each path to the ``.pt`` path read with ``torch.load``'s defaults (the
faster of its two runs) and to the fastest ``.pt`` run (``weights_only=False``, usually).

Every file read was written moments before by this script, so all paths read from the OS page cache
(dropping it needs root); "cold" means the library's own cache (``datasets``' Arrow cache, the
zoo's ``.npy`` memmap cache) does not exist yet and is built inside the timed call.

A table goes to stdout (``--json``: one JSON object instead); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import zoo
from zoo.environment import cpu_model, ram_gib, software_record
from zoo.storage import SPLITS, ModelRecord, ZooWriter, open_zoo
from zoo.storage import load as zoo_load
from zoo.storage.hdf5 import export_hdf5

COLUMNS = ["weights", "test_acc"]
PT_DEFAULT = ".pt: torch.load"
# the full unpickler, timed only on the .pt files this script writes itself (see read_pt)
PT_UNSAFE = ".pt: torch.load(weights_only=False)"


def log(message: str) -> None:
    print(f"[storage_read] {message}", file=sys.stderr, flush=True)


# -- machine ---------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """The machine and the versions of every package the four formats are read with."""
    versions = software_record("numpy", "pyarrow", "datasets", "h5py")
    python = versions.pop("python")  # recorded beside the machine, not among the packages
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "ram_gib": ram_gib(),
        "platform": platform.platform(),
        "python": python,
        "versions": versions,
    }


# -- building the four copies ----------------------------------------------------------------------
def build(workdir: Path, arch: str, n: int, shard_models: int, seed: int) -> dict[str, Any]:
    """Write the zoo, its HDF5 export and the ``.pt`` files; return paths and the reference data."""
    spec = zoo.get_arch(arch, "standard")
    model = spec.build(0)
    layout = zoo.ParamLayout.from_module(model)
    base = layout.flatten(model).numpy()
    size = layout.size
    rng = np.random.default_rng(seed)
    log(f"{arch}: {size:,} weights per model, {n:,} models = {n * size * 4 / 2**20:,.0f} MiB of float32 weights")

    # Weights: random perturbations of one initialisation (read throughput does not depend on values).
    weights = np.empty((n, size), dtype=np.float32)
    for i in range(n):
        weights[i] = base + rng.standard_normal(size, dtype=np.float32) * np.float32(0.01)
    test_acc = rng.uniform(0.1, 0.9, size=n)

    zoo_dir, h5_path, pt_dir = workdir / "zoo", workdir / "zoo.h5", workdir / "pt"
    for path in (zoo_dir, pt_dir):
        shutil.rmtree(path, ignore_errors=True)
    h5_path.unlink(missing_ok=True)

    t = time.perf_counter()
    writer = ZooWriter(zoo_dir, spec)
    for start in range(0, n, shard_models):
        stop = min(n, start + shard_models)
        records = [
            ModelRecord(index=i, seed=seed * 1_000_003 + i, weights=weights[i],
                        metrics={"test_acc": float(test_acc[i]), "train_acc": float(test_acc[i])})
            for i in range(start, stop)
        ]
        writer.write(records)
    log(f"wrote Parquet zoo ({len(writer.manifest.shards)} shard files) in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    export_hdf5(zoo_dir, h5_path)
    # export_hdf5 goes through zoo.load, which leaves the .npy memmap cache behind; the cold
    # zoo.load measurement must build it itself.
    shutil.rmtree(zoo_dir / ".cache", ignore_errors=True)
    log(f"exported HDF5 in {time.perf_counter() - t:.1f} s")

    # The paper's format: one torch.save((state_dict, test_acc_percent)) file per model. The
    # state_dict is the module's full one, integer buffers (num_batches_tracked) included; each
    # tensor is cloned so that a file holds only its own data, not the storage of the whole vector.
    t = time.perf_counter()
    pt_dir.mkdir(parents=True)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point()}
    order = list(model.state_dict().keys())
    for i in range(n):
        floats = layout.unflatten(torch.from_numpy(weights[i]))
        state = {k: (floats[k].clone() if k in floats else buffers[k]) for k in order}
        torch.save((state, float(test_acc[i]) * 100.0), pt_dir / f"{i}.pt")
    log(f"wrote {n:,} .pt files in {time.perf_counter() - t:.1f} s")

    sizes = {
        "parquet": sum(p.stat().st_size for p in (zoo_dir / "data").glob("*.parquet")),
        "hdf5": h5_path.stat().st_size,
        "pt": sum(p.stat().st_size for p in pt_dir.glob("*.pt")),
    }
    return {"spec": spec, "layout": layout, "weights": weights, "test_acc": test_acc, "zoo_dir": zoo_dir,
            "h5_path": h5_path, "pt_dir": pt_dir, "sizes": sizes}


# -- the four readers ------------------------------------------------------------------------------
# Each reader fills ``out`` (N, P) float32 and returns test_acc (N,) in the row order it read.
def split_order(zoo_dir: Path) -> np.ndarray:
    """Model indices in the order train, validation, test (the row order of the zoo paths)."""
    return np.concatenate([zoo_load(zoo_dir, s, columns=["index"])["index"] for s in SPLITS])


def read_datasets(zoo_dir: Path, cache_dir: Path, out: np.ndarray) -> np.ndarray:
    import datasets

    dd = datasets.load_dataset(str(zoo_dir), cache_dir=str(cache_dir))
    start, accs = 0, []
    for split in SPLITS:
        ds = dd[split].with_format("numpy", columns=COLUMNS)
        batch = ds[:]
        rows = len(batch["test_acc"])
        out[start : start + rows] = batch["weights"]
        accs.append(np.asarray(batch["test_acc"], dtype=np.float64))
        start += rows
    assert start == len(out), (start, len(out))
    return np.concatenate(accs)


def read_zoo(path: Path, out: np.ndarray) -> np.ndarray:
    start, accs = 0, []
    for split in SPLITS:
        data = zoo_load(path, split, columns=COLUMNS)
        rows = len(data["test_acc"])
        out[start : start + rows] = np.asarray(data["weights"])  # materialise the memmap / dataset
        accs.append(np.asarray(data["test_acc"], dtype=np.float64))
        start += rows
    assert start == len(out), (start, len(out))
    return np.concatenate(accs)


def read_pt(pt_dir: Path, layout: zoo.ParamLayout, out: np.ndarray, weights_only: bool = True) -> np.ndarray:
    """``torch.load`` each file (``weights_only=True`` is torch's default since 2.6 and the safe way
    to open downloaded files; ``False`` runs the full unpickler, faster but able to run code)."""
    target = torch.from_numpy(out)
    accs = np.empty(len(out))
    for i in range(len(out)):
        # weights_only=False only as a timing baseline: these files were written by build() above
        # into this benchmark's own work directory; it never opens a file a user hands over.
        state, acc = torch.load(pt_dir / f"{i}.pt", map_location="cpu", weights_only=weights_only)
        target[i] = layout.flatten(state)
        accs[i] = acc / 100.0
    return accs


# -- timing ----------------------------------------------------------------------------------------
def checksum_cost(zoo_dir: Path) -> float:
    """Seconds to check every shard's SHA-256 and header, as a cold ``zoo.load`` does first (no
    file remembered as verified yet); a warm load only ``stat``s the files."""
    from zoo.storage.integrity import VerifiedFiles, ShardChecker, cache_dir, shard_header

    (cache_dir(zoo_dir) / VerifiedFiles.FILE).unlink(missing_ok=True)
    opened = open_zoo(zoo_dir)
    start = time.perf_counter()
    ShardChecker(zoo_dir, shard_header(opened.manifest, opened.fixed)).verify(opened.manifest.shards)
    return time.perf_counter() - start


def timed(name: str, variant: str, fn: Callable[[np.ndarray], np.ndarray], out: np.ndarray,
          expect_w: np.ndarray, expect_acc: np.ndarray) -> dict[str, Any]:
    out.fill(np.nan)
    gc.collect()
    t, cpu = time.perf_counter(), time.process_time()
    acc = fn(out)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    # test_acc to float32 precision: datasets' numpy formatter returns float64 columns as float32.
    ok = bool(np.array_equal(out, expect_w) and np.allclose(acc, expect_acc, rtol=0, atol=1e-6))
    if not ok:
        raise SystemExit(f"{name} ({variant}) returned other numbers than were written")
    n = len(out)
    log(f"{name:<34} {variant:<5} {seconds:8.2f} s (cpu {cpu:6.2f} s) {n / seconds:10,.0f} models/s")
    return {"path": name, "variant": variant, "seconds": seconds, "cpu_seconds": cpu, "models_per_s": n / seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_total = time.perf_counter()
    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="symzoo-storage-read-")) if own_dir else Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        built = build(workdir, args.arch, args.models, args.shard_models, args.seed)
        t_build = time.perf_counter() - t_total
        n, size = built["weights"].shape
        order = split_order(built["zoo_dir"])
        split_w, split_acc = built["weights"][order], built["test_acc"][order]
        out = np.empty((n, size), dtype=np.float32)
        hf_cache = workdir / "hf-cache"
        shutil.rmtree(hf_cache, ignore_errors=True)
        zoo_dir, h5_path = built["zoo_dir"], built["h5_path"]

        results = []
        load_before = os.getloadavg()
        log(f"timing: read {n:,} x {size:,} float32 weights + test_acc into one array")
        for variant in ("cold", "warm"):
            results.append(timed("parquet: datasets", variant, lambda o: read_datasets(zoo_dir, hf_cache, o),
                                 out, split_w, split_acc))
        for variant in ("cold", "warm"):
            results.append(timed("parquet: zoo.load", variant, lambda o: read_zoo(zoo_dir, o), out, split_w, split_acc))
        verify_seconds = checksum_cost(zoo_dir)
        for variant in ("run1", "run2"):
            results.append(timed("hdf5: zoo.load", variant, lambda o: read_zoo(h5_path, o), out, split_w, split_acc))
        for weights_only in (True, False):
            for variant in ("run1", "run2"):
                results.append(timed(PT_DEFAULT if weights_only else PT_UNSAFE, variant,
                                     lambda o: read_pt(built["pt_dir"], built["layout"], o, weights_only),
                                     out, built["weights"], built["test_acc"]))
        # Baselines: the faster run of each .pt variant.
        baseline = max(r["models_per_s"] for r in results if r["path"] == PT_DEFAULT)
        fastest = max(r["models_per_s"] for r in results if r["path"].startswith(".pt"))
        for r in results:
            r["ratio_vs_pt"] = r["models_per_s"] / baseline
            r["ratio_vs_fastest_pt"] = r["models_per_s"] / fastest
        parquet = [r for r in results if r["path"].startswith("parquet")]
        goal = {
            "target_ratio": 10.0,
            "baseline": f"{PT_DEFAULT} (faster of its two runs)",
            "met_by": [f"{r['path']} ({r['variant']})" for r in parquet if r["ratio_vs_pt"] >= 10],
            "missed_by": [f"{r['path']} ({r['variant']})" for r in parquet if r["ratio_vs_pt"] < 10],
            "missed_vs_fastest_pt": [f"{r['path']} ({r['variant']})" for r in parquet if r["ratio_vs_fastest_pt"] < 10],
        }
        goal["met"] = not goal["missed_by"]
        return {
            "benchmark": "storage_read",
            "command": "python3 -m benchmarks.storage_read " + " ".join(sys.argv[1:]),
            "arch": args.arch, "models": n, "params_per_model": size,
            "weights_mib": round(n * size * 4 / 2**20, 1),
            "bytes_on_disk": built["sizes"],
            "machine": machine_info(),
            "results": results,
            "pt_baseline_models_per_s": baseline,
            "pt_fastest_models_per_s": fastest,
            "checksum_seconds": round(verify_seconds, 3),
            "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "goal": goal,
            "build_seconds": round(t_build, 1),
            "total_seconds": round(time.perf_counter() - t_total, 1),
        }
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"storage read throughput: {report['models']:,} x {report['arch']} ({report['params_per_model']:,} params, "
        f"{report['weights_mib']:,} MiB of weights)",
        f"machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['ram_gib']} GiB RAM, {m['platform']}",
        "",
        f"| {'path':<36} | {'run':<5} | {'seconds':>7} | {'CPU s':>7} | {'models/s':>8} | {'vs .pt':>7} | "
        f"{'vs fastest .pt':>14} |",
        f"|{'-' * 38}|{'-' * 7}|{'-' * 8}:|{'-' * 8}:|{'-' * 9}:|{'-' * 8}:|{'-' * 15}:|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['path']:<36} | {r['variant']:<5} | {r['seconds']:7.2f} | {r['cpu_seconds']:7.2f} | "
                     f"{r['models_per_s']:8,.0f} | {r['ratio_vs_pt']:6.1f}x | {r['ratio_vs_fastest_pt']:13.1f}x |")
    goal = report["goal"]
    load = report["load_average_1min"]
    lines += ["", f"'vs .pt' is relative to the faster run of '{PT_DEFAULT}' (torch's default, weights_only=True); "
              "'vs fastest .pt' to the fastest .pt run of any kind",
              f"checking every shard's checksum and header (part of the cold zoo.load; a warm one only stats the "
              f"files): {report['checksum_seconds']:.2f} s",
              f"1-minute load average before/after timing: {load['before']} / {load['after']} "
              f"(on {m['cpu_count']} CPUs; well above 1 means other processes competed for the CPUs)",
              f"goal (every Parquet path >= {goal['target_ratio']:.0f}x .pt): {'met' if goal['met'] else 'NOT met'}"]
    if goal["missed_by"]:
        lines.append(f"  missed by: {', '.join(goal['missed_by'])}")
    if goal["missed_vs_fastest_pt"]:
        lines.append(f"  vs the fastest .pt run, missed by: {', '.join(goal['missed_vs_fastest_pt'])}")
    lines.append(f"total runtime {report['total_seconds']:.0f} s (building the copies {report['build_seconds']:.0f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.storage_read", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=2000, help="number of models (default 2000)")
    parser.add_argument("--arch", default="resnet8", help="architecture preset (default resnet8)")
    parser.add_argument("--workdir", default=None, help="where to write the copies (default: a temp dir, removed)")
    parser.add_argument("--shard-models", type=int, default=250, help="models per ZooWriter.write call (default 250)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.models < 1 or args.shard_models < 1:
        print("--models and --shard-models must be >= 1", file=sys.stderr)
        return 2
    try:
        zoo.get_arch(args.arch, "standard")
    except zoo.SpecError as err:
        print(f"--arch: {err}", file=sys.stderr)
        return 2
    report = run(args)
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
