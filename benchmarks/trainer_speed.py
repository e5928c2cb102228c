"""Batched vs sequential training of the same models, in one run: models/hour and their ratio.

    python3 -m benchmarks.trainer_speed --preset digits-mlp --models 128 --epochs 5
    python3 -m benchmarks.trainer_speed --preset mnist-cnn --models 64 --epochs 1 --sequential 8
    python3 -m benchmarks.trainer_speed --preset cifar10-resnet8 --synthetic --device cuda --models 512 --epochs 10

Both trainers get identical jobs (the zoo preset's first models, with ``--epochs`` fixed so the
work is known) and the same data on the same device. The sequential rate is measured on the first
``--sequential`` of them (default: all). ``--synthetic`` replaces the data set by random tensors
of its shape (throughput does not depend on pixel values), e.g. for CIFAR-10 without the files.

``--sequential-workers W`` (CPU) also times the sequential trainer the way one would run many
small independent jobs on W cores: W worker processes with one torch thread each, the
``--sequential`` jobs shared among them. Torch's default (one process, one thread per core)
parallelises each small kernel and can be slower than one thread; this is the baseline the
batched trainer must beat to be worth it on a CPU. ``--threads 1`` runs both in-process trainers
on one thread: a per-core comparison that stays meaningful on a busy machine, where two-thread
kernels lose much of their time waiting for a descheduled partner. The report gives the load
average (``os.getloadavg``) before and after, since other work on the machine skews both rates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from zoo.workers import worker_pool
from generators.data import ImageData, load_images
from generators.reference import train_sequential
from generators.trainer import train_batched
from generators.zoospec import get_zoo_spec
from zoo.device import resolve_device
from zoo.environment import machine_record

_SHAPES = {"digits": ((1, 8, 8), 1347, 450), "mnist": ((1, 28, 28), 60_000, 10_000),
           "fashion_mnist": ((1, 28, 28), 60_000, 10_000), "cifar10": ((3, 32, 32), 50_000, 10_000)}


def synthetic(name: str) -> ImageData:
    shape, n_train, n_test = _SHAPES[name]
    g = torch.Generator().manual_seed(0)
    return ImageData(name, torch.randn(n_train, *shape, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                     torch.randn(n_test, *shape, generator=g), torch.randint(0, 10, (n_test,), generator=g), 10)


def _ready(_: int) -> int:
    time.sleep(1.0)  # holds this worker, so that the next warm-up task starts another one
    return os.getpid()


def _train_sequential_job(arch, data, job, recipe, device):  # noqa: ANN001, ANN202 (runs in a worker)
    return train_sequential(arch, data, job, recipe, device=device)


def sequential_in_workers(arch, data, jobs, recipe, device, workers: int) -> tuple[list, float]:  # noqa: ANN001
    """Train ``jobs`` with the sequential trainer in ``workers`` one-thread processes; the time
    counts from when every worker is up (imports done) until the last job is back."""
    with worker_pool(workers, torch_threads=1) as pool:
        assert len(set(pool.map(_ready, range(workers)))) == workers
        start = time.perf_counter()
        futures = [pool.submit(_train_sequential_job, arch, data, job, recipe, device) for job in jobs]
        results = [f.result() for f in futures]
        return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits-mlp")
    parser.add_argument("--variant", default="standard")
    parser.add_argument("--models", type=int, default=128, help="models trained together (M)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every model")
    parser.add_argument("--sequential", type=int, help="models timed with the sequential trainer (default: all)")
    parser.add_argument("--sequential-workers", type=int, default=0,
                        help="also time the sequential trainer in this many one-thread processes (CPU only)")
    parser.add_argument("--threads", type=int, help="torch threads of both in-process runs (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--synthetic", action="store_true", help="random data of the data set's shape")
    parser.add_argument("--data-dir")
    parser.add_argument("--train-subset", type=int,
                        help="train on the first N examples only (default: the preset's), for short runs")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = dataclasses.replace(get_zoo_spec(args.preset), variant=args.variant)
    arch = spec.arch_spec()
    device = resolve_device(args.device)
    data = synthetic(spec.dataset) if args.synthetic else load_images(spec.dataset, args.data_dir)
    data = data.subset(train=args.train_subset or spec.train_subset)
    jobs = [dataclasses.replace(spec.job(i), epochs=args.epochs) for i in range(args.models)]
    n_seq = min(args.sequential or args.models, args.models)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - start

    load_before = os.getloadavg()[0]
    print(f"batched: {args.models} models x {args.epochs} epochs on {device} ...", file=sys.stderr)
    batched, t_batched = timed(lambda: train_batched(arch, data, jobs, spec.recipe, device=device, autocast_bf16=args.bf16))
    print(f"sequential: {n_seq} models ...", file=sys.stderr)
    sequential, t_seq = timed(lambda: [train_sequential(arch, data, j, spec.recipe, device=device) for j in jobs[:n_seq]])
    parallel = None
    if args.sequential_workers and device.type == "cpu":
        print(f"sequential: {n_seq} models in {args.sequential_workers} one-thread processes ...", file=sys.stderr)
        in_workers, t_par = sequential_in_workers(arch, data, jobs[:n_seq], spec.recipe, device, args.sequential_workers)
        sequential_agree = max(float((a.weights - b.weights).abs().max()) for a, b in zip(sequential, in_workers))
        parallel = {"workers": args.sequential_workers, "seconds": round(t_par, 2),
                    "models_per_hour": round(3600 * n_seq / t_par), "max_weight_difference": sequential_agree}
    load_after = os.getloadavg()[0]
    agree = max(float((b.weights - s.weights).abs().max()) for b, s in zip(batched, sequential))
    rate_b, rate_s = 3600 * args.models / t_batched, 3600 * n_seq / t_seq
    if parallel is not None:
        parallel["speedup"] = round(rate_b / parallel["models_per_hour"], 2)
    report = {
        "preset": args.preset, "variant": args.variant, "device": str(device), "models": args.models,
        "epochs": args.epochs, "train_examples": len(data.x_train), "batch_size": spec.recipe.batch_size,
        "synthetic": args.synthetic, "batched_seconds": round(t_batched, 2), "sequential_models": n_seq,
        "sequential_seconds": round(t_seq, 2), "batched_models_per_hour": round(rate_b),
        "sequential_models_per_hour": round(rate_s), "speedup": round(rate_b / rate_s, 2),
        "max_weight_difference": agree, "sequential_workers": parallel,
        "load_average": [round(load_before, 2), round(load_after, 2)], "machine": machine_record(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.preset} ({args.variant}) on {device}, {args.epochs} epochs of {len(data.x_train)} examples, "
          f"batch {spec.recipe.batch_size}")
    print(f"  batched    M={args.models:<5} {t_batched:8.1f} s  {rate_b:>12,.0f} models/hour")
    print(f"  sequential n={n_seq:<5} {t_seq:8.1f} s  {rate_s:>12,.0f} models/hour")
    if parallel is not None:
        print(f"  sequential n={n_seq:<5} {parallel['seconds']:8.1f} s  {parallel['models_per_hour']:>12,} models/hour"
              f"  ({parallel['workers']} one-thread processes)")
    print(f"  speedup {rate_b / rate_s:.1f}x", end="")
    if parallel is not None:
        print(f" ({parallel['speedup']:.1f}x over {parallel['workers']} one-thread processes)", end="")
    print(f"; max |w_batched - w_sequential| = {agree:.2e}; load average {load_before:.1f} -> {load_after:.1f}")


if __name__ == "__main__":
    main()
