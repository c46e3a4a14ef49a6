"""The Kaggle TPU path of today: a pushed notebook that keeps the image's frameworks, chained sessions that
resume finished folds, and a wheels dataset for notebooks with the internet off."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from melanoma.kaggle import notebooks
from melanoma.cli import main
from melanoma.config import load_config
from melanoma.kaggle.environment import Place, previous_runs
from melanoma.errors import KaggleError
from melanoma.run import adopt_finished_folds
from melanoma.kaggle.wheels import build_wheels

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = re.compile(r"\b(tensorflow|jax|jaxlib|keras)\b")


def code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_dry_run_push_asks_for_a_tpu_v5e8_and_installs_no_framework(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = main(["kaggle", "push", "--dry-run", "--config", str(ROOT / "configs" / "kaggle_tpu.yaml"),
                 "--set", "kaggle.username=alice", "--set", "kaggle.source=https://github.com/alice/melanoma.git",
                 "--out", str(tmp_path / "push")])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "push" / "kernel-metadata.json").read_text())
    assert meta["machine_shape"] == "TpuV5E8" and meta["enable_tpu"] is True and meta["kernel_sources"] == []
    nb = json.loads((tmp_path / "push" / notebooks.NOTEBOOKS["kaggle"]).read_text())
    cells = code_cells(nb)
    # No pip call names a framework; tensorflow-cpu is only added where the image has no TensorFlow at all.
    for cell in cells:
        for line in cell.splitlines():
            if "pip" in line and "install" in line:
                assert not FRAMEWORKS.search(line), line
    install = next(c for c in cells if "wanted" in c)
    assert 'if not any(version(d) for d in ("tensorflow", "tensorflow-cpu", "tensorflow-tpu"))' in install
    assert "missing = [r for r in wanted if not version(" in install  # only what the image lacks
    assert any("melanoma doctor" in c for c in cells)  # backend, devices and versions printed first
    assert cells.index(next(c for c in cells if "melanoma doctor" in c)) < cells.index(
        next(c for c in cells if "melanoma run" in c))


def test_the_install_cell_installs_only_what_is_missing(tmp_path, monkeypatch):
    """Run the notebook's install cell with a fake pip: present packages are skipped, frameworks never added."""
    nb = notebooks.build_notebook((ROOT / "kernels" / "notebook.ipy").read_text(), "kaggle")
    install = next(c for c in code_cells(nb) if "wanted" in c)
    (tmp_path / "requirements.txt").write_text("numpy>=1.26\nnot-a-real-package-xyz>=1\n")
    monkeypatch.chdir(tmp_path)
    calls = []
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    exec(install, {"WHEELS": "/kaggle/input/datasets/alice/melanoma-wheels", "subprocess": subprocess})
    first, second = calls
    assert first[-1] == "not-a-real-package-xyz>=1" and "numpy>=1.26" not in first  # numpy is here already
    assert "--no-index" in first and "/kaggle/input/datasets/alice/melanoma-wheels" in first
    assert not any(FRAMEWORKS.search(a) for a in first)  # TensorFlow is installed here: nothing added
    assert second[-3:] == ["--no-build-isolation", "-e", "."] and "--no-deps" in second


def test_chained_push_takes_its_own_output_as_an_input(tmp_path):
    cfg = load_config(ROOT / "configs" / "kaggle_tpu.yaml", ["kaggle.source=alice/melanoma-src", "kaggle.chain=true",
                                                             "kaggle.wheels=melanoma-wheels"])
    meta = notebooks.kernel_metadata(cfg, "alice/melanoma-tpu", "tpu", "nb.ipynb")
    assert meta["kernel_sources"] == ["alice/melanoma-tpu"]
    assert meta["dataset_sources"] == ["cdeotte/melanoma-384x384", "alice/melanoma-src", "alice/melanoma-wheels"]


def finished_run(root: Path, folds: dict[int, bool]) -> Path:
    """An image run folder with folds finished (True) or interrupted (False)."""
    root.mkdir(parents=True)
    (root / "resume.json").write_text('{"fingerprint": "abc", "backend": "jax"}')
    for k, done in folds.items():
        (root / f"fold{k}").mkdir()
        (root / f"fold{k}" / "history.csv").write_text("epoch\n0\n")
        (root / f"fold{k}" / ("done.json" if done else "backup")).write_text("{}")
    return root


def test_an_attached_earlier_session_is_continued(tmp_path):
    inputs = tmp_path / "input"
    prev = finished_run(inputs / "notebooks" / "alice" / "melanoma-tpu" / "runs" / "image", {0: True, 1: True, 2: False})
    place = Place("kaggle", str(inputs), str(tmp_path / "working"))
    assert previous_runs(place, "melanoma-tpu") == prev.parent
    assert previous_runs(place, "other-slug") is None and previous_runs(Place("local"), "melanoma-tpu") is None
    run_dir = tmp_path / "working" / "runs" / "image"
    (run_dir / "fold0").mkdir(parents=True)  # this session already has its own fold 0: kept as it is
    assert adopt_finished_folds(prev, run_dir) == ["fold1", "fold2"]
    assert (run_dir / "fold1" / "done.json").is_file() and (run_dir / "fold2" / "backup").is_file()
    assert not (run_dir / "fold0" / "done.json").exists() and (run_dir / "resume.json").is_file()
    assert adopt_finished_folds(prev, run_dir) == []  # idempotent
    assert sorted(p.name for p in prev.iterdir()) == ["fold0", "fold1", "fold2", "resume.json"]  # source untouched


def test_wheels_dataset_folder(tmp_path):
    calls = []
    out = build_wheels(ROOT, tmp_path / "wheels", "alice", run=calls.append)
    assert [c[3] for c in calls] == ["wheel", "download"]
    assert "--no-deps" in calls[0] and str(ROOT) == calls[0][-1]
    download = calls[1]
    assert download[download.index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in download
    assert download[-1] == str(ROOT / "requirements.txt")
    reqs = [r for r in (ROOT / "requirements.txt").read_text().splitlines() if r.strip() and not r.startswith("#")]
    assert reqs and not any(FRAMEWORKS.search(r) for r in reqs)  # the frameworks stay the image's
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/melanoma-wheels"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(KaggleError, match="other than wheels"):
        build_wheels(ROOT, out, "alice", run=calls.append)
    with pytest.raises(KaggleError, match="not the melanoma repository"):
        build_wheels(tmp_path, tmp_path / "w2", "alice", run=calls.append)
