"""The one progress bar: tqdm on a terminal, nothing in CI logs (`CI` set) or when stderr is redirected."""

from __future__ import annotations

import os
import sys


def quiet() -> bool:
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def progress_bar(total: int, desc: str, unit: str = "img", leave: bool = True):
    """A tqdm bar over `total` items (use as a context manager, `.update(n)` as work is done)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=leave, disable=quiet() or total == 0)
