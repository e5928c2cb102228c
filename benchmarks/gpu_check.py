"""GPU in one shot (issue 15): the CUDA correctness checks and the throughput runs of the batched
trainer, in one bounded call, written to ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``.

    python3 -m benchmarks.gpu_check --out DIR [--device cuda] [--budget-s 420] [--data-dir D]
    python3 -m benchmarks.gpu_check --out DIR --smoke      # the same code paths, tiny, on CPU

Why one script: GPU time comes in rare, short loans (15 minutes per task, all tries together), so
everything a GPU must answer is prepared and tested on CPU (``--smoke``, run by
``tests/test_gpu_check.py``) and then run on the device in one call that cannot overrun.

Checks (pass/fail, each with its measured deviation and its tolerance):

- ``batched_equals_sequential``: ``train_batched`` against ``train_sequential`` on the device, TF32
  off (so both are IEEE fp32 and differ only by summation order): the MLP in all three variants on
  digits, and the CNN and ResNet8 (W-Asym, augmentation on) on synthetic data of their shapes.
- ``w_asym_fixed_exact``: fixed W-Asym entries bit-exact after training.
- ``divergence_isolated``: a model with lr 1e25 diverges, and the others match a run without it.
- ``bf16_autocast``: finite results with accuracies close to fp32.
- ``resume``: ``generate`` n models, then 2n into the same folder: every model once, ``verify_zoo`` ok.

Throughput: the zoo presets (``mnist-mlp``, ``mnist-cnn``, ``cifar10-resnet8``) on synthetic data
of their data set's shape (or the real MNIST files with ``--data-dir``) at several batch sizes
(models per shard), fp32 and bf16 autocast, plus channels-last and ``torch.compile`` where the
trainer has a way to ask for them. Each row trains a warm-up epoch, timed epochs and a last one of
at most ``max_steps`` steps, then extrapolates to the data set's real size and 10 epochs:
models/hour and the fraction of the GPU's dense peak, from FLOPs counted by ``FlopCounterMode``.
A wall-clock budget skips the rows that would not fit, in priority order (ResNet8 first).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import inspect
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from generators.data import DATASET_SHAPES, ImageData, load_images
from generators.recipe import Augment, Recipe, TrainJob
from generators.reference import train_sequential
from generators.trainer import TrainResult, train_batched
from generators.zoospec import Dist, get_zoo_spec
from zoo import ParamLayout, get_arch
from zoo.environment import cpu_model
from zoo.nets import ArchSpec

__all__ = ["CheckResult", "GpuCheckConfig", "RowSpec", "build_config", "main", "run_checks", "run_throughput"]

# Dense (no sparsity) peaks in TFLOP/s, per NVIDIA's H100/H200 SXM data sheets (same SMs and clocks).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
}
GOAL_RESNET8_MODELS_PER_HOUR = 15_000
# Size of each data set (train, test) as the presets use it before ``train_subset``.
DATASET_SIZES = {"digits": (1347, 450), "mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000),
                 "cifar10": (50_000, 10_000)}
EPOCHS_PER_MODEL = 10  # the rates are for models trained this many epochs (the goal's unit)
THROUGHPUT_LR = 1e-3
# Names a future trainer may give its switches; the script uses whichever the signature has.
COMPILE_PARAMS = ("compile", "compile_step", "torch_compile", "use_compile")
MEMORY_FORMAT_PARAMS = ("memory_format", "channels_last")


# -- configuration ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSpec:
    """One throughput run: a preset trained ``batch_models`` at a time in one precision/layout."""

    preset: str
    batch_models: int
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False

    @property
    def label(self) -> str:
        parts = [self.preset, f"M={self.batch_models}", "bf16" if self.bf16 else "fp32"]
        parts += [name for name, on in (("channels-last", self.channels_last), ("compile", self.compile),
                                        ("cudnn.benchmark", self.cudnn_benchmark)) if on]
        return " ".join(parts)


@dataclass(frozen=True)
class GpuCheckConfig:
    """Every size and tolerance of one run; :func:`build_config` makes the full and smoke ones.

    Tolerances follow ``torch.allclose``: ``|a - b| <= atol + rtol * |b|``.
    """

    out: Path
    device: str
    smoke: bool
    budget_s: float
    data_dir: str | None = None
    # correctness
    check_models: int = 4  # jobs of the digits MLP checks (epochs 2-3 as in tests/test_generators.py)
    check_epochs: int = 2
    digits_subset: tuple[int, int] | None = None  # (train, test) examples, None = all of digits
    conv_examples: tuple[int, int] = (512, 256)  # synthetic (train, test) examples of the conv checks
    conv_batch: int = 128
    weights_atol: float = 1e-4
    weights_rtol: float = 1e-4
    bf16_max_acc_gap: float = 0.05
    bf16_max_loss_gap: float = 0.1
    resume_models: int = 8
    resume_train_subset: int | None = None  # digits examples the resume zoo trains on (None = all 1,347)
    # throughput
    rows: tuple[RowSpec, ...] = ()
    max_steps: dict[str, int | None] = field(default_factory=dict)  # timed steps per epoch; None = real epoch
    timed_epochs: int = 1  # clean epochs timed between the warm-up epoch and the last one
    batch_size: int | None = None  # overrides the presets' batch size (smoke only)
    memory_fraction: float = 0.85  # skip a row whose estimated peak memory exceeds this share of the GPU
    min_row_s: float = 10.0  # do not start a row with less budget than this left
    grace_s: float = 30.0  # a started row stops after its warm-up only if it would end later than this past the budget
    compile_presets: tuple[str, ...] | None = None  # presets whose compile rows run (None = all)
    resume_workers: int | None = None  # local-engine workers for the resume check (None = engine default)
    # torch threads for the run (None = torch's): one in smoke runs, whose tiny kernels gain nothing
    # from a second thread and lose up to 10x when another process takes a core (issue 15).
    threads: int | None = None


def full_rows() -> list[RowSpec]:
    """The rows in the order they run, most needed first, since the budget may stop the list:
    ResNet8 (the goal) in fp32 and bf16; the two MNIST presets at one size each; then the other
    sizes and switches. 128 ResNet8s at batch 512 save about 70 GB of activations in fp32
    (1.07 MB per example, measured with saved-tensor hooks), so larger shards run only when the
    measured memory per model says they fit. Evaluation runs 2,048 examples at once for every
    model, which bounds the CNN: at M=1024 one activation tensor is already about 26 GB, so 512
    comes first and 1024 only when 512's measured memory says it fits."""
    r, c, m = "cifar10-resnet8", "mnist-cnn", "mnist-mlp"
    return [
        RowSpec(r, 64), RowSpec(r, 64, bf16=True), RowSpec(r, 128, bf16=True), RowSpec(r, 128),
        RowSpec(r, 64, bf16=True, compile=True), RowSpec(r, 64, compile=True),
        RowSpec(r, 64, bf16=True, channels_last=True), RowSpec(r, 64, channels_last=True),
        RowSpec(c, 512), RowSpec(c, 512, bf16=True), RowSpec(m, 4096), RowSpec(m, 4096, bf16=True),
        RowSpec(r, 128, bf16=True, cudnn_benchmark=True), RowSpec(r, 192, bf16=True),
        RowSpec(r, 32, bf16=True), RowSpec(r, 32),
        RowSpec(c, 1024), RowSpec(c, 1024, bf16=True), RowSpec(c, 256), RowSpec(c, 256, bf16=True),
        RowSpec(c, 512, bf16=True, compile=True), RowSpec(c, 512, compile=True),
        RowSpec(c, 512, bf16=True, channels_last=True), RowSpec(c, 512, channels_last=True),
        RowSpec(m, 1024), RowSpec(m, 1024, bf16=True),
        RowSpec(m, 4096, bf16=True, compile=True), RowSpec(m, 4096, compile=True),
        RowSpec(m, 4096, channels_last=True), RowSpec(m, 16384), RowSpec(m, 16384, bf16=True),
    ]


