"""The leaderboard: every (zoo, metanet) cell of a config, with R² and Kendall τ (mean ± std over
seeds), written as JSON, CSV, Markdown, a grouped bar chart and a self-contained HTML page.

Zoos are existing directories or zoo specs generated first (resumably). Each finished cell is
saved on its own, so re-running a config skips what is done.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import sys
import time
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import environment, log, settings_difference, summary, summary_text
from zoo.workers import cpu_cores, worker_pool
from generators.generate import generate
from generators.zoospec import ZooSpec, get_zoo_spec, zoo_spec_from_dict
from metanets.models import get_metanet
from metanets.train import MetanetConfig, train_metanet
from zoo.config import dataclass_from_dict, read_config_file
from zoo.errors import SpecError
from zoo.progress import progress_bar
from zoo.storage.files import atomic_write_text

__all__ = ["ZooEntry", "MetanetSetting", "BenchConfig", "load_bench_config", "run_bench", "run_cell"]


@dataclass(frozen=True)
class ZooEntry:
    """A column of the leaderboard: an existing zoo (``path``), one to generate from ``preset``
    with ``overrides`` of its zoo-spec fields (e.g. variant, n_models, arch), or the zoo of an
    earlier column (``of``). ``augment``: train the metanets with a random hidden-unit permutation
    of each network in each batch (for standard zoos; metanets invariant to those permutations
    are skipped, since it cannot change what they read)."""

    name: str
    path: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    of: str | None = None
    augment: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\\0"):
            # the name is a folder under --out/zoos and part of file names: it must stay inside --out
            raise SpecError(f"zoo name {self.name!r}: expected a plain folder name (without '/' or '\\', "
                            "not '.' or '..')")
        if sum(x is not None for x in (self.path, self.preset, self.of)) != 1:
            raise SpecError(f"zoo '{self.name}': give exactly one of 'path' (an existing zoo), 'preset', "
                            "or 'of' (the name of another zoo of this config)")
        if self.preset is not None:
            self.zoo_spec()  # unknown preset or bad overrides -> error now, before any work

    def zoo_spec(self) -> ZooSpec:
        assert self.preset is not None
        base = get_zoo_spec(self.preset).to_dict()
        return zoo_spec_from_dict({**base, "name": self.name, **self.overrides}, f"zoo '{self.name}'")


@dataclass(frozen=True)
class MetanetSetting:
    """A row of the leaderboard; unset options follow the metanet's protocol (MetanetConfig)."""

    model: str
    seeds: int = 5
    epochs: int = 50
    lrs: tuple[float, ...] | None = None
    normalize: bool | None = None
    sigmoid: bool | None = None
    warmup_steps: int = 0

    def config(self, target: str, augment: bool = False) -> MetanetConfig:
        extra = {"lrs": self.lrs} if self.lrs else {}
        return MetanetConfig(model=self.model, target=target, seeds=self.seeds, epochs=self.epochs,
                             normalize=self.normalize, sigmoid=self.sigmoid, augment=augment,
                             warmup_steps=self.warmup_steps, **extra)

    def runs_on(self, zoo: ZooEntry) -> bool:
        """Whether the cell exists: an augmented column skips permutation-invariant metanets."""
        return not (zoo.augment and get_metanet(self.model).invariant)


