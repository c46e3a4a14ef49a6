"""Auto-detected paths: a faked Kaggle notebook (env var + a tmp /kaggle root), Colab, and elsewhere."""

from __future__ import annotations

from pathlib import Path

from melanoma.config import Config, apply_overrides, load_config
from melanoma.environment import Place, detect
from melanoma.run import resolve_paths

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
    paths = resolve_paths(Config())  # the real /kaggle root, only named here, never touched
    assert paths.data == Path("/kaggle/input") / COMP and paths.submission == Path("/kaggle/working/submission.csv")
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
