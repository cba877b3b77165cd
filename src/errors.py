"""Errors that speak to the user: entry points print their message, not a traceback."""


class LabelwiseError(Exception):
    """A problem the user can fix (bad input, bad option, missing file); the message says how."""


class DataError(LabelwiseError):
    """Bad or missing data: the message names the file, row or key and the fix."""


class ConfigError(LabelwiseError):
    """An option combination that cannot work."""
