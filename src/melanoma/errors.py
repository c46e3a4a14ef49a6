"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback.

Exit statuses: 2 for bad input or config (every error below but EnvironmentProblem), 3 for a problem of the
environment rather than of the input (EnvironmentProblem: a missing optional extra, a port already in use),
130 when interrupted.
"""

from __future__ import annotations

from pathlib import Path


class MelanomaError(Exception):
    """Base class for errors caused by input or configuration rather than by a bug."""

    exit_status = 2


class ConfigError(MelanomaError):
    """A bad config file, key, value or command-line override."""


class InputError(MelanomaError):
    """Bad input data: a missing column, file or image, a duplicate id, an unreadable JPEG."""


class SubmissionError(MelanomaError):
    """A submission that does not match the sample submission."""


class KaggleError(MelanomaError):
    """Missing or malformed Kaggle credentials, a missing client, or a Kaggle API call that failed."""


class EnvironmentProblem(MelanomaError):
    """What the machine lacks rather than what the input got wrong: an optional extra that is not installed,
    a port another process holds. Exit status 3."""

    exit_status = 3


def input_error(path: str | Path, message: str, line: int | None = None) -> InputError:
    """Build an InputError that names the file and, when known, the line (header = line 1).

    The message is formatted up front so the exception pickles cleanly across worker processes.
    """
    where = f"{path}" if line is None else f"{path}, line {line}"
    return InputError(f"{where}: {message}")
