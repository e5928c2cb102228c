"""Progress where stderr is not a terminal, and Ctrl-C (issue 18).

Progress lines are checked with tqdm's clock replaced by one the test moves, so rates, ETAs and
which updates print a line are exact. Ctrl-C is a ``KeyboardInterrupt`` raised where the command
runs: in a stand-in command, and in ``generate`` at one of the step boundaries of
tests/test_crash_safety.py (a Ctrl-C there instead of a SIGKILL).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import signal
import time

import pytest
import tqdm.std

from generators.zoospec import Dist, HyperparameterSpace, get_zoo_spec
import zoo.cli.storage
import zoo.storage.files
from symzoo.cli import main
from zoo.errors import interrupted_keeps
from zoo.progress import progress_bar
from zoo.storage import open_zoo
from zoo.storage.verify import verify_zoo
from zoo.workers import worker_pool


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock, moved by hand: ``clock.now += 10``."""

    class Clock:
        now = 1000.0

    monkeypatch.setattr(tqdm.std, "time", lambda: Clock.now)
    return Clock


def _lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert text.endswith("\n") and "\r" not in text and "\x1b" not in text, repr(text)
    return text.splitlines()


# -- progress -------------------------------------------------------------------------------------
def test_plain_lines_with_rate_and_eta_at_start_every_interval_and_end(clock):
    out = io.StringIO()
    with progress_bar(total=10, desc="work", unit="model", file=out, every=30) as bar:
        for _ in range(10):
            clock.now += 10
            bar.update()
    lines = _lines(out)
    assert lines[0] == "work: 0% 0/10 [00:00<?, ?model/s]"
    assert lines[-1] == "work: 100% 10/10 [01:40<00:00, 10.00s/model]"  # at the end, whatever the interval
    meter = re.compile(r"work: (\d+)% (\d+)/10 \[(\d\d):(\d\d)<(\d\d):(\d\d), 10\.00s/model\]")
    done = []
    for line in lines[1:-1]:  # each the first update 30 s after the line before
        percent, n, minutes, seconds, eta_minutes, eta_seconds = map(int, meter.fullmatch(line).groups())
        assert percent == 10 * n and 60 * minutes + seconds == 10 * n
        assert abs(60 * eta_minutes + eta_seconds - 10 * (10 - n)) <= 1  # tqdm's ETA (a smoothed rate)
        done.append(n)
    assert done == [3, 6, 9], lines


def test_interval_zero_prints_every_refresh_and_postfix_and_fractions_show(clock):
    out = io.StringIO()
    with progress_bar(total=4, desc="zoo", unit="model", file=out, every=0, dynamic_ncols=True,
                      bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt}") as bar:  # the terminal's format only
        for n in (0.5, 1.25, 4):
            clock.now += 2
            bar.n = n  # as generate counts shards under way by their share of epochs done
            bar.set_postfix_str("1,800 models/h")
    lines = _lines(out)
    assert len(lines) == 5, lines
    assert lines[1] == "zoo: 12% 0.5/4 [00:02<00:14, 4.00s/model, 1,800 models/h]"
    assert lines[2].startswith("zoo: 31% 1.2/4 [00:04<") and lines[3].startswith("zoo: 100% 4/4 [00:06<00:00")
    assert lines[4].startswith("zoo: 100% 4/4 [00:06<00:00")  # the last, at the end


def test_quiet_prints_nothing(clock):
    for out in (io.StringIO(), _Terminal()):
        with progress_bar(total=3, desc="work", file=out, quiet=True) as bar:
            clock.now += 60
            bar.update(3)
            bar.set_postfix(loss=1.0)
        assert out.getvalue() == ""


def test_a_terminal_gets_the_redrawn_bar_and_messages_above_it(clock):
    out = _Terminal()
    with progress_bar(total=2, desc="cells", unit="cell", file=out) as bar:
        clock.now += 5
        bar.update()
        with bar.external_write_mode(file=out):  # what `bench run` does for each finished cell's line
            out.write("standard x mlp: test R² 0.900\n")
    text = out.getvalue()
    assert "\r" in text and "|" in text  # tqdm's bar, redrawn in place
    before, after = text.split("standard x mlp: test R² 0.900\n")
    assert before.endswith("\r") and after.startswith("\rcells:")  # on a line of its own, then the bar again


