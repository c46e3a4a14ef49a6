"""One rule for what a command writes, checked before any work (`guard`).

Every command that writes calls `guard` with its resolved outputs and all its inputs (files, folders, run
folders, the data folder, mask folders). It refuses, with one line and exit status 2, when an output
- is one of the inputs, or a folder output would write a name that is an input (never allowed);
- lies inside an input folder and already exists as something this command did not write (the command may read
  it: never allowed);
- already exists and was not written by this command (a non-empty folder without the command's own marker, a
  file without its signature): only `--force` gets past this one.
How a command knows its own outputs is given per output (`Out.own`): a run folder's run.json naming the stage, a
marker file, a file's own columns or keys. Nothing here writes or deletes anything.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from melanoma.errors import ConfigError

# Our own leftovers (staging folders, temporary files): they do not make a folder someone else's.
DEBRIS = re.compile(r"^\.(staging-.*|.+\.tmp|tmp-.*|partial|done|prepare-work|prepare\.lock)$")

Own = Callable[[Path], bool]


@dataclass(frozen=True)
class Out:
    path: str | Path
    folder: bool = False
    flag: str = "--out"
    own: Own | None = None  # whether an existing path was written by this command (None: never)
    writes: tuple[str, ...] = ()  # names a folder output writes inside itself, checked against the inputs


def force_flag(p) -> None:
    """`--force` on a command that writes: the one way to replace what the command did not write itself."""
    p.add_argument("--force", action="store_true",
                   help="replace existing outputs that this command did not write (never one of its inputs)")


def guard(command: str, outputs: Iterable[Out], inputs: Mapping[str, object] | None = None,
          force: bool = False) -> None:
    """Refuse (ConfigError, one line) an output that would overwrite an input or something not ours."""
    ins = [(label, _real(p), Path(p)) for label, p in _flatten(inputs or {})]
    for o in outputs:
        if o.path is None or "://" in str(o.path):  # a bucket: the stage checks it
            continue
        _shape(o)
        real = _real(o.path)
        for label, inp, shown in ins:
            if real == inp:
                raise ConfigError(f"{o.path}: is also an input of `melanoma {command}` ({label}): writing it "
                                  f"would replace what the command reads: choose another {o.flag}")
            for name in o.writes:
                if real / name == inp:
                    raise ConfigError(f"{o.path}: `melanoma {command}` writes {name} there, which is its input "
                                      f"{shown} ({label}): choose another {o.flag}")
            if inp in real.parents and _taken(real, o) and not _owned(real, o):
                raise ConfigError(f"{o.path}: exists inside the input folder {shown} ({label}) and was not "
                                  f"written by `melanoma {command}`, which may read it: choose another {o.flag}")
        if not force and _taken(real, o) and not _owned(real, o):
            what = "folder" if o.folder else "file"
            raise ConfigError(f"{o.path}: this {what} exists and was not written by `melanoma {command}`: "
                              f"choose another {o.flag}, or pass --force to replace it")


def _flatten(inputs: Mapping[str, object]) -> Iterable[tuple[str, str | Path]]:
    for label, value in inputs.items():
        for p in value if isinstance(value, (list, tuple, set)) else [value]:
            if p is not None and str(p) != "" and "://" not in str(p):
                yield label, p


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _taken(real: Path, o: Out) -> bool:
    """Whether writing here could replace something: an existing file, or a folder holding files (our own
    leftovers aside)."""
    if not o.folder:
        return real.exists()
    if not real.is_dir():
        return False
    return any(not DEBRIS.match(p.name) for p in real.iterdir())


def _owned(real: Path, o: Out) -> bool:
    try:
        return bool(o.own and o.own(real))
    except (OSError, ValueError):
        return False


def _shape(o: Out) -> None:
    """A file where a folder is wanted (or the reverse), or a location the user may not write."""
    path = Path(o.path)
    if o.folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is a file, not a folder: choose another {o.flag}")
    if not o.folder and path.is_dir():
        raise ConfigError(f"{path}: is a folder; the output here is a file: choose another {o.flag}")
    parent = path if o.folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{parent}: is a file, so {path} cannot be created: choose another {o.flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{parent}: not writable, so {path} cannot be written: choose another {o.flag} "
                          "or change the folder's permissions")


# ---------------------------------------------------------------- how a command knows its own outputs

def stage_of(folder: Path, prefix: str = "") -> str | None:
    """The stage a `run.json` (PREFIXrun.json) written by this package names, or None."""
    path = Path(folder) / f"{prefix}run.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info.get("stage") if isinstance(info, dict) and info.get("package") == "melanoma" else None


def run_folder(*stages: str, markers: tuple[str, ...] = ()) -> Own:
    """A folder whose run.json names one of `stages`, or that holds one of the marker files."""
    return lambda p: stage_of(p) in stages or any((p / m).exists() for m in markers)


def json_with(*keys: str) -> Own:
    """A JSON file of an object holding all of `keys`."""
    def own(p: Path) -> bool:
        obj = json.loads(p.read_text())
        return isinstance(obj, dict) and all(k in obj for k in keys)
    return own


def csv_with(*columns: str) -> Own:
    """A CSV whose header starts with `columns`."""
    def own(p: Path) -> bool:
        with open(p, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        return header[:len(columns)] == list(columns)
    return own


def beside(main: Path, own: Own) -> Own:
    """A file written together with `main` (its sidecar): ours when `main` is, or when neither exists."""
    return lambda p: (not main.exists() and not p.exists()) or (main.exists() and own(_real(main)))


def with_run_info(path: str | Path, own: Own, stage: str, prefix: str = "", flag: str = "--out") -> list[Out]:
    """A file output and the config.yaml + run.json written beside it (save_run_info)."""
    path = Path(path)
    side = lambda p: stage_of(p.parent, prefix) == stage  # noqa: E731
    return [Out(path, own=own, flag=flag)] + [Out(path.parent / f"{prefix}{n}", own=side, flag=flag)
                                              for n in ("config.yaml", "run.json")]


def folds_outputs(path: str | Path, flag: str = "--out") -> list[Out]:
    """folds.csv with STEM.config.yaml and STEM.run.json beside it (data/folds.py write_folds)."""
    path = Path(path)
    own = lambda p: stage_of(p.parent, f"{p.stem}.") == "folds"  # noqa: E731
    return with_run_info(path, own, "folds", prefix=f"{path.stem}.", flag=flag)


def run_inputs(runs: Iterable[str | Path]) -> list[Path]:
    """What a command reading run folders reads in each: the folder and its prediction and run files."""
    runs = [Path(r) for r in runs]
    found: list[Path] = []
    for r in runs:
        found.append(r)
        if r.is_dir():
            found += [r / n for n in ("oof.csv", "test_pred.csv", "run.json", "metrics.json", "config.yaml",
                                      "blend.json", "submission.csv")]
        elif r.name == "blend.json" or (r.parent / "blend.json").is_file():
            found += [r.parent / n for n in ("blend.json", "submission.csv")]
    return [p for p in found if p in runs or p.exists()]
