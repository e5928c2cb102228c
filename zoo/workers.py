"""Worker processes with a fixed number of torch threads each: the one way symzoo runs work in
parallel on one machine (zoo shards, leaderboard cells, benchmark baselines).

On a shared machine, torch's default threads (one per core, in every process) wait on each other
whenever another job takes a core; one-thread workers, one per core, do not.

Ctrl-C reaches every process of the terminal's job; workers ignore it (no traceback from each) and
the pool, leaving its ``with`` block on it, stops them at once rather than waiting for their tasks:
SIGTERM, which a worker turns into ``SystemExit`` (so that it still cleans up after itself), ending
its task and skipping those already queued to it. Whatever a stopped worker had published stays:
every symzoo write is safe against a crash at any point.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import torch

__all__ = ["cpu_cores", "worker_context", "worker_pool"]


def cpu_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_context(preload: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """Where worker processes come from: a fork server where the platform has one (a fresh
    single-threaded process that imports torch and ``preload`` once, then forks each worker in
    milliseconds), else spawn. Never a fork of this process: a fork of a process whose torch
    thread pool is running can hang."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", *preload])  # used when the server starts (once per process)
    return context


class _Pool(ProcessPoolExecutor):
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(_task, fn, args, kwargs)

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> bool | None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            for process in list((self._processes or {}).values()):
                process.terminate()
            self.shutdown(wait=True, cancel_futures=True)
            return False
        return super().__exit__(kind, *rest)


# In a worker process: whether the pool is stopping it (SIGTERM came); the tasks queued to it then
# end at once, unstarted.
_stopping = False


def _stop(signum: int, frame: Any) -> None:
    global _stopping
    _stopping = True
    raise SystemExit(128 + signum)


def _task(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _stopping:
        raise SystemExit(128 + signal.SIGTERM)
    return fn(*args, **kwargs)


def _start(torch_threads: int, setup: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (see the module's doc)
    signal.signal(signal.SIGTERM, _stop)
    torch.set_num_threads(torch_threads)
    if setup is not None:
        setup(*args)


def worker_pool(workers: int, torch_threads: int, setup: Callable[..., None] | None = None,
                setup_args: tuple[Any, ...] = (), preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """``workers`` processes (from :func:`worker_context`) with ``torch_threads`` torch threads
    each; ``setup(*setup_args)`` runs once in each (e.g. to receive a data set once rather than
    with every task)."""
    return _Pool(workers, mp_context=worker_context(preload),
                 initializer=_start, initargs=(torch_threads, setup, setup_args))