def test_messages_through_the_bar_in_line_mode_are_plain_lines(clock):
    out = io.StringIO()
    with progress_bar(total=2, desc="runs", file=out, every=3600) as bar:
        clock.now += 1
        bar.update()
        bar.write("run 1: done", file=out)
    assert _lines(out) == ["runs: 0% 0/2 [00:00<?, ?it/s]", "run 1: done", "runs: 50% 1/2 [00:01<00:01, 1.00it/s]"]


# -- Ctrl-C at the command line -------------------------------------------------------------------
def test_ctrl_c_in_any_command_is_one_line_and_status_130(capsys, monkeypatch, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.cli.storage, "_verify", interrupted)
    assert main(["verify", str(tmp_path)]) == 130
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err == "symzoo: interrupted: stopped before the command finished; run the same command again\n"


def test_ctrl_c_says_what_the_command_keeps(capsys, monkeypatch, tmp_path):
    def interrupted(args):
        with interrupted_keeps("3 files kept in X"):
            with interrupted_keeps("not this one: the inner message knows more"):
                raise KeyboardInterrupt

    monkeypatch.setattr(zoo.cli.storage, "_verify", interrupted)
    assert main(["verify", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "symzoo: interrupted: not this one: the inner message knows more\n"


def _interrupt_at(monkeypatch, step: str, nth: int) -> None:
    """Like ``SYMZOO_CRASH_AT=nth:step`` (tests/test_crash_safety.py), with Ctrl-C for the SIGKILL."""
    seen = 0

    def point(name: str) -> None:
        nonlocal seen
        seen += name.startswith(step)
        if name.startswith(step) and seen == nth:
            raise KeyboardInterrupt

    monkeypatch.setattr(zoo.storage.files, "crash_point", point)


def test_generate_interrupted_after_its_first_model_says_so_and_resumes(tmp_path, capsys, monkeypatch):
    out, config = tmp_path / "zoo", tmp_path / "zoo.yaml"
    spec = dataclasses.replace(get_zoo_spec("digits-mlp"), n_models=3, batch_models=1, train_subset=256,
                               checkpoint_epochs=(0, 1),
                               hyperparameters=dataclasses.replace(HyperparameterSpace(), epochs=Dist("fixed", 1)))
    config.write_text(spec.to_yaml())
    argv = ["generate", "--config", str(config), "--workers", "1", "--device", "cpu", "--out", str(out), "--quiet"]
    with monkeypatch.context() as patch:
        # zoo.json's 1st rename creates the zoo, its 2nd lists the first shard: Ctrl-C just after
        _interrupt_at(patch, "commit.manifest.renamed", 2)
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert err == f"symzoo: interrupted: 1 model stored in {out} is kept; run the same command again to resume\n"
    assert open_zoo(out).num_rows() == 1 and verify_zoo(out).ok

    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["trained"], summary["already_stored"]) == (2, 1)
    assert open_zoo(out).num_rows() == 3 and verify_zoo(out).ok


def test_generate_interrupted_before_any_model_says_nothing_is_stored(tmp_path, capsys, monkeypatch):
    out = tmp_path / "zoo"
    _interrupt_at(monkeypatch, "commit.manifest.renamed", 1)  # as the zoo is created
    assert main(["generate", "--preset", "digits-mlp", "--n-models", "2", "--out", str(out), "--quiet"]) == 130
    assert re.fullmatch(rf"symzoo: interrupted: 0 models stored in {re.escape(str(out))} are kept; run the same "
                        r"command again to resume\n", capsys.readouterr().err)


# -- worker processes -----------------------------------------------------------------------------
def test_workers_leave_ctrl_c_to_the_parent_which_stops_them_at_once():
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(1, 1) as pool:
            assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN  # no traceback each
            for _ in range(3):  # one running, the others queued to the worker or waiting
                pool.submit(time.sleep, 120)
            raise KeyboardInterrupt
    assert time.monotonic() - started < 60  # neither waiting for the running task nor running the queued ones