def _smoke_rows(rows: Sequence[RowSpec]) -> tuple[RowSpec, ...]:
    """Every variant of the full run at 2-3 models: the largest size of a preset becomes 3, the
    others 2 (so the memory estimate from a smaller row is exercised), duplicates dropped."""
    largest = {r.preset: max(x.batch_models for x in rows if x.preset == r.preset) for r in rows}
    small = (dataclasses.replace(r, batch_models=3 if r.batch_models == largest[r.preset] else 2) for r in rows)
    return tuple(dict.fromkeys(small))


def build_config(out: str | Path, *, smoke: bool, device: str | None = None, budget_s: float | None = None,
                 data_dir: str | None = None) -> GpuCheckConfig:
    """The full (GPU) configuration, or the smoke one: the same rows and checks, tiny."""
    rows = full_rows()
    if smoke:
        return GpuCheckConfig(
            out=Path(out), device=device or "cpu", smoke=True, budget_s=budget_s or 120.0, data_dir=data_dir,
            check_models=3, check_epochs=1, digits_subset=(256, 128), conv_examples=(64, 32), conv_batch=32,
            resume_models=4, resume_train_subset=256, threads=1,
            rows=_smoke_rows(rows), max_steps={p: 2 for p in {r.preset for r in rows}}, timed_epochs=1,
            batch_size=8, min_row_s=0.0, compile_presets=("mnist-mlp",), resume_workers=1,
        )
    return GpuCheckConfig(
        out=Path(out), device=device or "cuda", smoke=False, budget_s=budget_s or 420.0, data_dir=data_dir,
        rows=rows,
        # ResNet8: 16 of the 98 steps of a CIFAR-10 epoch; the MNIST presets' epochs (157 steps of
        # 64 on 10,000 examples) run whole: their steps are short, and per-epoch costs that do not
        # grow with the data (one host sync per model and curve) would be scaled up otherwise.
        max_steps={"cifar10-resnet8": 16, "mnist-cnn": None, "mnist-mlp": None},
    )


# -- small helpers ------------------------------------------------------------------------------------
class Progress:
    """Progress lines on stderr, stamped with the seconds since start (the budget's clock)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        print(f"[gpu_check {self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _float32_mode(*, tf32: bool | None = None, cudnn_benchmark: bool | None = None) -> Iterator[None]:
    """Set TF32 and cudnn.benchmark for a block and restore them: the correctness checks need IEEE
    fp32 (TF32 rounds matmul inputs to 10 mantissa bits), the throughput rows torch's defaults."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = cudnn_benchmark
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def _precision_settings() -> dict[str, Any]:
    return {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def synthetic_data(dataset: str, n_train: int, n_test: int, device: torch.device, seed: int = 0) -> ImageData:
    """Random normal images of ``dataset``'s shape and random labels, made on the device: speed
    does not depend on pixel values, and the files need not be there."""
    shape, classes = DATASET_SHAPES[dataset]
    g = torch.Generator(device=device).manual_seed(seed)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(n, *shape, generator=g, device=device),
                torch.randint(0, classes, (n,), generator=g, device=device))

    (x_train, y_train), (x_test, y_test) = part(n_train), part(n_test)
    return ImageData(f"synthetic-{dataset}", x_train, y_train, x_test, y_test, classes)


def check_jobs(n: int, epochs: int) -> list[TrainJob]:
    """The jobs of tests/test_generators.py: spread learning rates, decays, smoothing, epochs."""
    return [TrainJob(i, 1000 + i, 10 ** -(1.5 + 0.5 * (i % 3)), 10 ** -(1 + i % 4), 0.05 * (i % 4), epochs + i % 2)
            for i in range(n)]


def _trainer_switch(names: Sequence[str]) -> str | None:
    """The ``train_batched`` keyword among ``names``, if the trainer has one (checked at run time:
    the trainer is being extended while this script is written)."""
    params = inspect.signature(train_batched).parameters
    return next((n for n in names if n in params), None)


