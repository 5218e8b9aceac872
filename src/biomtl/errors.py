"""User-facing errors.

Every problem caused by user input (a file, a config, a model directory) raises a subclass of
:class:`BiomtlError` whose message is one line naming the file and line, or the config key. The CLI prints
that line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


def did_you_mean(word: str, options: Iterable[str], what: str | None = "keys") -> str:
    """The end of an "unknown ..." message: the closest option, else every option (nothing when ``what`` is
    None, for a message that lists them already).

    >>> did_you_mean("epoch", ["epochs", "seed"])
    "; did you mean 'epochs'?"
    >>> did_you_mean("x", ["b", "a"], "tasks")
    '; known tasks: a, b'
    """
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; known {what}: {', '.join(sorted(options))}" if what else ""


class BiomtlError(Exception):
    """Base class: a problem the user can fix. ``str(error)`` is the one-line message, with every character a
    terminal would not print as itself (CR, NUL, U+2028, ... quoted from a damaged file) escaped: ``\\u2028``."""

    def __str__(self) -> str:
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in super().__str__())


class DataError(BiomtlError):
    """A data file is malformed. The message starts with ``path:line:``."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class ConfigError(BiomtlError):
    """A config is invalid. ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems) if len(self.problems) > 1 else self.problems[0])


class ModelDirError(BiomtlError):
    """A saved model directory is missing files, corrupted, or from a newer format version."""


class OutputExistsError(BiomtlError):
    """An output path exists and ``--overwrite`` was not given (or may not replace it)."""


class WriteError(BiomtlError, OSError):
    """An output could not be written (a full disk, a read-only directory). Still an :class:`OSError` for
    code that catches those; the message names the file and the system's reason."""


class TrainingError(BiomtlError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the config)."""
