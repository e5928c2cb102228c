"""``symzoo bench run`` and ``symzoo quickstart``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import bnn, lmc, mli
from benchmarks.leaderboard import BenchConfig, MetanetSetting, ZooEntry, load_bench_config, markdown_table, run_bench
from zoo.errors import interrupted_keeps
from zoo.workers import cpu_cores

# The main job on the offline default: paired standard and W-Asym digits zoos, the MLP and StatNN
# metanets; a few minutes on 2 CPU cores.
QUICKSTART = BenchConfig(
    name="quickstart: digits MLP zoos, standard vs W-Asym",
    zoos=(
        ZooEntry("standard", preset="digits-mlp", overrides={"n_models": 600}),
        ZooEntry("w_asym", preset="digits-mlp", overrides={"n_models": 600, "variant": "w_asym"}),
    ),
    metanets=(MetanetSetting("mlp", seeds=3), MetanetSetting("statnn", seeds=3)),
)

# The paper's experiments: each module adds its ``symzoo bench NAME`` action with ``register(sub)``.
EXPERIMENTS = (lmc, mli, bnn)


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="leaderboards and paper experiments")
    sub = bench.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    p = sub.add_parser("run", help="every (zoo, metanet) cell of a config; resumable",
                       description="Generate the config's zoos, train every (zoo, metanet) cell, and write the "
                                   "leaderboard (MD, HTML, JSON, CSV, PNG). Each cell is saved when it finishes, so "
                                   "re-running the command resumes; a cell saved with other settings is refused.")
    p.add_argument("config", metavar="CONFIG", help="leaderboard YAML (see benchmarks/configs/)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the zoos, cells and leaderboard files")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="cells trained at once, each in its own "
                   "process with cores/N torch threads (default 1)")
    p.add_argument("--n-models", type=int, metavar="N", help="smoke run: generate every preset zoo with N models "
                   "(default: the config's sizes)")
    p.add_argument("--seeds", type=int, metavar="K", help="smoke run: K seeds per metanet (default: the config's)")
    p.add_argument("--epochs", type=int, metavar="E", help="smoke run: E epochs per metanet run (default: the config's)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=lambda args: _run(load_bench_config(args.config).shrunk(args.n_models, args.seeds, args.epochs),
                                             Path(args.out), args.quiet, args.jobs))
    for experiment in EXPERIMENTS:
        experiment.register(sub)

    p = commands.add_parser("quickstart", help="generate paired digits zoos and rank metanets on them (offline)",
                            description="The paper's claim in about a minute, offline: generate paired zoos of 600 "
                                        "standard and 600 W-Asym MLPs on scikit-learn's digits, train the MLP and "
                                        "StatNN metanets on each (3 seeds), and print the leaderboard. Resumable.")
    p.add_argument("--out", default="symzoo-quickstart", metavar="DIR",
                   help="folder for the zoos and leaderboard files (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # its four cells in one-thread processes, one per core: no torch threads to collapse on a busy machine
    p.set_defaults(handler=lambda args: _run(QUICKSTART, Path(args.out), args.quiet, jobs=cpu_cores()))


def _run(config: BenchConfig, out: Path, quiet: bool, jobs: int = 1) -> int:
    started = time.perf_counter()
    with interrupted_keeps(lambda: _cells_kept(out)):
        cells = run_bench(config, out, quiet=quiet, jobs=jobs)
    print(f"{config.name}: test R² / Kendall τ (mean ± std over seeds), predicting {config.target}\n")
    print(markdown_table(config, cells))
    print(f"\nwrote {out}/leaderboard.md, .json, .csv, .png, .html ({time.perf_counter() - started:.0f} s)")
    for entry in config.zoos:
        print(f"zoo {entry.name}: {entry.path or out / 'zoos' / entry.name}")
    return 0


def _cells_kept(out: Path) -> str:
    """What an interrupted leaderboard keeps: each finished cell's file (and every zoo model stored)."""
    n = len(list((out / "cells").glob("*.json"))) if (out / "cells").is_dir() else 0
    return (f"{n} finished cell{'s' if n != 1 else ''} kept in {out / 'cells'} (and the zoos' stored models); "
            "run the same command again to resume")
