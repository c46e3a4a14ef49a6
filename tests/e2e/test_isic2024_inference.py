"""ISIC 2024's code competition end to end on the real 3-row test set (tests/data/isic2024): a tiny image run and a
tabular run stacked on it (the 100 real training rows, every eighth marked malignant) -> `kaggle upload-models
--no-upload` -> `infer` -> a submission that matches the real sample_submission.csv; image-only and tabular-only
bundles; and the rehearsal: the generated inference notebook's code cells executed against a fake /kaggle tree
with the internet off (pip --no-index from a wheels folder holding this package's wheel, and every socket refused)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.isic2024 import real_competition_folder
from helpers.paths import ROOT
from melanoma.cli import main
from melanoma.data.submission import check_submission_file

REAL = ROOT / "tests" / "data" / "isic2024"
TINY_TABULAR = ["--set", "tabular.seeds=1", "--set", "tabular.lgbm_max_rounds=20", "--set", "tabular.pauc_patience=5",
                "--set", "tabular.lgbm_min_child_samples=3", "--set", "tabular.negative_ratio=0"]


def cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, args[:2]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("isic2024_infer")
    data = real_competition_folder(root)
    cli("folds", "--data", data, "--out", root / "folds.csv", "--n-folds", "2")
    cli("prepare", "--data", data, "--out", root / "tfrec", "--size", "32", "--n-folds", "2",
        "--folds-file", root / "folds.csv")
    cli("train", "--tfrecords", root / "tfrec", "--out", root / "image", "--weights", "none", "--epochs", "1",
        "--batch-size", "16", "--set", "n_folds=2", "--set", "train.tensorboard=false")
    cli("tabular", "--data", data, "--folds-file", root / "folds.csv", "--out", root / "tab", "--image-runs",
        root / "image", *TINY_TABULAR)
    cli("kaggle", "upload-models", root / "tab", "--no-upload", "--owner", "alice", "--out", root / "bundle")
    return {"root": root, "data": data, "bundle": root / "bundle"}


def test_the_bundle_names_what_is_inside(made):
    bundle = made["bundle"]
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["image_models"] == ["image0"] and info["tabular"] == "tabular" and info["competition"] == "isic2024"
    assert info["image_runs"] == [str(made["root"] / "image")]  # brought along by the tabular run
    assert info["package"]["name"] == "melanoma" and info["package"]["version"]
    assert (bundle / "image0" / "model.keras").is_file() and not (bundle / "image0" / "savedmodel").exists()
    assert (bundle / "tabular" / "models" / "models.json").is_file()
    meta = json.loads((bundle / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/melanoma-isic2024-models"


def test_infer_writes_a_valid_submission_and_a_projection(made, tmp_path):
    out = tmp_path / "submission.csv"
    cli("infer", "--bundle", made["bundle"], "--data", made["data"], "--out", out)
    assert check_submission_file(out, made["data"] / "sample_submission.csv") == 3
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["isic_id", "target"] and sub["target"].between(0, 1).all()
    timing = json.loads((tmp_path / "submission.timing.json").read_text())
    assert timing["tiles"] == 3 and timing["projected_tiles"] == 500_000 and timing["projected_seconds"] > 0
    assert [s["step"] for s in timing["steps"]][:2] == ["list tiles", "image model image0"]
    assert timing["steps"][-1]["step"].startswith("tabular models")


def test_image_only_and_tabular_only_bundles(made, tmp_path):
    root, data = made["root"], made["data"]
    cli("kaggle", "upload-models", root / "image", "--no-upload", "--out", tmp_path / "images")
    cli("tabular", "--data", data, "--folds-file", root / "folds.csv", "--out", tmp_path / "tab", *TINY_TABULAR)
    cli("kaggle", "upload-models", tmp_path / "tab", "--no-upload", "--out", tmp_path / "trees")
    for name in ("images", "trees"):
        out = tmp_path / f"{name}.csv"
        cli("infer", "--bundle", tmp_path / name, "--data", data, "--out", out)
        assert check_submission_file(out, data / "sample_submission.csv") == 3
    trees = json.loads((tmp_path / "trees.timing.json").read_text())
    assert [s["step"] for s in trees["steps"]] == ["tabular models (2 member(s), 0 image feature(s))"]


def test_bad_bundles_are_one_line(made, tmp_path, capsys):
    assert main(["infer", "--bundle", str(tmp_path), "--data", str(made["data"]), "--out",
                 str(tmp_path / "s.csv")]) == 2
    assert "bundle.json" in capsys.readouterr().err
    # an image run the tabular run was not stacked on would be computed and never used
    code = main(["kaggle", "upload-models", str(made["root"] / "tab"), str(made["root"] / "tab"), "--no-upload",
                 "--out", str(tmp_path / "b")])
    assert code == 2 and "2 tabular runs" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# the rehearsal

GUARD = '''
import socket
_connect = socket.socket.connect
def _refuse(self, address, *a, **kw):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError("network is off (rehearsal): connect to %r refused" % (address,))
    return _connect(self, address, *a, **kw)
socket.socket.connect = _refuse
socket.socket.connect_ex = lambda self, address: _refuse(self, address) or 0
'''


def _image_like_env(work: Path) -> Path:
    """A fresh interpreter whose site-packages is empty, with the shared environment's packages (this package's
    own editable install and metadata left out) behind it: a Kaggle image with the dependencies and no melanoma."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", work / "image"], check=True)
    deps = work / "deps"
    deps.mkdir()
    shared = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p, "numpy").is_dir()))
    for entry in shared.iterdir():
        if entry.name.startswith(("melanoma", "__editable__")) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    python = work / "image" / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_image_packages.pth").write_text(f"{deps}\n")
    return python


