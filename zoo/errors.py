"""Errors that the command line turns into one-line messages (exit status 2)."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class SymzooError(Exception):
    """Base class of errors caused by user input; the message says what is wrong and what is expected."""


class SpecError(SymzooError, ValueError):
    """An architecture or zoo specification is invalid (unknown name, bad field, infeasible setting)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted command keeps and how to resume it (one sentence): the
    command line prints it as ``symzoo: interrupted: MESSAGE`` and exits with status 130. Still a
    ``KeyboardInterrupt``, so code that cleans up on Ctrl-C sees it as one."""


@contextmanager
def interrupted_keeps(message: str | Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C inside the block into :class:`Interrupted` saying ``message`` (a callable is asked
    only then, so it can count what is on disk at that moment). An :class:`Interrupted` raised
    deeper, which knows more, passes unchanged."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(message() if callable(message) else message) from None


# -- one-line messages --------------------------------------------------------------------------
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
# Sentences of a library's message that tell the user to load a file unsafely (torch's advice to
# turn ``weights_only`` off, to allow-list globals, to load it anyway "if you trust" it): symzoo
# never does any of these, so never repeats the advice.
_UNSAFE_ADVICE = ("weights_only", "trust", "safe_globals", "can still be loaded")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")

_OS_ADVICE = {
    errno.ENOSPC: "free some space, then run the same command again",
    errno.EDQUOT: "free some space, then run the same command again",
    errno.EROFS: "choose a writable path",
    errno.EACCES: "choose a path you may use, or change its permissions",
    errno.EPERM: "choose a path you may use, or change its permissions",
    errno.EEXIST: "a file is in the way where a directory is needed; choose another path",
    errno.ENOTDIR: "a part of this path is a file; choose another path",
    errno.EISDIR: "expected a file name, not a directory",
    errno.ENOENT: "check the path",
}


def one_line(text: str) -> str:
    """``text`` as one printable line: terminal escape sequences removed (a file name or a wrapped
    message must not drive the terminal), other control characters shown escaped, whitespace runs
    (newlines included) collapsed to one space."""
    text = " ".join(_ESCAPE.sub("", text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first non-blank line of an error's message (``default``, else the error's type name,
    when it has none): enough to name a cause inside a one-line message."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), default or type(err).__name__)


def clean_message(err: BaseException) -> str:
    """A wrapped library error's reason, whole, on one line, without advice to load a file unsafely."""
    text = _ESCAPE.sub("", str(err))
    kept = [s for s in _SENTENCE.split(text) if s.strip() and not any(a in s for a in _UNSAFE_ADVICE)]
    return one_line(" ".join(kept)) or type(err).__name__


def os_error_message(err: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """A failed file operation in one line: which path (the error's own, else ``path``), the
    system's reason, and what to do about it."""
    where = err.filename2 if err.filename2 is not None else err.filename
    where = where if where is not None else path
    reason = one_line(err.strerror) if err.strerror else clean_message(err)
    advice = _OS_ADVICE.get(err.errno or 0)
    if isinstance(where, (bytes, os.PathLike)):
        where = os.fsdecode(where)
    message = f"{one_line(str(where))}: {reason}" if where is not None else reason
    return f"{message} ({advice})" if advice else message
