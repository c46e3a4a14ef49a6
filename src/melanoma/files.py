"""File helpers: every output is written to a temporary name and renamed, so nothing is half-written."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the file the usual permissions for the umask
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


# .staging-TAG-PID-XXXXXXXX: the command (tag) and process that made it. Older versions named it .staging-XXXXXXXX.
STAGING_RE = re.compile(r"^\.staging-(?:(?P<tag>[a-z]+)-(?P<pid>\d+)-)?[a-z0-9_]{8}$")
log = logging.getLogger("melanoma")


@contextlib.contextmanager
def staged_dir(out: str | Path, tag: str = "stage") -> Iterator[Path]:
    """Yield a staging folder inside `out`; on success move its files into `out`, on failure delete it.

    The staging folder lives inside `out` so the final moves are renames on one filesystem. A kill leaves it
    behind: the next call with the same tag removes those of its own whose process is gone (logged).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out, tag)
    stage = Path(tempfile.mkdtemp(prefix=f".staging-{tag}-{os.getpid()}-", dir=out))
    try:
        yield stage
        for item in sorted(stage.rglob("*")):
            if item.is_file():
                target = out / item.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def stale_staging(folder: Path, tag: str | None = None) -> list[Path]:
    """Staging folders in `folder` left by a process that is gone (with `tag`: only that command's, and the
    untagged ones of older versions)."""
    found = []
    for p in sorted(folder.glob(".staging-*")) if folder.is_dir() else []:
        m = STAGING_RE.match(p.name)
        if not m or not p.is_dir() or (tag is not None and m["tag"] not in (None, tag)):
            continue
        if m["pid"] is None or not _alive(int(m["pid"])):
            found.append(p)
    return found


def remove_stale_staging(folder: Path, tag: str) -> None:
    for p in stale_staging(folder, tag):
        shutil.rmtree(p, ignore_errors=True)
        log.info("%s: removed %s, a staging folder left by an interrupted run", folder, p.name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths appear in manifests and metrics
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
