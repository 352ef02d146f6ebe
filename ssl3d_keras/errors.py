"""Typed errors for problems in what the user gave us.

The CLI prints these as one line (no traceback unless ``--debug``); anything
else that escapes is a bug and keeps its traceback.
"""


class Ssl3dError(Exception):
    """Base class of every user-facing error of ssl3d-keras."""


class DataError(Ssl3dError, ValueError):
    """A data file or case is unreadable or inconsistent.

    Args:
        source: the file or case id the problem is in.
        problem: what is wrong, ending with what was received.
    """

    def __init__(self, source, problem):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class ConfigError(Ssl3dError, ValueError):
    """A configuration key or value is unknown or invalid.

    Args:
        key: dotted name of the key, e.g. ``"task.grid"``.
        problem: what is wrong with it.
    """

    def __init__(self, key, problem):
        self.key = key
        self.problem = problem
        super().__init__(f"config key '{key}': {problem}")


class ExportError(Ssl3dError, ValueError):
    """An export or a handle to load cannot be used (bad archive, checksum, missing weights)."""