def trainer_features() -> dict[str, str]:
    """What the trainer offers for compile and channels-last, in words for the report."""
    signature = f"train_batched{inspect.signature(train_batched)}"
    compile_name, layout_name = _trainer_switch(COMPILE_PARAMS), _trainer_switch(MEMORY_FORMAT_PARAMS)
    return {
        "compile": f"supported via train_batched({compile_name}=...)" if compile_name else
        f"not supported: train_batched has no compile switch (none of {', '.join(COMPILE_PARAMS)})",
        "train_batched": signature,
        "channels_last": f"supported via train_batched({layout_name}=...)" if layout_name else
        f"not supported: train_batched has no memory-format switch (none of {', '.join(MEMORY_FORMAT_PARAMS)})",
    }


def _feature_kwargs(row: RowSpec) -> dict[str, Any]:
    """Keyword arguments asking the trainer for the row's compile and layout."""
    kwargs: dict[str, Any] = {"autocast_bf16": row.bf16}
    if row.compile:
        kwargs[_trainer_switch(COMPILE_PARAMS)] = True
    if row.channels_last:
        name = _trainer_switch(MEMORY_FORMAT_PARAMS)
        kwargs[name] = torch.channels_last if name == "memory_format" else True
    return kwargs


def _has_conv(arch: ArchSpec) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in arch.build(init_seed=0).modules())


# -- correctness checks --------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """One named check: ``pass``, ``fail``, ``skipped`` (with the reason) or ``error``."""

    name: str
    status: str
    tolerance: str
    max_deviation: float | None = None
    detail: str = ""
    seconds: float = 0.0
    cases: list[dict[str, Any]] = field(default_factory=list)