@dataclass(frozen=True)
class BenchConfig:
    name: str
    zoos: tuple[ZooEntry, ...]
    metanets: tuple[MetanetSetting, ...]
    target: str = "test_acc"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.zoos or not self.metanets:
            raise SpecError("a leaderboard needs at least one zoo and one metanet")
        names = [z.name for z in self.zoos]
        if len(set(names)) != len(names):  # they would share a folder and result files
            raise SpecError(f"zoo names {names}: expected each name once")
        for z in self.zoos:
            if z.of is not None and z.of not in [earlier.name for earlier in self.zoos[: self.zoos.index(z)]
                                                 if earlier.of is None]:
                raise SpecError(f"zoo '{z.name}': 'of: {z.of}' must name an earlier zoo of this config "
                                "that has a path or a preset")
        for m in self.metanets:
            m.config(self.target)  # unknown metanet or target -> error before any work

    def shrunk(self, n_models: int | None = None, seeds: int | None = None, epochs: int | None = None) -> BenchConfig:
        """The same leaderboard at a smoke-run size: zoos generated from presets get ``n_models``,
        every metanet ``seeds`` and ``epochs`` (``None`` keeps the config's value)."""
        for flag, value in (("n_models", n_models), ("seeds", seeds), ("epochs", epochs)):
            if value is not None and value < 1:
                raise SpecError(f"{flag} {value}: expected a positive number")
        zoos = tuple(dataclasses.replace(z, overrides={**z.overrides, "n_models": n_models})
                     if z.preset is not None and n_models is not None else z for z in self.zoos)
        metanets = tuple(dataclasses.replace(m, seeds=seeds or m.seeds, epochs=epochs or m.epochs) for m in self.metanets)
        return dataclasses.replace(self, zoos=zoos, metanets=metanets)


def load_bench_config(path: str | Path) -> BenchConfig:
    data = read_config_file(path, "benchmark config")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with name, zoos and metanets")
    return dataclass_from_dict(BenchConfig, data, str(path))