def _wheels(work: Path) -> Path:
    """This package's wheel, built from a copy of the sources (the build leaves nothing in the checkout)."""
    src = work / "src-copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:  # offline, so the environment's own setuptools builds it:
        # one before 77 reads only PEP 621's table form of the licence (the wheel is the same otherwise)
        text = (src / "pyproject.toml").read_text().replace('license = "MIT"', 'license = {text = "MIT"}')
        (src / "pyproject.toml").write_text(text)
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", wheels, src], check=True, capture_output=True)
    return wheels


@pytest.mark.slow  # a wheel build, an interpreter and the notebook's install and infer: about a minute
def test_the_inference_notebook_rehearsal_writes_a_valid_submission_offline(made, tmp_path):
    from melanoma.kaggle import notebooks

    kaggle = tmp_path / "kaggle"
    shutil.copytree(made["data"], kaggle / "input" / "isic-2024-challenge",
                    ignore=shutil.ignore_patterns("train-*"))  # the code competition's test files
    shutil.copytree(made["bundle"], kaggle / "input" / "datasets" / "alice" / "melanoma-isic2024-models")
    shutil.copytree(_wheels(tmp_path), kaggle / "input" / "datasets" / "alice" / "melanoma-wheels")
    (kaggle / "working").mkdir()
    python = _image_like_env(tmp_path)
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)

    cfg = SimpleCfg()
    folder = notebooks.write_inference_folder(cfg, tmp_path / "push", "alice/melanoma-isic2024-inference", "gpu",
                                              (ROOT / "kernels" / notebooks.INFERENCE_SOURCE).read_text(),
                                              "melanoma-isic2024-models")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["competition_sources"] == ["isic-2024-challenge"]
    assert meta["dataset_sources"] == ["alice/melanoma-wheels", "alice/melanoma-isic2024-models"]
    nb = json.loads((folder / notebooks.INFERENCE_NOTEBOOK).read_text())
    script = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    (tmp_path / "notebook.py").write_text(script)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KAGGLE_", "PIP_", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(guard), MELANOMA_KAGGLE_ROOT=str(kaggle), HOME=str(tmp_path / "home"),
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PATH=f"{python.parent}:{env['PATH']}")
    offline = subprocess.run([python, "-c", "import socket; socket.create_connection(('pypi.org', 443), 3)"],
                             env=env, capture_output=True, text=True)
    assert offline.returncode != 0  # the guard holds (name lookup or connect refused)
    res = subprocess.run([python, tmp_path / "notebook.py"], cwd=kaggle / "working", env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    installed = subprocess.run([python, "-c", "import melanoma; print(melanoma.__file__)"], env=env,
                               capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "image") in installed  # the wheel's copy, installed offline, ran the steps
    submission = kaggle / "working" / "submission.csv"
    assert check_submission_file(submission, REAL / "sample_submission.csv") == 3
    assert (kaggle / "working" / "submission.timing.json").is_file() and "projected" in res.stdout


class SimpleCfg:
    """The config fields write_inference_folder reads: the wheels dataset and privacy."""

    class kaggle:  # noqa: N801
        wheels = "melanoma-wheels"
        private = True
