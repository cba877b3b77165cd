"""Errors that speak to the user: entry points print their message, not a traceback."""

import logging
import traceback
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class LabelwiseError(Exception):
    """A problem the user can fix (bad input, bad option, missing file); the message says how."""


class DataError(LabelwiseError):
    """Bad or missing data: the message names the file, row or key and the fix."""


class ConfigError(LabelwiseError):
    """An option combination that cannot work."""


def user_message(error: BaseException) -> str | None:
    """``error: ...`` for a LabelwiseError (also one Hydra's instantiate wrapped) or a required config value left
    unset (``???``), None for a bug."""
    from omegaconf.errors import MissingMandatoryValue

    for candidate in (error, error.__cause__):
        if isinstance(candidate, LabelwiseError):
            return f"error: {candidate}"
        if isinstance(candidate, MissingMandatoryValue):
            key = candidate.full_key
            return f"error: {key} is required: pass {key}=<value> on the command line"
    return None


def describe(error: BaseException) -> str:
    """The user's message, or for a bug the full traceback."""
    return user_message(error) or "".join(traceback.format_exception(type(error), error, error.__traceback__))


@contextmanager
def reported_to_user(failure_file: Path | None = None):
    """In an entry point: a LabelwiseError (also one Hydra's instantiate wrapped) exits with its message, no
    traceback; anything else propagates as the bug it is. With ``failure_file`` (a job of a sweep) the error
    is logged and written there instead (a bug with its traceback) and the block ends normally, so the sweep
    goes on."""
    try:
        yield
    except Exception as error:
        if failure_file is not None:
            log.error(f"job failed: {describe(error)}")
            failure_file.parent.mkdir(parents=True, exist_ok=True)
            failure_file.write_text(describe(error) + "\n")
        elif user_message(error):
            raise SystemExit(user_message(error)) from None
        else:
            raise
