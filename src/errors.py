"""Errors that speak to the user: entry points print their message, not a traceback."""

from contextlib import contextmanager


class LabelwiseError(Exception):
    """A problem the user can fix (bad input, bad option, missing file); the message says how."""


class DataError(LabelwiseError):
    """Bad or missing data: the message names the file, row or key and the fix."""


class ConfigError(LabelwiseError):
    """An option combination that cannot work."""


@contextmanager
def reported_to_user():
    """In an entry point: a LabelwiseError (also one Hydra's instantiate wrapped) exits with its message, no
    traceback; anything else propagates as the bug it is."""
    try:
        yield
    except Exception as error:
        cause = error if isinstance(error, LabelwiseError) else error.__cause__
        if isinstance(cause, LabelwiseError):
            raise SystemExit(f"error: {cause}") from None
        raise