def run_bench(config: BenchConfig, out: str | Path, quiet: bool = False, jobs: int = 1) -> list[dict[str, Any]]:
    """Run every cell not yet done; write the leaderboard files; return the cells.

    ``jobs > 1`` trains that many cells at once, each in its own process with an equal share of
    the CPU cores as torch threads.
    """
    if jobs < 1:
        raise SpecError(f"jobs must be at least 1, got {jobs}")
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    zoo_dirs = {}
    for entry in config.zoos:
        if entry.path is not None or entry.of is not None:
            zoo_dirs[entry.name] = Path(entry.path) if entry.path is not None else zoo_dirs[entry.of]
            continue
        spec = entry.zoo_spec()
        zoo_dirs[entry.name] = out / "zoos" / entry.name
        started = time.perf_counter()
        generate(spec, zoo_dirs[entry.name], data_dir=config.data_dir, quiet=quiet)
        log(quiet, f"zoo {entry.name}: ready in {time.perf_counter() - started:.1f} s")
    done: dict[tuple[str, str], dict[str, Any]] = {}
    todo = []
    for entry in config.zoos:
        for setting in config.metanets:
            if not setting.runs_on(entry):
                continue
            cell_file = _cell_file(out, entry.name, setting.model)
            if cell_file.exists():
                done[entry.name, setting.model] = _reusable(cell_file, setting.config(config.target, entry.augment))
            else:
                todo.append((entry.name, str(zoo_dirs[entry.name]), setting, config.target, entry.augment))

    def finished(cell: dict[str, Any]) -> None:
        atomic_write_text(_cell_file(out, cell["zoo"], cell["metanet"]), json.dumps(cell, indent=2))
        log(quiet, f"{cell['zoo']} x {cell['metanet']}: test R² {cell['test_r2']['mean']:.3f}, "
                    f"τ {cell['test_kendall_tau']['mean']:.3f} ({cell['seconds']:.0f} s)")
        done[cell["zoo"], cell["metanet"]] = cell

    if jobs == 1 or len(todo) <= 1:
        for task in todo:
            finished(run_cell(*task, quiet=quiet))
    else:
        threads = max(1, cpu_cores() // jobs)
        with worker_pool(min(jobs, len(todo)), threads) as pool:
            futures = [pool.submit(run_cell, *task, quiet=True) for task in todo]
            with progress_bar(total=len(todo), unit="cell", desc=f"{config.name} ({jobs} at once)", quiet=quiet,
                              file=sys.stderr, dynamic_ncols=True) as bar:
                failures = []
                for future in as_completed(futures):  # a failed cell does not discard the others
                    try:
                        cell = future.result()
                        with bar.external_write_mode(file=sys.stderr):  # its line above the bar, not glued to it
                            finished(cell)
                    except Exception as error:
                        failures.append(error)
                    bar.update()
        if failures:
            raise failures[0]
    cells = [done[entry.name, setting.model] for entry in config.zoos for setting in config.metanets
             if setting.runs_on(entry)]
    _write_outputs(config, cells, out)
    return cells


def run_cell(zoo: str, zoo_dir: str, setting: MetanetSetting, target: str, augment: bool = False,
             quiet: bool = False) -> dict[str, Any]:
    """One leaderboard cell: the metanet trained with every seed on one zoo, summarised."""
    started = time.perf_counter()
    result = train_metanet(zoo_dir, setting.config(target, augment), quiet=quiet).summary
    seeds = result["per_seed"]
    return {
        "zoo": zoo, "metanet": setting.model, "zoo_dir": zoo_dir,
        **{f"{split}_{metric}": summary([s[split][metric] for s in seeds])
           for split in ("val", "test") for metric in ("r2", "kendall_tau")},
        "lr": result["lr"], "seeds": len(seeds), "models": result["models"],
        "excluded_diverged": result["excluded_diverged"],
        "params": result["params"], "seconds": round(time.perf_counter() - started, 2), **environment(),
        "config": json.loads(json.dumps(result["config"])),
    }


def _reusable(cell_file: Path, config: MetanetConfig) -> dict[str, Any]:
    """A finished cell, if it was trained with ``config``: a run at another size or protocol into
    the same folder must not be taken for this one. Cells written before the protocol was kept
    are reused as they are."""
    cell = json.loads(cell_file.read_text())
    expected = json.loads(json.dumps(dataclasses.asdict(config)))
    if "config" in cell and cell["config"] != expected:
        raise SpecError(f"{cell_file}: trained with other settings ({settings_difference(cell['config'], expected)}); "
                        "pass another --out, or delete the file to train the cell again")
    return cell


def _cell_file(out: Path, zoo: str, metanet: str) -> Path:
    return out / "cells" / f"{zoo}__{metanet}.json"


def _stat(cell: dict[str, Any], key: str) -> str:
    """``mean ± std`` over seeds; the mean alone for one seed (a std of one value says nothing)."""
    stat = cell[key]
    return f"{stat['mean']:.3f}" if cell["seeds"] == 1 else summary_text(stat)


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "— (invariant)"  # an augmented column skips permutation-invariant metanets
    return f"{_stat(cell, 'test_r2')} / {_stat(cell, 'test_kendall_tau')}"


def markdown_table(config: BenchConfig, cells: list[dict[str, Any]]) -> str:
    by = {(c["zoo"], c["metanet"]): c for c in cells}
    zoos = [z.name for z in config.zoos]
    lines = [f"| metanet | {' | '.join(zoos)} |", f"|---|{'---|' * len(zoos)}"]
    for m in config.metanets:
        lines.append(f"| {m.model} | {' | '.join(_cell_text(by.get((z, m.model))) for z in zoos)} |")
    return "\n".join(lines)


def _details_table(cells: list[dict[str, Any]]) -> str:
    """Per cell: how it was trained (seeds, models per split, chosen learning rate) and how long."""
    lines = ["| zoo | metanet | seeds | models (train / val / test) | lr | seconds |", "|---|---|--:|---|--:|--:|"]
    for c in cells:
        models = c.get("models")  # absent from cells written before it was recorded
        split = " / ".join(str(models[s]) for s in ("train", "validation", "test")) if models else "—"
        lines.append(f"| {c['zoo']} | {c['metanet']} | {c['seeds']} | {split} | {c['lr']:g} | {c['seconds']:.0f} |")
    return "\n".join(lines)


def _software(cells: list[dict[str, Any]]) -> str:
    """The software and devices the cells ran on, each distinct value once."""
    parts = []
    for key in ("symzoo", "torch", "python", "device"):
        values = sorted({str(c.get(key)) for c in cells if c.get(key) is not None})
        if values:
            parts.append(f"{key} {', '.join(values)}")
    return "; ".join(parts)


def _bar_chart(config: BenchConfig, cells: list[dict[str, Any]], path: Path) -> bytes:
    """Grouped bars, one group per metanet and one bar per zoo. R² below -1 (a metanet worse than
    predicting the mean) is drawn at the axis floor with its value written on it, so that one
    outlier does not squeeze the range where the metanets differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(c["zoo"], c["metanet"]): c for c in cells}
    models, zoos = [m.model for m in config.metanets], [z.name for z in config.zoos]
    floor = {"test_r2": -1.0, "test_kendall_tau": -1.0}
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.3 * len(models) + 2.5), 8.0))  # R² above τ
    width = 0.8 / len(zoos)
    for ax, key, label in zip(axes, ("test_r2", "test_kendall_tau"), ("test R²", "test Kendall τ")):
        for j, z in enumerate(zoos):
            x = np.arange(len(models)) + j * width
            cell = [by.get((z, m)) for m in models]  # None: an augmented column skips invariant metanets
            means = np.array([c[key]["mean"] if c else np.nan for c in cell])
            stds = np.array([c[key]["std"] if c and c["seeds"] > 1 else 0.0 for c in cell])
            low = means < floor[key]
            ax.bar(x, np.where(low, floor[key], means), width, yerr=np.where(low, 0.0, stds), label=z, capsize=2)
            for xi, value in zip(x[low], means[low]):
                ax.annotate(f"{value:.1f}", (xi, floor[key]), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(np.arange(len(models)) + width * (len(zoos) - 1) / 2, models)
        ax.set_ylabel(f"{label} (mean ± std over seeds)")
        ax.set_ylim(bottom=max(floor[key], min(0.0, ax.get_ylim()[0])))
        ax.axhline(0, color="grey", linewidth=0.8)
    axes[1].set_xlabel("metanet")
    axes[0].legend(fontsize=8, title="zoo", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{config.name}: predicting {config.target} from weights\n(bars below -1 end at the floor, "
                 "with their value written on them)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _write_outputs(config: BenchConfig, cells: list[dict[str, Any]], out: Path) -> None:
    atomic_write_text(out / "leaderboard.json", json.dumps({"name": config.name, "target": config.target,
                                                            "config": dataclasses.asdict(config), "cells": cells}, indent=2))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["zoo", "metanet", "test_r2_mean", "test_r2_std", "test_tau_mean", "test_tau_std",
                     "val_r2_mean", "val_tau_mean", "lr", "seeds", "seconds", "device"])
    for c in cells:
        writer.writerow([c["zoo"], c["metanet"], c["test_r2"]["mean"], c["test_r2"]["std"], c["test_kendall_tau"]["mean"],
                         c["test_kendall_tau"]["std"], c["val_r2"]["mean"], c["val_kendall_tau"]["mean"], c["lr"],
                         c["seeds"], c["seconds"], c["device"]])
    atomic_write_text(out / "leaderboard.csv", buffer.getvalue())
    table = markdown_table(config, cells)
    atomic_write_text(out / "leaderboard.md", f"# {config.name}\n\nTest R² / Kendall τ (mean ± std over seeds) "
                                              f"predicting `{config.target}`.\n\n{table}\n\n"
                                              f"{_details_table(cells)}\n\nSoftware: {_software(cells)}.\n")
    png = _bar_chart(config, cells, out / "leaderboard.png")
    e = lambda value: html.escape(str(value))  # noqa: E731  every text from a config or a cell file
    rows = "".join(f"<tr><td>{e(c['zoo'])}</td><td>{e(c['metanet'])}</td>"
                   f"<td>{_stat(c, 'test_r2')}</td><td>{_stat(c, 'test_kendall_tau')}</td><td>{e(c['seeds'])}</td>"
                   f"<td>{e(format(c['lr'], 'g'))}</td><td>{e(c['seconds'])}</td>"
                   f"<td>{e(c['device'])}</td></tr>" for c in cells)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(config.name)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}</style></head><body>"
            f"<h1>{e(config.name)}</h1><p>Predicting <code>{e(config.target)}</code> from weights; mean ± std over seeds.</p>"
            "<table><tr><th>zoo</th><th>metanet</th><th>test R²</th><th>test Kendall τ</th><th>seeds</th><th>lr</th>"
            f"<th>seconds</th><th>device</th></tr>{rows}</table><p>Software: {e(_software(cells))}.</p><p><img alt='leaderboard' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"
            "</body></html>")
    atomic_write_text(out / "leaderboard.html", page)
