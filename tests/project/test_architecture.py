"""The package's layers (pyproject.toml, [tool.importlinter]) hold, and the check really catches an upward
import, including one hidden inside a function."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.paths import ROOT
LINT = Path(sys.executable).with_name("lint-imports")


def lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=src.parent,
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_layers_hold():
    res = lint(ROOT / "src")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "3 kept, 0 broken" in res.stdout


def test_an_upward_import_inside_a_function_breaks_the_layers(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "melanoma", src / "melanoma", ignore=shutil.ignore_patterns("__pycache__"))
    schema = src / "melanoma" / "data" / "schema.py"
    schema.write_text(schema.read_text() + "\n\ndef _upward():\n    from melanoma.report import build  # noqa\n")
    res = lint(src)
    assert res.returncode == 1
    assert "layers: imports only go down BROKEN" in res.stdout
    assert "melanoma.data.schema -> melanoma.report.build" in res.stdout


def test_no_package_module_is_loaded_past_the_checker():
    """import-linter reads import statements: a melanoma module loaded through importlib or __import__ with a
    computed name would be an import it never checks (the lazy package __init__s use plain import statements)."""
    import ast

    hidden = []
    for path in sorted((ROOT / "src" / "melanoma").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                    or (isinstance(node.func, ast.Name) and node.func.id == "__import__")):
                arg = node.args[0] if node.args else None
                external = isinstance(arg, ast.Constant) and not str(arg.value).startswith("melanoma")
                if not external:
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hidden, hidden
