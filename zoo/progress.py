"""Progress of long work, on stderr: the one progress bar every symzoo command uses.

On a terminal it is tqdm's bar. Anywhere else (a log file, a pipe, a job scheduler's output) a
redrawn bar would be a stream of carriage returns, and tqdm's own default there is to show
nothing: so there it prints plain lines instead, with the description, done/total, elapsed time,
ETA and rate (tqdm's own figures): one when the work starts, then at most one every ``every``
seconds, and one when it ends. ``quiet`` prints nothing at all.
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

from tqdm import tqdm

from zoo.errors import one_line

__all__ = ["EVERY_S", "ProgressBar", "is_terminal", "progress_bar"]

EVERY_S = 30.0  # seconds between two progress lines when stderr is not a terminal


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


class _Nowhere(io.TextIOBase):
    """Where tqdm's own drawing goes when lines are printed instead (carriage returns, padding)."""

    def write(self, text: str) -> int:
        return len(text)


class ProgressBar(tqdm):
    """tqdm with the same calls (``update``, ``set_postfix``, ``set_description``, ``write``, a
    ``with`` block); see the module's doc for what it prints where."""

    def __init__(self, *args: Any, quiet: bool = False, every: float = EVERY_S, file: TextIO | None = None,
                 **kwargs: Any) -> None:
        stream = sys.stderr if file is None else file
        # set before tqdm's __init__, which shows the first line
        self._out = stream
        self._every = every
        self._lines = not quiet and stream is not None and not is_terminal(stream)
        self._last_line: float | None = None
        super().__init__(*args, file=_Nowhere() if self._lines else stream, disable=quiet or stream is None,
                         **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._lines:
            return super().display(msg, pos)
        final = self.disable  # tqdm's close() sets it just before its last display
        now = self._time()
        if not final and self._last_line is not None and now - self._last_line < self._every:
            return True
        self._last_line = now
        try:
            self._out.write(self.line() + "\n")
            self._out.flush()
        except (ValueError, OSError):  # stderr closed (at exit) or gone: progress is not worth an error
            pass
        return True

    def clear(self, nolock: bool = False) -> None:
        if not self._lines:
            super().clear(nolock)

    def line(self) -> str:
        """The progress as one plain line: ``DESC:  40% 4/10 [00:12<00:18, 3.00s/model, POSTFIX]``."""
        meter = dict(self.format_dict, ncols=0, bar_format=None)  # ncols 0: tqdm's figures without the bar
        if isinstance(meter["n"], float):
            meter["n"] = _Count(meter["n"])
        return one_line(self.format_meter(**meter))


class _Count(float):
    """A count with shares of unfinished items (generate's shards under way): exact for the
    percentage, rate and ETA, shown to a tenth."""

    def __str__(self) -> str:
        return f"{self:.1f}".removesuffix(".0")


def progress_bar(total: float | None = None, desc: str | None = None, unit: str = "it", *, quiet: bool = False,
                 every: float = EVERY_S, file: TextIO | None = None, **kwargs: Any) -> ProgressBar:
    """A progress bar on ``file`` (stderr by default); ``kwargs`` go to tqdm (``dynamic_ncols``,
    ``bar_format``, ... which shape the terminal bar only)."""
    return ProgressBar(total=total, desc=desc, unit=unit, quiet=quiet, every=every, file=file, **kwargs)
