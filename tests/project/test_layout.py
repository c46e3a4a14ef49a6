"""Where a test goes: tests/unit/<package>/ for one package of melanoma, tests/e2e/ for whole CLI runs,
tests/project/ for checks on the repository itself; shared builders in tests/helpers/. No test module imports
another test module (or conftest): what two tests share is a helper."""

from __future__ import annotations

import ast

from helpers.paths import ROOT

TESTS = ROOT / "tests"
PACKAGE = ROOT / "src" / "melanoma"


def test_every_test_module_sits_where_the_layout_says():
    units = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    units |= {p.stem for p in PACKAGE.glob("*.py")}
    misplaced = []
    for path in TESTS.rglob("test_*.py"):
        parts = path.relative_to(TESTS).parts
        ok = (len(parts) == 3 and parts[0] == "unit" and parts[1] in units) or (
            len(parts) == 2 and parts[0] in ("e2e", "project"))
        if not ok:
            misplaced.append(str(path.relative_to(ROOT)))
    assert not misplaced, f"put these under tests/unit/<package>/, tests/e2e/ or tests/project/: {misplaced}"


def test_no_test_module_imports_another():
    offenders = []
    for path in [*TESTS.rglob("test_*.py"), *(TESTS / "helpers").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [node.args[0].value] if (isinstance(node, ast.Call) and getattr(node.func, "id", "") ==
                                                   "__import__" and isinstance(node.args[0], ast.Constant)) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0].startswith("test_") or n.split(".")[0] == "conftest"]
    assert not offenders, f"move what they share into tests/helpers/: {offenders}"


def test_the_layout_check_catches_a_misplaced_test(tmp_path, monkeypatch):
    """The two checks above fail on a flat test module that imports another one."""
    fake = tmp_path / "tests"
    (fake / "helpers").mkdir(parents=True)
    (fake / "test_flat.py").write_text("from test_other import thing\nx = __import__('test_other')\n")
    monkeypatch.setattr(f"{__name__}.TESTS", fake)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    for check in (test_every_test_module_sits_where_the_layout_says, test_no_test_module_imports_another):
        try:
            check()
        except AssertionError as e:
            assert "test_flat.py" in str(e)
        else:
            raise AssertionError(f"{check.__name__} passed on a misplaced test")
