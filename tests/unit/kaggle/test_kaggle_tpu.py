"""The Kaggle TPU path of today: a pushed notebook that keeps the image's frameworks, chained sessions that
resume finished folds, and a wheels dataset for notebooks with the internet off."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.kaggle import cells, install, notebooks
from melanoma.cli import main
from melanoma.config import load_config
from melanoma.runtime.place import Place, previous_runs
from melanoma.errors import KaggleError
from melanoma.run import adopt_finished_folds
from melanoma.kaggle.wheels import build_wheels

from helpers.paths import ROOT
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
    assert 'ACCELERATOR = "TpuV5E8"' in cells[0]  # exported: train refuses a TPU push that got no TPU
    # No pip call names a framework; the dependencies come from the package itself.
    for cell in cells:
        for line in cell.splitlines():
            if "pip" in line and "install" in line:
                assert not FRAMEWORKS.search(line), line
    install = next(c for c in cells if "melanoma.kaggle.install" in c)
    assert '"--no-deps"' in install and "requirements.txt" not in install
    # Every step goes through the helper that raises on failure; none is a `!melanoma` line that would not.
    assert not any(line.lstrip().startswith("!melanoma") for c in cells for line in c.splitlines())
    doctor = next(i for i, c in enumerate(cells) if 'melanoma("doctor"' in c)
    assert doctor < next(i for i, c in enumerate(cells) if 'melanoma("run"' in c)


def test_the_install_cell_installs_the_package_then_what_the_image_lacks(tmp_path, monkeypatch):
    """The notebook's install cell with a fake pip, internet off (WHEELS): the package without dependencies from
    the wheels folder, then `melanoma.kaggle.install` with the same folder; never a framework."""
    nb = notebooks.build_notebook((ROOT / "kernels" / "notebook.ipy").read_text(), "kaggle")
    install = next(c for c in code_cells(nb) if "melanoma.kaggle.install" in c)
    install = install[:install.index("sys.path.insert")]  # the helper import needs the checkout: not here
    calls = []
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    wheels = "/kaggle/input/datasets/alice/melanoma-wheels"
    exec(install, {"WHEELS": wheels, "subprocess": subprocess, "sys": sys, "os": __import__("os")})
    first, second = calls
    assert first[1:4] == ["-m", "pip", "install"] and "--no-deps" in first and first[-2:] == ["-e", "."]
    assert first[first.index("--find-links") + 1] == wheels and "--no-index" in first
    assert second[1:3] == ["-m", "melanoma.kaggle.install"] and second[3:] == ["--wheels", wheels]
    assert not any(FRAMEWORKS.search(a) for a in first + second)


# A Kaggle TPU image as melanoma.kaggle.install sees it: its frameworks and packages, no lightgbm.
TPU_IMAGE = {"tensorflow-cpu": "2.20.0", "jax": "0.7.2", "jaxlib": "0.7.2", "libtpu": "0.0.17", "keras": "3.13.2",
             "numpy": "2.1.3", "pandas": "2.2.3", "scikit-learn": "1.6.1", "scipy": "1.15.2", "matplotlib": "3.10.0",
             "pillow": "11.1.0", "pyyaml": "6.0.2", "tqdm": "4.67.1", "threadpoolctl": "3.5.0",
             "scikit-image": "0.25.0", "imbalanced-learn": "0.13.0", "kagglehub": "0.3.12",
             "h5py": "3.13.0"}  # h5py: a dependency of keras


def test_the_install_plan_takes_pyproject_less_the_frameworks():
    requirements, extras = install.read_requirements(ROOT)
    assert "lightgbm>=4" in requirements and "matplotlib>=3.7" in requirements  # the one list
    p = install.plan(requirements, extras, TPU_IMAGE)
    assert p.missing == ["lightgbm>=4"]  # what Kaggle's TPU image lacks, and nothing it has
    assert p.present["scikit-learn"] == "1.6.1" and not any(FRAMEWORKS.search(r) for r in p.wanted)
    colab = {k: v for k, v in TPU_IMAGE.items() if not k.startswith("tensorflow")}  # no TensorFlow at all
    p = install.plan(requirements, extras, colab, colab=True)
    assert p.missing == ["lightgbm>=4", "kaggle==2.2.4", "tensorflow-cpu>=2.16"]
    assert install.plan(["tensorflow>=2", "jax[tpu]", "keras>=3", "libtpu", "tqdm"], {}, {"tensorflow": "2"}).wanted \
        == ["tqdm"]


def test_the_image_is_pinned_by_its_own_freeze(tmp_path, monkeypatch, capsys):
    freeze = ["numpy==2.1.3", "torch @ file:///tmp/torch-2.8.0%2Bcpu.whl", "-e git+https://x/melanoma#egg=melanoma",
              "melanoma==0.1.0", "# comment", "jax==0.7.2"]
    assert install.constraints(freeze, {"torch": "2.8.0+cpu"}) == ["numpy==2.1.3", "torch==2.8.0+cpu", "jax==0.7.2"]
    monkeypatch.setattr(install, "installed", lambda: TPU_IMAGE)
    calls = []
    install.install(ROOT, wheels="/w", run=calls.append, freeze_lines=freeze)
    (cmd,) = calls
    assert cmd[-1] == "lightgbm>=4" and cmd[cmd.index("--find-links") + 1] == "/w" and "--no-index" in cmd
    pins = Path(cmd[cmd.index("-c") + 1]).read_text().split()
    assert "numpy==2.1.3" in pins and "jax==0.7.2" in pins  # nothing the image has can move
    assert "installing: lightgbm>=4" in capsys.readouterr().out
    monkeypatch.setattr(install, "installed", lambda: {**TPU_IMAGE, "lightgbm": "4.6.0"})
    calls.clear()
    install.install(ROOT, run=calls.append, freeze_lines=freeze)
    assert calls == []  # nothing missing: pip is not called (it may have no index to reach)


def test_the_notebook_helpers_load_before_any_dependency():
    """install and cells run in the notebook's kernel or before the dependencies exist: standard library only."""
    code = ("import sys; before = set(sys.modules); import melanoma.kaggle.install, melanoma.kaggle.cells; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "['melanoma']", res.stderr


def test_a_failed_step_stops_the_notebook_with_its_one_line_error(tmp_path, capsys):
    cells.melanoma("--version")  # succeeds: its output streams into the cell
    assert "melanoma 0.1.0" in capsys.readouterr().out
    with pytest.raises(cells.StageFailed, match=r"`melanoma folds` failed \(exit status 2\): melanoma: error: .*"
                                                r"train.csv"):
        cells.melanoma("folds", "--data", tmp_path / "none", "--out", tmp_path / "f.csv")
    assert cells.notebook_sets({cells.SET_ENV: "train.epochs=1  n_folds=2"}) == [
        "--set", "train.epochs=1", "--set", "n_folds=2"]
    with pytest.raises(cells.StageFailed, match="n_folds"):  # the rehearsal's overrides reach the command
        cells.melanoma("folds", "--data", ROOT / "data" / "demo", "--out", tmp_path / "f.csv",
                       environ={cells.SET_ENV: "n_folds=1"})
    assert not (tmp_path / "f.csv").exists()


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
    reqs = download[download.index("--platform") + 2:]
    # pyproject's dependencies (lightgbm included) and build requirements; the frameworks stay the image's
    assert {"lightgbm>=4", "matplotlib>=3.7", "setuptools>=77", "wheel"} <= set(reqs)
    assert not any(FRAMEWORKS.search(r) for r in reqs)
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/melanoma-wheels"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(KaggleError, match="other than wheels"):
        build_wheels(ROOT, out, "alice", run=calls.append)
    with pytest.raises(KaggleError, match="not the melanoma repository"):
        build_wheels(tmp_path, tmp_path / "w2", "alice", run=calls.append)


# --------------------------------------------------------------------------------------------------------
# a TPU that was meant to be there


def test_what_makes_a_tpu_expected(tmp_path):
    from melanoma.runtime.devices import device_problem
    from melanoma.runtime.machine import expected_tpu

    dev = str(tmp_path)  # no device files
    assert expected_tpu("auto", {}, dev) is None and expected_tpu("none", {}, dev) is None
    assert expected_tpu("auto", {"ISTPUVM": "1", "TPU_PROCESS_ADDRESSES": "local"}, dev) == \
        "ISTPUVM=1 in the environment"  # Kaggle's TPU VM image
    assert expected_tpu("auto", {"MELANOMA_ACCELERATOR": "TpuV5E8"}, dev) == "MELANOMA_ACCELERATOR=TpuV5E8"
    assert expected_tpu("auto", {"MELANOMA_ACCELERATOR": "NvidiaTeslaT4"}, dev) is None  # pushed for a GPU
    assert expected_tpu("auto", {"COLAB_TPU_ADDR": "10.0.0.2:8470"}, dev).startswith("COLAB_TPU_ADDR")
    assert expected_tpu("local", {}, dev) == "train.devices.tpu=local"
    env = {"ISTPUVM": "1"}
    problem = device_problem("auto", False, "jax", "cpu", 8, env, dev)
    assert problem.startswith("a TPU is expected (ISTPUVM=1 in the environment) but jax sees 8 x cpu: ")
    assert "train.devices.allow_cpu_fallback=true" in problem and "\n" not in problem
    assert device_problem("auto", True, "jax", "cpu", 8, env, dev) is None  # accepted on purpose
    assert device_problem("auto", False, "jax", "tpu", 8, env, dev) is None
    assert device_problem("auto", False, "jax", "cpu", 1, {}, dev) is None  # no TPU expected: a CPU run
    assert "no TPU build" in device_problem("auto", False, "tensorflow", "cpu", 1, env, dev)


def tpu_pretended() -> dict[str, str]:
    """The environment of Kaggle's TPU VM image on a machine where JAX sees only the CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    return {**env, "ISTPUVM": "1", "TPU_PROCESS_ADDRESSES": "local", "JAX_PLATFORMS": "cpu",
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_train_refuses_a_tpu_it_cannot_see_before_any_work(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "melanoma", "train", "--tfrecords", str(tmp_path / "tf"),
                          "--out", str(out)], capture_output=True, text=True, env=tpu_pretended(), timeout=120)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("melanoma: error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "a TPU is expected (ISTPUVM=1 in the environment) but jax sees 1 x cpu" in errors[0]
    assert "train.devices.allow_cpu_fallback=true" in errors[0] and not out.exists()


def test_doctor_lists_the_missing_tpu_first(monkeypatch):
    from melanoma.kaggle import doctor

    monkeypatch.setenv("ISTPUVM", "1")
    monkeypatch.setattr(doctor, "resolve_backend", lambda setting: ("jax", "a TPU is attached"))
    monkeypatch.setattr(doctor, "list_devices", lambda backend: {"kind": "cpu", "count": 1, "names": ["cpu"]})
    cfg = load_config(ROOT / "configs" / "kaggle_tpu.yaml")
    report = doctor.doctor(cfg, Place("local"))
    assert report["tpu_expected"] == "ISTPUVM=1 in the environment"
    first = report["problems"][0]
    assert first["problem"] == "a TPU is expected (ISTPUVM=1 in the environment) but jax sees 1 x cpu"
    assert "train.devices.allow_cpu_fallback=true" in first["fix"]
    cfg = load_config(ROOT / "configs" / "kaggle_tpu.yaml", ["train.allow_cpu_fallback=true"])
    assert not any("TPU is expected" in p["problem"] for p in doctor.doctor(cfg, Place("local"))["problems"])


@pytest.mark.slow  # three commands that import JAX (and one TensorFlow): about 40 s on 2 cores
def test_run_and_doctor_json_see_the_missing_tpu_and_the_fallback_accepts_it(tmp_path):
    env = tpu_pretended()
    runs = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "melanoma", "run", "--config", str(ROOT / "configs" / "demo.yaml"),
                          "--set", f"paths.runs={runs}", "--set", f"paths.tfrecords={tmp_path / 'tf'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "jax sees 1 x cpu" in res.stderr and not runs.exists()  # before the folds
    res = subprocess.run([sys.executable, "-m", "melanoma", "doctor", "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    report = json.loads(res.stdout)
    assert report["devices"]["kind"] == "cpu" and "jax sees 1 x cpu" in report["problems"][0]["problem"]
    res = subprocess.run([sys.executable, "-m", "melanoma", "train", "--tfrecords", str(tmp_path / "tf"),
                          "--out", str(tmp_path / "out"), "--set", "train.allow_cpu_fallback=true"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "TPU is expected" not in res.stderr  # past the check: there are no records
    assert "tf" in res.stderr.splitlines()[-1]
