"""Auto-detected paths: a faked Kaggle notebook (env var + a tmp /kaggle root), Colab, and elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.config import Config, apply_overrides, load_config
from melanoma.runtime.place import Place, detect
from melanoma.runtime.paths import resolve_paths

ROOT = Path(__file__).resolve().parents[1]
COMP = "siim-isic-melanoma-classification"


def kaggle_root(tmp_path: Path, tfrecords: bool = True) -> Path:
    """A fake /kaggle: the competition and (optionally) the public 384-px TFRecords attached."""
    (tmp_path / "input" / COMP).mkdir(parents=True)
    (tmp_path / "input" / COMP / "sample_submission.csv").write_text("image_name,target\nISIC_1,0\n")
    if tfrecords:
        (tmp_path / "input" / "melanoma-384x384").mkdir()
    (tmp_path / "working").mkdir()
    return tmp_path


def test_detect_the_place():
    cfg = Config()
    assert detect(cfg, environ={}, modules={}).name == "local"
    kaggle = detect(cfg, environ={"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, modules={}, kaggle_root="/fake")
    assert kaggle == Place("kaggle", "/fake/input", "/fake/working")
    assert detect(cfg, environ={"COLAB_RELEASE_TAG": "release-colab_2025"}, modules={}).name == "colab"
    colab = detect(cfg, environ={}, modules={"google.colab": object()})
    assert colab == Place("colab", cfg.kaggle.colab_root, cfg.kaggle.colab_root, None)


def test_kaggle_defaults_come_from_kaggle_input_and_working(tmp_path, monkeypatch):
    root = kaggle_root(tmp_path)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    cfg = apply_overrides(Config(), {"prepare.size": 384})
    paths = resolve_paths(cfg, detect(cfg, kaggle_root=root))
    assert paths.data == root / "input" / COMP
    assert paths.sample_submission == root / "input" / COMP / "sample_submission.csv"
    assert paths.tfrecords == root / "input" / "melanoma-384x384"
    assert paths.folds == root / "working" / "runs" / "folds.csv"
    assert paths.image_run == root / "working" / "runs" / "image"
    assert paths.submission == root / "working" / "submission.csv"
    # no public TFRecords at that size attached: `prepare` writes them under /kaggle/working
    cfg = apply_overrides(Config(), {"prepare.size": 256})
    assert resolve_paths(cfg, detect(cfg, kaggle_root=root)).tfrecords == root / "working" / "tfrecords"


def test_explicit_paths_win_over_detection(tmp_path, monkeypatch):
    root = kaggle_root(tmp_path)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    cfg = load_config(None, ["paths.data=/my/data", "paths.submission=/my/sub.csv"])
    paths = resolve_paths(cfg, detect(cfg, kaggle_root=root))
    assert paths.data == Path("/my/data") and paths.submission == Path("/my/sub.csv")
    assert paths.image_run == root / "working" / "runs" / "image"  # runs was left at its default
    # the shipped TPU config names no path: inside Kaggle they all come from detection
    tpu = load_config(ROOT / "configs" / "kaggle_tpu.yaml")
    detected = resolve_paths(tpu, detect(tpu, kaggle_root=root))
    assert detected.data == root / "input" / COMP and detected.submission == root / "working" / "submission.csv"
    assert resolve_paths(tpu, Place("local")).data == Path(Config().paths.data)


def test_detection_from_the_real_environment(monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.delenv("MELANOMA_KAGGLE_ROOT", raising=False)
    paths = resolve_paths(Config())  # the real /kaggle root, only named here, never touched
    # nothing attached: today's mount point is named, so the error says where Kaggle would put it
    assert paths.data == Path("/kaggle/input/competitions") / COMP
    assert paths.submission == Path("/kaggle/working/submission.csv")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert resolve_paths(Config()).data == Path(Config().paths.data)


def test_colab_drive_root_and_gcs_tfrecords(tmp_path):
    cfg = load_config(None, [f"kaggle.colab_root={tmp_path}/drive",
                             "kaggle.colab_tfrecords=gs://my-bucket/melanoma-384x384"])
    paths = resolve_paths(cfg, detect(cfg, environ={"COLAB_RELEASE_TAG": "x"}, modules={}))
    assert paths.data == tmp_path / "drive" / COMP and paths.submission == tmp_path / "drive" / "submission.csv"
    assert paths.tfrecords == "gs://my-bucket/melanoma-384x384"  # a URL stays a string, its // intact
    # elsewhere a gs:// path in the config survives too
    cfg = load_config(None, ["paths.tfrecords=gs://b/t"])
    assert resolve_paths(cfg, Place("local")).tfrecords == "gs://b/t"


def new_kaggle_root(tmp_path: Path) -> Path:
    """A fake /kaggle as Kaggle mounts inputs today: competitions/<slug> and datasets/<owner>/<slug>."""
    comp = tmp_path / "input" / "competitions" / COMP
    comp.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        (comp / name).write_text("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target\n")
    (comp / "sample_submission.csv").write_text("image_name,target\nISIC_1,0\n")
    tfrec = tmp_path / "input" / "datasets" / "cdeotte" / "melanoma-384x384"
    tfrec.mkdir(parents=True)
    (tfrec / "train00-2182.tfrec").touch()
    (tmp_path / "working").mkdir()
    return tmp_path


def test_todays_kaggle_mounts_are_found(tmp_path, monkeypatch):
    root = new_kaggle_root(tmp_path)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    tpu = load_config(ROOT / "configs" / "kaggle_tpu.yaml")
    paths = resolve_paths(tpu, detect(tpu, kaggle_root=root))
    assert paths.data == root / "input" / "competitions" / COMP
    assert paths.tfrecords == root / "input" / "datasets" / "cdeotte" / "melanoma-384x384"
    assert paths.sample_submission == paths.data / "sample_submission.csv"


def test_a_locator_such_as_kagglehub_is_asked_last(tmp_path):
    from melanoma.runtime.place import locate

    elsewhere = tmp_path / "cache" / "comp"
    elsewhere.mkdir(parents=True)
    asked = []

    def locator(kind, ref):
        asked.append((kind, ref))
        return str(elsewhere)

    place = Place("kaggle", str(tmp_path / "input"), str(tmp_path / "working"))
    assert locate(place, "competition", COMP, locator) == (elsewhere, "kagglehub")
    (tmp_path / "input" / COMP).mkdir(parents=True)  # mounted (old layout): no need to ask
    assert locate(place, "competition", COMP, locator)[0] == tmp_path / "input" / COMP and len(asked) == 1


@pytest.mark.parametrize("layout", ["new", "old"])
def test_doctor_json_resolves_data_and_tfrecords_on_kaggle(tmp_path, layout):
    root = new_kaggle_root(tmp_path) if layout == "new" else kaggle_root(tmp_path)
    if layout == "old":
        (root / "input" / "melanoma-384x384" / "train00-2182.tfrec").touch()
    env = {**os.environ, "KAGGLE_KERNEL_RUN_TYPE": "Interactive", "MELANOMA_KAGGLE_ROOT": str(root)}
    env.pop("KERAS_BACKEND", None)
    res = subprocess.run([sys.executable, "-m", "melanoma", "doctor", "--json", "--no-devices", "--config",
                          str(ROOT / "configs" / "kaggle_tpu.yaml")], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["place"] == "kaggle"
    data, tfrec = report["paths"]["data"], report["paths"]["tfrecords"]
    if layout == "new":
        assert data["value"] == str(root / "input" / "competitions" / COMP)
        assert tfrec["value"] == str(root / "input" / "datasets" / "cdeotte" / "melanoma-384x384")
        assert "datasets/" in tfrec["source"] and "competitions/" in data["source"]
    else:
        assert data["value"] == str(root / "input" / COMP) and "old" in data["source"]
        assert tfrec["value"] == str(root / "input" / "melanoma-384x384")
    assert report["paths"]["runs"]["value"] == str(root / "working" / "runs")
    assert report["backend"] == "tensorflow" and {"keras", "jax", "tensorflow-cpu"} <= set(report["versions"])
    assert not any("TFRecords" in p["problem"] for p in report["problems"])