def _deviation(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / (atol + rtol |b|)): the second is <= 1 exactly when allclose."""
    diff = (a.double() - b.double()).abs()
    if not torch.isfinite(diff).all():
        return math.inf, math.inf
    return float(diff.max()), float((diff / (atol + rtol * b.double().abs())).max())


def _digits(cfg: GpuCheckConfig) -> ImageData:
    data = load_images("digits")
    return data.subset(*cfg.digits_subset) if cfg.digits_subset else data


def _conv_cases(cfg: GpuCheckConfig, device: torch.device) -> list[tuple[str, ArchSpec, ImageData, Recipe, int]]:
    """(name, W-Asym arch, synthetic data, recipe with augmentation, epochs) of the conv checks."""
    augment = Augment(flip=True, translate=2, cutout=4)
    recipe = Recipe(batch_size=cfg.conv_batch, augment=augment)
    n_train, n_test = cfg.conv_examples
    return [("cnn-mnist w_asym", get_arch("cnn-mnist", "w_asym"), synthetic_data("mnist", n_train, n_test, device, 1),
             recipe, 1),
            ("resnet8 w_asym", get_arch("resnet8", "w_asym"), synthetic_data("cifar10", n_train, n_test, device, 2),
             dataclasses.replace(recipe, peak_epoch=1), 1)]


def check_batched_equals_sequential(cfg: GpuCheckConfig, device: torch.device) -> CheckResult:
    """The batched trainer must be a faster way to get the sequential trainer's models, on this
    device too: vmap turns each model's convolutions into one grouped convolution and its matmuls
    into batched ones, kernels CPU testing never exercises."""
    atol, rtol = cfg.weights_atol, cfg.weights_rtol
    digits = _digits(cfg)
    cases = [(f"mlp-digits {v}", get_arch("mlp-digits", v), digits, Recipe(batch_size=64, peak_fraction=0.3),
              cfg.check_epochs) for v in ("standard", "w_asym", "sigma_asym")]
    cases += _conv_cases(cfg, device)
    report, ok = [], True
    with _float32_mode(tf32=False):
        for name, arch, data, recipe, epochs in cases:
            jobs = check_jobs(cfg.check_models if name.startswith("mlp") else 2, epochs)
            batched = train_batched(arch, data, jobs, recipe, device=device, checkpoint_epochs=(0, 1))
            worst_abs = worst_ratio = acc_gap = 0.0
            init_exact = True
            for result in batched:
                ref = train_sequential(arch, data, result.job, recipe, device=device, checkpoint_epochs=(0, 1))
                dev_abs, ratio = _deviation(result.weights, ref.weights, atol, rtol)
                worst_abs, worst_ratio = max(worst_abs, dev_abs), max(worst_ratio, ratio)
                init_exact &= torch.equal(result.checkpoints[0], ref.checkpoints[0])
                acc_gap = max(acc_gap, abs(result.metrics["test_acc"] - ref.metrics["test_acc"]))
            acc_limit = 2 / len(data.x_test)
            case_ok = worst_ratio <= 1 and init_exact and acc_gap <= acc_limit + 1e-12
            ok &= case_ok
            report.append({"case": name, "models": len(jobs), "max_abs_weight_diff": worst_abs,
                           "allclose_ratio": worst_ratio, "init_exact": init_exact, "max_test_acc_gap": acc_gap,
                           "test_acc_limit": acc_limit, "pass": case_ok})
    return CheckResult(
        "batched_equals_sequential", "pass" if ok else "fail",
        f"final weights allclose(atol={atol:g}, rtol={rtol:g}) with TF32 off; epoch-0 weights equal; "
        "|test_acc gap| <= 2/n_test",
        max(c["max_abs_weight_diff"] for c in report),
        "; ".join(f"{c['case']}: {c['max_abs_weight_diff']:.2e}" for c in report), cases=report)


def _divergence_run(arch: ArchSpec, data: ImageData, recipe: Recipe, epochs: int,
                    device: torch.device) -> tuple[list[TrainResult], list[TrainResult]]:
    """[good, lr-1e25, good] together, and the two good ones alone."""
    good = check_jobs(2, epochs)
    bad = TrainJob(99, 7, 1e25, 0.0, 0.0, epochs)  # weights overflow to inf within a few steps
    with _float32_mode(tf32=False):
        mixed = train_batched(arch, data, [good[0], bad, good[1]], recipe, device=device)
        alone = train_batched(arch, data, good, recipe, device=device)
    return mixed, alone


def _divergence_cases(cfg: GpuCheckConfig, device: torch.device) -> list[tuple[str, ArchSpec, list, list]]:
    mlp = get_arch("mlp-digits", "w_asym")
    cases = [("mlp-digits w_asym", mlp, *_divergence_run(mlp, _digits(cfg), Recipe(batch_size=64), cfg.check_epochs,
                                                          device))]
    name, arch, data, recipe, epochs = _conv_cases(cfg, device)[1]
    cases.append((name, arch, *_divergence_run(arch, data, recipe, epochs, device)))
    return cases


def check_divergence_and_fixed(cfg: GpuCheckConfig, device: torch.device) -> list[CheckResult]:
    """Two checks from one pair of runs: a diverging model must not disturb the others (no NaN
    through shared kernels or reductions), and fixed W-Asym entries stay exactly what the
    architecture fixes, bit for bit, whatever training did to the trainable ones."""
    start = time.perf_counter()
    cases = _divergence_cases(cfg, device)
    seconds = time.perf_counter() - start
    div_rows, fixed_rows = [], []
    for name, arch, mixed, alone in cases:
        statuses = [r.status for r in mixed]
        pairs = [_deviation(r.weights, a.weights, cfg.weights_atol, cfg.weights_rtol) for r, a in
                 zip((mixed[0], mixed[2]), alone)]
        dev, ratio = max(p[0] for p in pairs), max(p[1] for p in pairs)
        div_rows.append({"case": name, "statuses": statuses, "max_abs_weight_diff": dev, "allclose_ratio": ratio,
                         "pass": statuses == ["ok", "diverged", "ok"] and ratio <= 1})
        model = arch.build()
        layout = ParamLayout.from_module(model)
        fixed = ~layout.trainable_mask
        expected = layout.flatten(model)[fixed]
        ok_results = [r for r in (*mixed, *alone) if r.status == "ok"]
        fixed_dev = max((float((r.weights[fixed].double() - expected.double()).abs().max()) for r in ok_results),
                        default=math.nan)
        exact = bool(ok_results) and all(torch.equal(r.weights[fixed], expected) for r in ok_results)
        fixed_rows.append({"case": name, "fixed_entries": int(fixed.sum()), "models": len(ok_results),
                           "max_abs_diff": fixed_dev, "pass": exact})
    return [
        CheckResult("divergence_isolated", "pass" if all(r["pass"] for r in div_rows) else "fail",
                    f"statuses [ok, diverged, ok]; the good models' weights allclose(atol={cfg.weights_atol:g}, "
                    f"rtol={cfg.weights_rtol:g}) to a run without the diverging one: kernels for 3 models may sum "
                    "in another order than for 2, so a model is defined up to the batched-vs-sequential "
                    "tolerance; a leak of inf/NaN or of another model's update is far larger",
                    max(r["max_abs_weight_diff"] for r in div_rows),
                    "; ".join(f"{r['case']}: {r['statuses']}, {r['max_abs_weight_diff']:.2e}" for r in div_rows),
                    seconds, div_rows),
        CheckResult("w_asym_fixed_exact", "pass" if all(r["pass"] for r in fixed_rows) else "fail",
                    "fixed entries bit-equal to the architecture's fixed values (every ok model)",
                    max(r["max_abs_diff"] for r in fixed_rows),
                    "; ".join(f"{r['case']}: {r['fixed_entries']} fixed entries x {r['models']} models, "
                              f"max diff {r['max_abs_diff']:.1e}" for r in fixed_rows), 0.0, fixed_rows),
    ]


def check_bf16(cfg: GpuCheckConfig, device: torch.device) -> CheckResult:
    """bf16 autocast must train: finite weights and losses, and (on real data, where accuracy means
    something) test accuracies within ``bf16_max_acc_gap`` of fp32; bf16 keeps 8 mantissa bits, so
    weights themselves drift apart and are not compared. On the synthetic ResNet8 data, where
    accuracy is chance, the final train losses are compared instead."""
    rows, ok = [], True
    digits = _digits(cfg)
    cases = [("mlp-digits standard", get_arch("mlp-digits"), digits, Recipe(batch_size=64, peak_fraction=0.3),
              cfg.check_epochs, "test_acc", cfg.bf16_max_acc_gap)]
    name, arch, data, recipe, epochs = _conv_cases(cfg, device)[1]
    cases.append((name, arch, data, recipe, epochs, "train_loss", cfg.bf16_max_loss_gap))
    with _float32_mode(tf32=False):
        for name, arch, data, recipe, epochs, metric, limit in cases:
            jobs = check_jobs(cfg.check_models if name.startswith("mlp") else 2, epochs)
            fp32 = train_batched(arch, data, jobs, recipe, device=device)
            bf16 = train_batched(arch, data, jobs, recipe, device=device, autocast_bf16=True)
            finite = all(r.status == "ok" and bool(torch.isfinite(r.weights).all())
                         and all(math.isfinite(v) for v in r.metrics.values()) for r in bf16)
            gap = max(abs(a.metrics[metric] - b.metrics[metric]) for a, b in zip(fp32, bf16))
            case_ok = finite and gap <= limit
            ok &= case_ok
            rows.append({"case": name, "metric": metric, "max_gap": gap, "limit": limit, "finite": finite,
                         "fp32": [a.metrics[metric] for a in fp32], "bf16": [b.metrics[metric] for b in bf16],
                         "pass": case_ok})
    return CheckResult(
        "bf16_autocast", "pass" if ok else "fail",
        f"every bf16 model ok and finite; |test_acc(bf16) - test_acc(fp32)| <= {cfg.bf16_max_acc_gap:g} on digits; "
        f"|train_loss gap| <= {cfg.bf16_max_loss_gap:g} on synthetic ResNet8 data",
        max(r["max_gap"] for r in rows), "; ".join(f"{r['case']}: {r['metric']} gap {r['max_gap']:.3f}" for r in rows),
        cases=rows)


def _resume_engine(cfg: GpuCheckConfig) -> Any:
    """The local engine with ``resume_workers`` workers (None: one per core, or per GPU)."""
    from generators.engines import LocalEngine

    return LocalEngine(workers=cfg.resume_workers)


def check_resume(cfg: GpuCheckConfig, device: torch.device) -> CheckResult:
    """An interrupted zoo must resume to every model once: ``generate`` n models, then 2n into the
    same folder (what a rerun after a kill does, minus the kill, which tests/test_generators.py
    covers on CPU), on this device."""
    tolerance = "second run trains exactly n; indices 0..2n-1 each once; verify_zoo(...).ok"
    from generators.generate import generate
    from zoo.storage import SPLITS, load
    from zoo.storage.verify import verify_zoo

    n = cfg.resume_models
    spec = dataclasses.replace(
        get_zoo_spec("digits-mlp"), name="gpu-check-resume", n_models=n, batch_models=max(1, n // 2),
        checkpoint_epochs=(0, 1), train_subset=cfg.resume_train_subset,
        hyperparameters=dataclasses.replace(get_zoo_spec("digits-mlp").hyperparameters,
                                            epochs=Dist("int_uniform", 1, 2)))
    with tempfile.TemporaryDirectory(prefix="gpu_check_resume_") as tmp:
        out = Path(tmp) / "zoo"
        first = generate(spec, out, device=device.type, quiet=True, engine=_resume_engine(cfg))
        second = generate(dataclasses.replace(spec, n_models=2 * n), out, device=device.type, quiet=True,
                          engine=_resume_engine(cfg))
        indices = sorted(i for s in SPLITS for i in load(out, s, ["index"])["index"].tolist())
        verify = verify_zoo(out)
    ok = (first.trained == n and second.trained == n and second.skipped == n
          and indices == list(range(2 * n)) and verify.ok)
    detail = (f"first run trained {first.trained}, second trained {second.trained} and kept {second.skipped}; "
              f"{len(indices)} rows, {len(set(indices))} distinct; verify ok={verify.ok}"
              + (f" ({'; '.join(verify.problems[:3])})" if verify.problems else ""))
    missing = len(set(range(2 * n)) ^ set(indices)) + len(indices) - len(set(indices))
    return CheckResult("resume", "pass" if ok else "fail", tolerance, float(missing), detail)


def run_checks(cfg: GpuCheckConfig, device: torch.device, log: Progress,
               record: Callable[[CheckResult], None]) -> list[CheckResult]:
    """Every check, each on its own: an exception is that check's ``error``, not the run's end."""
    steps: list[tuple[str, Callable[[], CheckResult | list[CheckResult]]]] = [
        ("batched_equals_sequential", lambda: check_batched_equals_sequential(cfg, device)),
        ("divergence_isolated + w_asym_fixed_exact", lambda: check_divergence_and_fixed(cfg, device)),
        ("bf16_autocast", lambda: check_bf16(cfg, device)),
        ("resume", lambda: check_resume(cfg, device)),
    ]
    results = []
    for name, step in steps:
        log(f"check {name} ...")
        start = time.perf_counter()
        try:
            produced = step()
            produced = produced if isinstance(produced, list) else [produced]
        except Exception as err:  # noqa: BLE001 (a broken check is a result, the rest still runs)
            produced = [CheckResult(name, "error", "-", detail=f"{err.__class__.__name__}: {err}",
                                    cases=[{"traceback": traceback.format_exc(limit=8)}])]
        for result in produced:
            result.seconds = result.seconds or round(time.perf_counter() - start, 2)
            log(f"check {result.name}: {result.status} (max deviation {result.max_deviation}) {result.detail}")
            results.append(result)
            record(result)
    return results


# -- throughput ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFlops:
    """FLOPs of one model per example (matmuls and convolutions, as ``FlopCounterMode`` counts;
    norms and elementwise ops are not counted, so the peak fractions are slight underestimates)."""

    train: float  # forward + backward of one training example
    forward: float  # one evaluated example


def count_flops(arch: ArchSpec, dataset: str, batch: int = 4) -> ModelFlops:
    """One model's FLOPs per example, counted on CPU on a small batch (linear in the batch)."""
    shape, classes = DATASET_SHAPES[dataset]
    model = arch.build(init_seed=0)
    x, y = torch.randn(batch, *shape), torch.randint(0, classes, (batch,))
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(x), y).backward()
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(x)
    return ModelFlops(train.get_total_flops() / batch, forward.get_total_flops() / batch)


