"""A real zoo shard (each model its own epochs) against the fixed-epoch rate, in one run (issue 15).

    python3 -m benchmarks.epoch_waste --preset digits-mlp --models 128
    python3 -m benchmarks.epoch_waste --preset mnist-cnn --models 32 --train-subset 2000 --data-dir ../shared/data

Both runs train the preset's first ``--models`` models with the batched trainer, as ``symzoo
generate`` trains one shard (same jobs, recipe, data and checkpoints), on the same device:

- **real**: each model with the epochs the preset samples for it (digits-mlp: 1-20). Models that
  finish or diverge retire at the end of their last epoch, so later epochs cost only the rest.
- **fixed**: the same models, all with ``--fixed-epochs`` (default: the real shard's mean epochs,
  rounded, so both runs do about the same work), as ``benchmarks.trainer_speed`` measures.

The rate of each is model-epochs per second: the sum of the jobs' epochs over the seconds taken.
The goal is real / fixed >= 0.90. The trainer before retirement kept every model stepping (at
learning rate 0) until the shard's largest epoch count, at the cost per epoch of the whole shard;
its real-shard time is therefore about that of M x max(epochs) model-epochs at the fixed rate, and
its useful rate the fixed rate times sum(epochs) / (M x max(epochs)), reported as ``old ratio``
(an estimate from the measured fixed rate, not a run of the old code). The runs alternate
``--repeats`` times and the fastest of each counts (other work on a shared machine only slows a
run down). Each run's process CPU time is reported too: with one thread (``--threads`` defaults
to 1, since two-thread kernels lose much of their time on a busy 2-core machine) it is the work
done, and its ratio moves less than the wall-clock one while other jobs share the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from benchmarks.trainer_speed import synthetic
from generators.data import load_images
from generators.trainer import train_batched
from generators.zoospec import get_zoo_spec
from zoo.device import resolve_device
from zoo.environment import machine_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits-mlp")
    parser.add_argument("--variant", default="standard")
    parser.add_argument("--models", type=int, help="models in the shard (default: the preset's batch_models)")
    parser.add_argument("--fixed-epochs", type=int, help="epochs of every model in the fixed run (default: the mean)")
    parser.add_argument("--train-subset", type=int, help="train on the first N examples (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--synthetic", action="store_true", help="random data of the data set's shape")
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    spec = dataclasses.replace(get_zoo_spec(args.preset), variant=args.variant)
    arch, device, m = spec.arch_spec(), resolve_device(args.device), args.models or spec.batch_models
    data = synthetic(spec.dataset) if args.synthetic else load_images(spec.dataset, args.data_dir)
    data = data.subset(train=args.train_subset or spec.train_subset)
    real = [spec.job(i) for i in range(m)]
    epochs = [job.epochs for job in real]
    fixed_epochs = args.fixed_epochs or max(1, round(sum(epochs) / m))
    fixed = [dataclasses.replace(job, epochs=fixed_epochs) for job in real]

    def timed(jobs) -> tuple[float, float]:  # noqa: ANN001
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), time.process_time()
        train_batched(arch, data, jobs, spec.recipe, device=device, checkpoint_epochs=spec.checkpoint_epochs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu

    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"fixed": [], "real": []}
    cpu_times: dict[str, list[float]] = {"fixed": [], "real": []}
    for _ in range(args.repeats):
        for name, jobs in (("fixed", fixed), ("real", real)):
            print(f"{name}: {m} models, {sum(j.epochs for j in jobs)} model-epochs on {device} ...", file=sys.stderr)
            wall, cpu = timed(jobs)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    load_after = os.getloadavg()[0]

    work = {"fixed": m * fixed_epochs, "real": sum(epochs)}
    rate = {name: work[name] / min(times[name]) for name in times}
    cpu_rate = {name: work[name] / min(cpu_times[name]) for name in times}
    ratio, cpu_ratio = rate["real"] / rate["fixed"], cpu_rate["real"] / cpu_rate["fixed"]
    old_ratio = sum(epochs) / (m * max(epochs))
    report = {
        "preset": args.preset, "variant": args.variant, "device": str(device), "models": m,
        "real_epochs": {"min": min(epochs), "max": max(epochs), "mean": round(sum(epochs) / m, 2)},
        "fixed_epochs": fixed_epochs, "train_examples": len(data.x_train), "batch_size": spec.recipe.batch_size,
        "synthetic": args.synthetic, "model_epochs": work,
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "cpu_seconds": {k: [round(t, 2) for t in v] for k, v in cpu_times.items()},
        "model_epochs_per_second": {k: round(v, 3) for k, v in rate.items()}, "ratio": round(ratio, 3),
        "model_epochs_per_cpu_second": {k: round(v, 3) for k, v in cpu_rate.items()}, "cpu_ratio": round(cpu_ratio, 3),
        "old_ratio_estimate": round(old_ratio, 3),
        "old_model_epochs_per_second_estimate": round(rate["fixed"] * old_ratio, 3),
        "load_average": [round(load_before, 2), round(load_after, 2)], "machine": machine_record(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.preset} ({args.variant}) on {device}, {m} models, {len(data.x_train)} examples, "
          f"batch {spec.recipe.batch_size}, {torch.get_num_threads()} thread(s)")
    for name in ("fixed", "real"):
        label = f"{fixed_epochs} epochs each" if name == "fixed" else f"epochs {min(epochs)}-{max(epochs)}"
        print(f"  {name:5} ({label:>15}) {work[name]:6d} model-epochs  {min(times[name]):8.1f} s  "
              f"{rate[name]:9.2f} model-epochs/s  {cpu_rate[name]:9.2f} per CPU-second   "
              f"(wall: {_list(times[name])} s; CPU: {_list(cpu_times[name])} s)")
    print(f"  real / fixed = {ratio:.2f} wall-clock, {cpu_ratio:.2f} CPU time (goal >= 0.90); before retirement "
          f"about {old_ratio:.2f} (= sum(epochs) / (M x max epochs)); "
          f"load average {load_before:.1f} -> {load_after:.1f}")


def _list(seconds: list[float]) -> str:
    return ", ".join(f"{t:.1f}" for t in seconds)


if __name__ == "__main__":
    main()
