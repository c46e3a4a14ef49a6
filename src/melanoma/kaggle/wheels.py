"""`melanoma kaggle wheels`: a Kaggle dataset of wheels, so a notebook with the internet off (as code
competitions require) installs this package and what the image lacks, from files alone.

The folder holds this package's wheel and wheels of its dependencies (pyproject.toml, less TensorFlow, JAX and
Keras, which the image has: melanoma.kaggle.install decides both lists) and of its build requirements, for the
notebook's Python and platform, plus dataset-metadata.json. Upload it
with `kaggle datasets create -p FOLDER` and set `kaggle.wheels` to its slug: `kaggle push` then attaches it and
the notebook installs with `pip install --no-index --find-links` only the packages its image is missing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from melanoma.errors import ConfigError, KaggleError
from melanoma.files import STAGING_RE, staged_dir, write_json
from melanoma.kaggle.install import build_requirements, plan, read_requirements

Runner = Callable[[Sequence[str]], None]


def _run(cmd: Sequence[str]) -> None:
    res = subprocess.run(list(cmd), capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise KaggleError(f"{' '.join(cmd[:4])} ... failed: {tail[0]}")


def offline_requirements(repo: Path) -> list[str]:
    """What an offline notebook may need from the dataset: the dependencies the install step can ask for (the
    frameworks left out) and the build requirements (the notebook's `pip install -e .` builds this package in
    isolation, from the same folder)."""
    requirements, extras = read_requirements(repo)
    # Every Kaggle image has TensorFlow: tensorflow-cpu (hundreds of MB) would never be installed from here.
    return plan(requirements, extras, {"tensorflow": "(the image's)"}).wanted + build_requirements(repo)


def wheel_commands(repo: Path, out: Path, python: str, platform: str) -> list[list[str]]:
    """pip calls: this package's wheel (no dependencies), then binary wheels of its requirements for the target."""
    pip = [sys.executable, "-m", "pip"]
    return [
        [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(repo)],
        [*pip, "download", "--quiet", "--dest", str(out), "--only-binary=:all:", "--python-version", python,
         "--platform", platform, *offline_requirements(repo)],
    ]


def build_wheels(repo: str | Path, out: str | Path, owner: str, slug: str = "melanoma-wheels",
                 python: str = "3.12", platform: str = "manylinux2014_x86_64", run: Runner = _run) -> Path:
    """Write the wheels dataset folder; returns it. `run` executes each pip call (a fake in tests)."""
    repo, out = Path(repo), Path(out)
    if not re.fullmatch(r"\d(\.\d{1,2}){0,2}|\d{2,3}", python):
        raise ConfigError(f"--python {python!r}: expected the notebook image's Python version, e.g. 3.12")
    if not (repo / "pyproject.toml").is_file() or not (repo / "src" / "melanoma").is_dir():
        raise KaggleError(f"{repo}: not the melanoma repository (pyproject.toml and src/melanoma expected); "
                          "run from its root")
    if out.exists() and any(p.suffix != ".whl" and p.name != "dataset-metadata.json" and not STAGING_RE.match(p.name)
                            for p in out.iterdir()):
        raise KaggleError(f"{out} holds files other than wheels: choose an empty or new folder")
    created = not out.exists()
    try:
        # pip writes into a staging folder: a failed call (a --python or --platform pip cannot serve) leaves
        # nothing half-built, and the folder itself goes when this call made it.
        with staged_dir(out, "wheels") as stage:
            for cmd in wheel_commands(repo, stage, python, platform):
                run(cmd)
            write_json(stage / "dataset-metadata.json", {"title": slug, "id": f"{owner}/{slug}",
                                                         "licenses": [{"name": "other"}]})
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return out