def _peak(device: torch.device, row: RowSpec, has_conv: bool) -> tuple[float | None, str]:
    """The dense peak a row is measured against, and its name: bf16 for autocast rows; for fp32
    rows TF32 where the kernels doing the FLOPs may use it (cuDNN convolutions by torch's default,
    matmuls only if enabled), plain fp32 otherwise."""
    if device.type != "cuda":
        return None, "no peak known for this device"
    name = torch.cuda.get_device_name(device)
    table = next((t for key, t in PEAK_TFLOPS.items() if key in name), None)
    if table is None:
        return None, f"no peak known for {name}"
    tf32 = torch.backends.cudnn.allow_tf32 if has_conv else torch.backends.cuda.matmul.allow_tf32
    kind = "bf16" if row.bf16 else "tf32" if tf32 else "fp32"
    return table[kind], f"{kind} dense {table[kind]:g} TFLOP/s"


def _row_data(cfg: GpuCheckConfig, dataset: str, train_subset: int | None, n_train: int, n_test: int,
              device: torch.device) -> tuple[ImageData, str]:
    """The row's data: real MNIST files with ``--data-dir`` where they load, synthetic otherwise."""
    if cfg.data_dir and dataset != "cifar10":
        try:
            data = load_images(dataset, cfg.data_dir)
            return data.subset(min(n_train, train_subset or n_train), n_test).to(device), f"{dataset} files"
        except Exception as err:  # noqa: BLE001 (missing files fall back to synthetic, said in the row)
            return synthetic_data(dataset, n_train, n_test, device), f"synthetic ({err.__class__.__name__})"
    return synthetic_data(dataset, n_train, n_test, device), "synthetic"


