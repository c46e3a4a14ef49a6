"""What a Kaggle or Colab notebook installs: this package's own dependencies, from its one list (pyproject.toml),
less the frameworks the image provides, only those the image lacks, with everything the image has pinned.

    python -m melanoma.kaggle.install [--wheels DIR] [--colab] [--dry-run]

The notebook runs it after `pip install --no-deps -e .`, before any dependency is there: standard library only.
The images' frameworks (TensorFlow, JAX, libtpu, Keras) are never installed or replaced: on a TPU image they are
the builds that drive the TPU. Where the image has no TensorFlow at all (Colab's TPU runtime), tensorflow-cpu is
added for tf.data. pip gets `-c constraints.txt` written from the image's own `pip freeze`, so a missing package
(lightgbm on Kaggle's TPU image) comes with dependencies that fit what is there and never upgrades them.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "melanoma"
# The frameworks an image provides (normalised names): never installed over the image's own.
FRAMEWORKS = re.compile(r"^(tensorflow(-.*)?|tf-nightly.*|jax(lib)?|jax-.*|libtpu.*|keras)$")
TENSORFLOW = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu")


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return normalize(re.split(r"[\s\[<>=!~;(@]", req.strip(), maxsplit=1)[0])


def read_requirements(repo: Path | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """(dependencies, optional dependencies by extra): from REPO/pyproject.toml where Python reads TOML
    (3.11+), else from the installed package's metadata (`pip install --no-deps -e .` writes it)."""
    pyproject = (repo or Path()) / "pyproject.toml"
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = None
    if tomllib is not None and pyproject.is_file():
        project = tomllib.loads(pyproject.read_text())["project"]
        return list(project["dependencies"]), {k: list(v) for k, v in project.get("optional-dependencies", {}).items()}
    base: list[str] = []
    extras: dict[str, list[str]] = {}
    for req in md.requires(PACKAGE) or []:
        spec, _, marker = req.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        (extras.setdefault(extra.group(1), []) if extra else base).append(spec.strip())
    return base, extras


def build_requirements(repo: Path | None = None) -> list[str]:
    """[build-system] requires of REPO/pyproject.toml (read without tomllib: Python 3.10 has none)."""
    text = ((repo or Path()) / "pyproject.toml").read_text()
    block = re.search(r"^\[build-system\](.*?)(?=^\[|\Z)", text, re.S | re.M)
    requires = re.search(r"^requires\s*=\s*\[(.*?)\]", block.group(1) if block else "", re.S | re.M)
    return re.findall(r"""["']([^"']+)["']""", requires.group(1)) if requires else []


def installed() -> dict[str, str]:
    """normalised name -> version of every installed distribution."""
    return {normalize(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def constraints(freeze_lines: Sequence[str], versions: Mapping[str, str]) -> list[str]:
    """`pip freeze` lines as pins: NAME==VERSION as they are; `NAME @ URL` (conda and local builds, which pip
    does not take as constraints) pinned to the installed version; editable installs and this package left out."""
    pins = []
    for line in (ln.strip() for ln in freeze_lines):
        if not line or line.startswith(("#", "-")):
            continue
        name = requirement_name(line)
        if name == PACKAGE:
            continue
        if "==" in line:
            pins.append(line)
        elif " @ " in line and name in versions:
            pins.append(f"{name}=={versions[name]}")
    return pins


@dataclass
class Plan:
    wanted: list[str]  # the requirements for this image (frameworks left out)
    missing: list[str]  # those not installed: what pip installs
    present: dict[str, str] = field(default_factory=dict)  # the wanted ones already here, with their versions


def plan(requirements: Sequence[str], extras: Mapping[str, Sequence[str]], versions: Mapping[str, str],
         colab: bool = False) -> Plan:
    """What to install on an image with these installed versions."""
    wanted = [r for r in requirements if not FRAMEWORKS.match(requirement_name(r))]
    if colab:  # Colab has no kaggle client; it downloads the data and submits
        wanted += list(extras.get("kaggle", []))
    if not any(t in versions for t in TENSORFLOW):  # tf.data reads the TFRecords on every backend
        wanted += [r for r in extras.get("cpu", []) if requirement_name(r) == "tensorflow-cpu"] or ["tensorflow-cpu"]
    missing = [r for r in wanted if requirement_name(r) not in versions]
    present = {requirement_name(r): versions[requirement_name(r)] for r in wanted if requirement_name(r) in versions}
    return Plan(wanted, missing, present)


def pip_command(missing: Sequence[str], constraints_file: Path, wheels: str | None = None) -> list[str]:
    source = ["--no-index", "--find-links", wheels] if wheels else []
    return [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(constraints_file), *source, *missing]


def freeze() -> list[str]:
    return subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def install(repo: Path | None = None, wheels: str | None = None, colab: bool = False, dry_run: bool = False,
            run: Callable[[list[str]], object] | None = None, freeze_lines: Sequence[str] | None = None) -> Plan:
    """Plan and (unless dry_run) run the pip call; `run` and `freeze_lines` are fakes in tests."""
    versions = installed()
    requirements, extras = read_requirements(repo)
    p = plan(requirements, extras, versions, colab)
    print("already here:", ", ".join(f"{k} {v}" for k, v in sorted(p.present.items())) or "nothing")
    if not p.missing:
        print("installing: nothing (the image has every dependency)")
        return p
    pins = constraints(freeze() if freeze_lines is None else freeze_lines, versions)
    folder = Path(tempfile.mkdtemp(prefix="melanoma-install-"))
    (folder / "constraints.txt").write_text("\n".join(pins) + "\n")
    cmd = pip_command(p.missing, folder / "constraints.txt", wheels)
    print(f"installing: {', '.join(p.missing)} (the image's {len(pins)} packages pinned by {folder}/constraints.txt"
          f"{', from ' + wheels if wheels else ''})")
    if not dry_run:
        (run or (lambda c: subprocess.run(c, check=True)))(cmd)
    return p


def frameworks() -> str:
    versions = installed()
    return ", ".join(f"{d} {versions[d]}" for d in ("keras", "jax", "jaxlib", "libtpu", *TENSORFLOW) if d in versions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m melanoma.kaggle.install", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(), help="the checkout holding pyproject.toml (default: .)")
    parser.add_argument("--wheels", help="a folder of wheels (`melanoma kaggle wheels`): install offline from it")
    parser.add_argument("--colab", action="store_true", help="also the Kaggle client (Colab has none)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    args = parser.parse_args(argv)
    try:
        install(args.repo, args.wheels, args.colab, args.dry_run)
    except subprocess.CalledProcessError as e:
        print(f"melanoma: error: pip failed (exit status {e.returncode}); its output is above", file=sys.stderr)
        return 1
    print("frameworks (the image's own):", frameworks() or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
