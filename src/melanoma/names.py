"""Names that become paths or Kaggle ids: kaggle.slug, kaggle.username, kaggle.competition, `--owner`, variant
names. Each is checked against the platform's own rules when the config loads or the flag is parsed, so a value
such as `../x` or `a/b` never reaches a path.

Kaggle: a slug (kernel, dataset, competition) is lowercase letters, digits and hyphens, starting and ending with a
letter or digit, at most 50 characters (the Kaggle client refuses dataset slugs outside 6-50); a username is
letters, digits, hyphens or underscores.
"""

from __future__ import annotations

import re

SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?")
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}")


def slug_problem(value: str, what: str) -> str | None:
    """Why `value` is not a Kaggle slug, or None."""
    if isinstance(value, str) and SLUG_RE.fullmatch(value):
        return None
    return (f"{what}: {value!r} is not a Kaggle slug (lowercase letters, digits and hyphens, starting and ending "
            "with a letter or digit, at most 50 characters)")


def owner_problem(value: str, what: str) -> str | None:
    """Why `value` is not a Kaggle username, or None."""
    if isinstance(value, str) and OWNER_RE.fullmatch(value):
        return None
    return f"{what}: {value!r} is not a Kaggle username (letters, digits, hyphens and underscores)"


def kaggle_owner(value: str) -> str:
    """argparse type of `--owner`: refused at parse time, as one line."""
    import argparse

    problem = owner_problem(value, "--owner")
    if problem:
        raise argparse.ArgumentTypeError(problem.split(": ", 1)[1])
    return value