class _OverBudget(Exception):
    """Raised from the epoch callback when the next epoch would end past the budget."""


@dataclass
class _Budget:
    """The wall-clock guard: rows are skipped, or stopped after their warm-up epoch, rather than
    run past the deadline."""

    deadline: float
    min_row_s: float
    seconds_per_model: dict[str, float] = field(default_factory=dict)  # preset -> measured row s / M

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def why_not(self, row: RowSpec) -> str | None:
        left = self.left()
        predicted = self.seconds_per_model.get(row.preset, 0.0) * row.batch_models
        if left < max(self.min_row_s, predicted):
            guess = f", predicted {predicted:.0f} s from the preset's earlier rows" if predicted else ""
            return f"budget: {max(left, 0):.0f} s left{guess}"
        return None


def _memory_reason(cfg: GpuCheckConfig, row: RowSpec, device: torch.device,
                   bytes_per_model: dict[tuple[str, bool], float]) -> str | None:
    """Why the row would not fit, from the peak memory per model of a smaller measured row of
    the same preset and precision (an overestimate: it counts fixed costs once per model)."""
    per_model = bytes_per_model.get((row.preset, row.bf16))
    if device.type != "cuda" or per_model is None:
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    estimate = per_model * row.batch_models
    if estimate > cfg.memory_fraction * total:
        return (f"memory: estimated {estimate / 2**30:.0f} GiB > {cfg.memory_fraction:.0%} of {total / 2**30:.0f} GiB "
                f"(from a measured {per_model / 2**30:.2f} GiB per model)")
    return None


def measure_row(cfg: GpuCheckConfig, row: RowSpec, device: torch.device, flops: ModelFlops,
                budget: _Budget) -> dict[str, Any]:
    """Train ``row.batch_models`` models of the preset for a warm-up epoch, ``timed_epochs`` clean
    epochs and a last one, each of at most ``max_steps`` steps; extrapolate to the real epoch and
    10-epoch models.

    The last epoch is not a clean one: it ends with the final evaluation on the training set,
    before ``on_epoch`` in one version of the trainer and after it in the next (which retires
    finished models inside the epoch loop). So that cost is measured as the last epoch's excess
    over a clean one, which holds for both."""
    spec = get_zoo_spec(row.preset)
    arch = spec.arch_spec()
    recipe = dataclasses.replace(spec.recipe, batch_size=cfg.batch_size) if cfg.batch_size else spec.recipe
    full_train, full_test = DATASET_SIZES[spec.dataset]
    real_train = min(full_train, spec.train_subset or full_train)
    steps_real = math.ceil(real_train / recipe.batch_size)
    steps = min(steps_real, cfg.max_steps.get(row.preset) or steps_real)
    n_train = min(real_train, steps * recipe.batch_size)
    n_test = max(1, round(n_train * full_test / real_train))  # the real test/train ratio
    data, source = _row_data(cfg, spec.dataset, spec.train_subset, n_train, n_test, device)
    epochs = 2 + cfg.timed_epochs
    # The preset's hyperparameters, but every model the same epochs and a modest lr: speed does not
    # depend on either, and a model that diverged on random labels would retire early (the trainer
    # drops finished models from the batch) and make the later epochs look faster.
    jobs = [dataclasses.replace(spec.job(i), epochs=epochs, lr=THROUGHPUT_LR) for i in range(row.batch_models)]
    stamps: list[float] = []

    def on_epoch(epoch: int, _: int) -> None:
        _sync(device)
        stamps.append(time.perf_counter())
        first = stamps[0] - start
        projected = stamps[-1] + first * (epochs - epoch)  # later epochs at the warm-up's pace (an overestimate)
        if epoch < epochs and projected > budget.deadline + cfg.grace_s:
            raise _OverBudget(f"budget: warm-up epoch took {first:.1f} s; {epochs - epoch} more would end "
                              f"{projected - budget.deadline:.0f} s past the deadline")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _float32_mode(cudnn_benchmark=row.cudnn_benchmark or None):
        settings = _precision_settings()
        _sync(device)
        start = time.perf_counter()
        results = train_batched(arch, data, jobs, recipe, device=device, checkpoint_epochs=spec.checkpoint_epochs,
                                on_epoch=on_epoch, **_feature_kwargs(row))
        _sync(device)
        end = time.perf_counter()
    epoch_s = (stamps[cfg.timed_epochs] - stamps[0]) / cfg.timed_epochs
    final_s = max(0.0, end - stamps[cfg.timed_epochs] - epoch_s)  # final evaluation on the training set
    scale = real_train / n_train
    startup_s = max(0.0, stamps[0] - start - epoch_s)
    model_s = EPOCHS_PER_MODEL * epoch_s * scale + final_s * scale  # one shard, 10 epochs, real data size
    m = row.batch_models
    per_model_flops = (EPOCHS_PER_MODEL * (real_train * flops.train + full_test * flops.forward)
                       + real_train * flops.forward)
    rate = 3600 * m / model_s
    achieved = rate / 3600 * per_model_flops / 1e12
    peak, peak_basis = _peak(device, row, _has_conv(arch))
    return {
        "status": "ok", "data": source, "batch_size": recipe.batch_size, "steps_timed_per_epoch": steps,
        "steps_real_per_epoch": steps_real, "extrapolated": steps < steps_real, "scale": round(scale, 3),
        "timed_epochs": cfg.timed_epochs, "wall_s": round(end - start, 2), "startup_s": round(startup_s, 2),
        "epoch_s_timed": round(epoch_s, 4), "epoch_s_real": round(epoch_s * scale, 3),
        "final_eval_s_real": round(final_s * scale, 3),
        "model_steps_per_s": round(m * steps / epoch_s, 1),
        "models_per_hour": round(rate, 1), "models_per_hour_with_startup": round(3600 * m / (model_s + startup_s), 1),
        "model_epochs_per_hour": round(rate * EPOCHS_PER_MODEL, 1),
        "tflops_per_model": round(per_model_flops / 1e12, 4), "achieved_tflops": round(achieved, 3),
        "peak_tflops": peak, "peak_basis": peak_basis,
        "peak_fraction": round(achieved / peak, 5) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "diverged": sum(r.status != "ok" for r in results), "settings": settings,
    }


