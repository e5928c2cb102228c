"""Errors that the command line turns into one-line messages (exit status 2)."""


class SymzooError(Exception):
    """Base class of errors caused by user input; the message says what is wrong and what is expected."""


class SpecError(SymzooError, ValueError):
    """An architecture or zoo specification is invalid (unknown name, bad field, infeasible setting)."""