def _unsupported(cfg: GpuCheckConfig, row: RowSpec, arch_has_conv: bool) -> str | None:
    """Why a row's variant cannot run at all (said in the report, not hacked around)."""
    features = trainer_features()
    if row.channels_last and not arch_has_conv:
        return "not applicable: no convolutions (channels-last only changes conv activations)"
    if row.channels_last and _trainer_switch(MEMORY_FORMAT_PARAMS) is None:
        return features["channels_last"]
    if row.compile and _trainer_switch(COMPILE_PARAMS) is None:
        return features["compile"]
    if row.compile and cfg.compile_presets is not None and row.preset not in cfg.compile_presets:
        return f"smoke: compile runs only for {', '.join(cfg.compile_presets)} (compiling on CPU is slow)"
    return None


def run_throughput(cfg: GpuCheckConfig, device: torch.device, log: Progress, deadline: float,
                   record: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Every row in order; a row that cannot or must not run is recorded as skipped, with why."""
    budget = _Budget(deadline, cfg.min_row_s)
    flops: dict[str, ModelFlops] = {}
    has_conv: dict[str, bool] = {}
    bytes_per_model: dict[tuple[str, bool], float] = {}
    oom_at: dict[tuple[str, bool], int] = {}
    rows = []
    for row in cfg.rows:
        spec = get_zoo_spec(row.preset)
        if row.preset not in flops:
            flops[row.preset] = count_flops(spec.arch_spec(), spec.dataset)
            has_conv[row.preset] = _has_conv(spec.arch_spec())
        base = {"row": row.label, **dataclasses.asdict(row)}
        key = (row.preset, row.bf16)
        ran_out = row.batch_models >= oom_at.get(key, math.inf)
        reason = (_unsupported(cfg, row, has_conv[row.preset]) or budget.why_not(row)
                  or (f"memory: {row.preset} ran out of memory at M={oom_at[key]}" if ran_out else None)
                  or _memory_reason(cfg, row, device, bytes_per_model))
        if reason:
            result = {**base, "status": "skipped", "reason": reason}
        else:
            log(f"throughput {row.label} ...")
            start = time.perf_counter()
            try:
                result = {**base, **measure_row(cfg, row, device, flops[row.preset], budget)}
                budget.seconds_per_model[row.preset] = (time.perf_counter() - start) / row.batch_models
                if result.get("peak_memory_gib"):
                    bytes_per_model[key] = max(bytes_per_model.get(key, 0.0),
                                               result["peak_memory_gib"] * 2**30 / row.batch_models)
            except _OverBudget as err:
                result = {**base, "status": "skipped", "reason": str(err)}
            except torch.OutOfMemoryError as err:
                oom_at[key] = min(oom_at.get(key, row.batch_models), row.batch_models)
                result = {**base, "status": "skipped", "reason": f"out of memory: {str(err).splitlines()[0]}"}
            except Exception as err:  # noqa: BLE001 (a failing row is reported; the others still run)
                result = {**base, "status": "error", "reason": f"{err.__class__.__name__}: {err}",
                          "traceback": traceback.format_exc(limit=8)}
            finally:
                if device.type == "cuda":  # cycles may hold device memory the next row needs
                    gc.collect()
                    torch.cuda.empty_cache()
        if result["status"] == "ok":
            log(f"throughput {row.label}: {result['models_per_hour']:,.0f} models/h (10 epochs), "
                f"{result['achieved_tflops']:.2f} TFLOP/s, peak fraction {result['peak_fraction']}, "
                f"{result['wall_s']} s")
        else:
            log(f"throughput {row.label}: {result['status']}: {result['reason']}")
        rows.append(result)
        record(result)
    return rows


# -- report ----------------------------------------------------------------------------------------
def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (as the tests do)
        return False


def device_info(device: torch.device) -> dict[str, Any]:
    """The machine, and which of the packages the checks touch are installed (the GPU machine has
    a different set from the development one)."""
    modules = {name: _installed(name) for name in ("numpy", "yaml", "tqdm", "pyarrow", "sklearn", "datasets", "h5py")}
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "host": platform.node(), "cpu": cpu_model(), "cpu_threads": torch.get_num_threads(),
                            "modules": modules}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"name": props.name, "total_memory_gib": round(props.total_memory / 2**30, 1),
                 "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version()}
    else:
        info["name"] = info["cpu"] or platform.machine()
    return info


def goal_line(rows: Sequence[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """The best measured ResNet8 rate against the goal (only meaningful on a GPU)."""
    resnet = [r for r in rows if r["preset"] == "cifar10-resnet8" and r["status"] == "ok"]
    best = max(resnet, key=lambda r: r["models_per_hour"], default=None)
    if best is None:
        return {"goal_models_per_hour": GOAL_RESNET8_MODELS_PER_HOUR, "best": None, "met": None}
    return {"goal_models_per_hour": GOAL_RESNET8_MODELS_PER_HOUR, "best": best["row"],
            "best_models_per_hour": best["models_per_hour"],
            "met": best["models_per_hour"] >= GOAL_RESNET8_MODELS_PER_HOUR if device.type == "cuda" else None}


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, (int, float)) else str(value)


def _cell(text: Any) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    d = report["device"]
    gpu = f", CUDA {d.get('cuda')}, cuDNN {d.get('cudnn')}, {d.get('total_memory_gib')} GiB" if "cuda" in d else ""
    lines = [f"# GPU check{' (smoke, CPU: rates are not meaningful)' if report['smoke'] else ''}", "",
             f"- Device: {d.get('name')} ({d['device']}), torch {d['torch']}{gpu}",
             f"- Command: `{report['command']}`",
             f"- Started {report['started']}; {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget "
             f"({'finished' if report['finished'] else 'in progress or stopped'})",
             f"- Throughput precision settings (torch defaults unless the row says otherwise): {report['settings']}",
             f"- compile: {report['features']['compile']}",
             f"- channels-last: {report['features']['channels_last']}", "",
             "## Checks", "", "| check | status | max deviation | tolerance | detail | s |",
             "|---|---|--:|---|---|--:|"]
    for c in report["checks"]:
        lines.append(f"| {c['name']} | **{c['status']}** | {_fmt(c['max_deviation'], '.3g')} | "
                     f"{_cell(c['tolerance'])} | {_cell(c['detail'])} | {c['seconds']:.1f} |")
    goal = report["goal"]
    lines += ["", "## Throughput", "",
              f"Models/hour are for models of {EPOCHS_PER_MODEL} epochs on the data set's real size (CIFAR-10 "
              "50,000; the MNIST presets' 10,000-example subset), with per-epoch evaluation on 10,000 test "
              "examples and a final one on the training set, as `generate` trains a shard of M models. Each row "
              "trains a warm-up epoch, timed clean epochs and a last one (whose excess over a clean epoch is the "
              "final evaluation), each of at most the listed steps, and scales them to the real epoch. Startup "
              "(building the models, the warm-up epoch's excess, compiling) is left out of `models/h` and included "
              "in `with startup`. Every model gets the same epochs and lr 1e-3 (speed depends on neither; a model "
              "diverging on random labels would leave the batch early). FLOPs: matmuls and convolutions counted "
              "by `FlopCounterMode` on one model, so norms and elementwise work are not in `TFLOP/s`.", "",
              f"Goal: ≥ {goal['goal_models_per_hour']:,} ResNet8 10-epoch models/hour; best: "
              f"{_fmt(goal.get('best_models_per_hour'))} ({goal.get('best') or 'no ResNet8 row ran'}); met: "
              f"{'pending (no GPU)' if goal['met'] is None else goal['met']}.", "",
              "| row | status | models/h | with startup | TFLOP/s | peak | of peak | steps timed/real | "
              "wall s | GiB | note |", "|---|---|--:|--:|--:|---|--:|---|--:|--:|---|"]
    for r in report["throughput"]:
        if r["status"] == "ok":
            lines.append(
                f"| {r['row']} | ok | {_fmt(r['models_per_hour'])} | {_fmt(r['models_per_hour_with_startup'])} | "
                f"{_fmt(r['achieved_tflops'], '.2f')} | {r['peak_basis']} | {_fmt(r['peak_fraction'], '.2%')} | "
                f"{r['steps_timed_per_epoch']}/{r['steps_real_per_epoch']} | {r['wall_s']} | "
                f"{_fmt(r['peak_memory_gib'], '.1f')} | {r['data']}, {r['diverged']} diverged |")
        else:
            lines.append(f"| {r['row']} | {r['status']} | - | - | - | - | - | - | - | - | {_cell(r['reason'])} |")
    return "\n".join(lines) + "\n"


def _write(cfg: GpuCheckConfig, report: dict[str, Any]) -> None:
    """Both files, rewritten after every item: a run stopped from outside still leaves its results."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (cfg.out / "gpu_check.md").write_text(markdown(report))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: the same code paths in seconds")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda, or cpu with --smoke")
    parser.add_argument("--budget-s", type=float,
                        help="wall-clock budget; rows that would pass it are skipped (default 420, smoke 120)")
    parser.add_argument("--data-dir", help="real MNIST files for the MNIST presets (default: synthetic data)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything; exit 0 when no check failed or errored (skipped checks say why), 1 otherwise,
    2 when the device asked for is not there."""
    args = parse_args(argv)
    cfg = build_config(args.out, smoke=args.smoke, device=args.device, budget_s=args.budget_s, data_dir=args.data_dir)
    log = Progress()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device here; use --smoke (CPU) or run on a GPU machine", file=sys.stderr)
        return 2
    if cfg.device == "cpu" and not cfg.smoke:
        print("gpu_check: error: the full sizes need a GPU; on CPU use --smoke", file=sys.stderr)
        return 2
    device = torch.device(cfg.device)
    deadline = log.start + cfg.budget_s
    command = " ".join(["python3 -m benchmarks.gpu_check", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {
        "tool": "benchmarks.gpu_check", "smoke": cfg.smoke, "command": command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_s": cfg.budget_s,
        "elapsed_s": 0.0, "finished": False, "device": device_info(device), "settings": _precision_settings(),
        "peak_tflops_table": PEAK_TFLOPS, "features": trainer_features(),
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "rows"}, "checks": [], "throughput": [],
        "goal": goal_line([], device),
    }
    log(f"{report['device']['name']} ({device}), torch {torch.__version__}, budget {cfg.budget_s:.0f} s"
        f"{', smoke' if cfg.smoke else ''}")

    def record_check(result: CheckResult) -> None:
        report["checks"].append(dataclasses.asdict(result))
        report["elapsed_s"] = round(log.elapsed(), 1)
        _write(cfg, report)

    def record_row(row: dict[str, Any]) -> None:
        report["throughput"].append(row)
        report["goal"] = goal_line(report["throughput"], device)
        report["elapsed_s"] = round(log.elapsed(), 1)
        _write(cfg, report)

    _write(cfg, report)
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        checks = run_checks(cfg, device, log, record_check)
        run_throughput(cfg, device, log, deadline, record_row)
    finally:
        torch.set_num_threads(threads)
    report["elapsed_s"], report["finished"] = round(log.elapsed(), 1), True
    _write(cfg, report)
    failed = [c.name for c in checks if c.status in ("fail", "error")]
    log(f"done in {log.elapsed():.0f} s: checks {', '.join(f'{c.name}={c.status}' for c in checks)}; "
        f"{sum(r['status'] == 'ok' for r in report['throughput'])}/{len(report['throughput'])} throughput rows ran; "
        f"wrote {cfg.out / 'gpu_check.json'} and {cfg.out / 'gpu_check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
