"""Issue 12: every mistake is refused before work starts, with one line naming the culprit, and a refused
command leaves every folder it touched exactly as it was (hashed before and after)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.paths import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from melanoma.cli import main
from melanoma.errors import InputError

from helpers.layouts import textured_layout
from helpers.paths import DEMO
from helpers.runs import refused






@pytest.fixture
def data(tmp_path) -> Path:
    return textured_layout(tmp_path / "data", n_train=24, n_test=4, n_patients=8)


# ------------------------------------------------------------------ values that make no sense, flags

@pytest.mark.parametrize("argv, culprit", [
    (["train", "--epochs", "0"], "train.epochs"),
    (["train", "--epochs", "-1"], "train.epochs"),
    (["train", "--batch-size", "0"], "train.batch_size"),
    (["train", "--tta", "-1"], "train.tta"),
    (["prepare", "--n-folds", "1"], "n_folds"),
    (["folds", "--n-folds", "1"], "n_folds"),
    (["train", "--set", "train.augment.zoom=1.5"], "train.augment.zoom"),
    (["train", "--epochs", "x"], "--epochs"),  # argparse's own error, as one line
    (["blend", "--method", "median"], "--method"),
])
def test_bad_values_and_flags_are_refused_at_once(capsys, tmp_path, argv, culprit):
    start = time.perf_counter()
    refused(capsys, argv + ["--out", str(tmp_path / "out")], culprit, roots=[tmp_path])
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "out").exists()


def test_run_refuses_an_invalid_config_before_any_stage(capsys, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"paths: {{runs: {tmp_path / 'runs'}, tfrecords: {tmp_path / 'tf'}}}\nblend: {{method: median}}\n")
    start = time.perf_counter()
    refused(capsys, ["run", "--config", str(cfg)], "blend.method", "median", "weighted", roots=[tmp_path])
    assert time.perf_counter() - start < 5


# ------------------------------------------------------------------ CSV validation

@pytest.mark.parametrize("column, value, culprit", [
    ("age_approx", 999, "age_approx 999"),
    ("age_approx", -5, "age_approx -5"),
    ("sex", "M", "sex 'M'"),
    ("anatom_site_general_challenge", "trunk", "'trunk'"),
    ("image_name", "../../etc/passwd", "../../etc/passwd"),
    ("image_name", "/abs/ISIC_1", "/abs/ISIC_1"),
    ("target", 2, "target"),
])
def test_bad_csv_values_name_file_row_and_value(capsys, data, tmp_path, column, value, culprit):
    train = pd.read_csv(data / "train.csv")
    train[column] = train[column].astype(object)
    train.loc[5, column] = value
    train.to_csv(data / "train.csv", index=False)
    refused(capsys, ["folds", "--data", str(data), "--out", str(tmp_path / "f" / "folds.csv")],
            "train.csv, line 7", culprit, roots=[data])
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("drop, rename, culprit", [
    ("sex", None, "'sex'"),
    (None, {"age_approx": "Age_Approx"}, "rename it to 'age_approx'"),
    ("anatom_site_general_challenge", None, "'anatom_site_general_challenge'"),
    ("patient_id", None, "data.patient_id: per_image"),
])
def test_missing_or_misnamed_columns_are_errors(capsys, data, tmp_path, drop, rename, culprit):
    train = pd.read_csv(data / "train.csv")
    train = train.drop(columns=drop) if drop else train.rename(columns=rename)
    train.to_csv(data / "train.csv", index=False)
    refused(capsys, ["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv")], "train.csv, line 1",
            culprit, roots=[data])


def test_missing_patient_id_accepted_when_the_config_says_per_image(capsys, data, tmp_path):
    pd.read_csv(data / "train.csv").drop(columns="patient_id").to_csv(data / "train.csv", index=False)
    assert main(["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv"),
                 "--set", "data.patient_id=per_image"]) == 0
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert folds.patient_id.nunique() == len(folds)


ROW_VALUES = st.one_of(st.none(), st.text(max_size=12), st.integers(-10**6, 10**6),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(["male", "female", "torso", "head/neck", "../x", "/abs", "a\\b", "..", "0",
                                        "1", "NaN", "", " ", "\x00", "é", "ISIC_1,2", '"q"']))
COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "target"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({c: ROW_VALUES for c in COLUMNS}), min_size=0, max_size=6),
       drop=st.sets(st.sampled_from(COLUMNS), max_size=2))
def test_csv_validation_property(tmp_path, rows, drop):
    """Any rows: either a valid table or one InputError line naming the file, never another exception."""
    from melanoma.data.schema import SEXES, SITES, read_table

    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=COLUMNS).drop(columns=sorted(drop)).to_csv(path, index=False)
    try:
        df = read_table(path, "train")
    except InputError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(str(path)) and "np.float64" not in msg
        return
    assert len(df) and df["target"].isin([0, 1]).all()
    assert df["sex"].dropna().isin(SEXES).all() and df["anatom_site_general_challenge"].dropna().isin(SITES).all()
    assert df["age_approx"].dropna().between(0, 120).all()
    assert not df["image_name"].str.contains(r"[/\\]").any()


# ------------------------------------------------------------------ late failures, reading what was not asked

def test_prepare_more_folds_than_patients_refused_before_decoding(capsys, data, tmp_path):
    out = tmp_path / "tf"
    refused(capsys, ["prepare", "--data", str(data), "--out", str(out), "--n-folds", "9"],
            "8 patients cannot fill 9 folds", roots=[data])
    assert not out.exists()  # no work folder, no empty output


def test_tabular_without_tfrecords_does_not_read_the_default_folder(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "tfrecords" / "demo"
    default.mkdir(parents=True)
    names = list(pd.read_csv(data / "train.csv").image_name) + list(pd.read_csv(data / "test.csv").image_name)
    pd.DataFrame({"image_name": names, "split": "train", "width": 100, "height": 80}).to_csv(
        default / "image_sizes.csv", index=False)
    assert main(["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv"), "--n-folds", "3"]) == 0
    argv = ["tabular", "--data", str(data), "--folds-file", str(tmp_path / "folds.csv"), "--model", "logreg", "--out"]
    assert main(argv + [str(tmp_path / "a")]) == 0
    assert pd.read_json(tmp_path / "a" / "metrics.json", typ="series").get("image_sizes_from") is None
    assert main(argv + [str(tmp_path / "b"), "--tfrecords", str(default)]) == 0  # asked for: used
    assert "image_sizes.csv" in pd.read_json(tmp_path / "b" / "metrics.json", typ="series")["image_sizes_from"]


def test_tabular_header_only_test_csv(capsys, data, tmp_path):
    assert main(["folds", "--data", str(data), "--out", str(tmp_path / "folds.csv"), "--n-folds", "3"]) == 0
    pd.read_csv(data / "test.csv").head(0).to_csv(data / "test.csv", index=False)
    capsys.readouterr()
    refused(capsys, ["tabular", "--data", str(data), "--folds-file", str(tmp_path / "folds.csv"), "--out",
                     str(tmp_path / "run")], "test.csv", "no rows", roots=[data, tmp_path])


def test_unfinished_prepare_folder_is_refused(tmp_path):
    from melanoma.data.records import check_prepared

    folder = tmp_path / "tf"
    (folder / ".prepare-work").mkdir(parents=True)
    (folder / "train00-10.tfrec").write_bytes(b"")
    with pytest.raises(InputError, match="interrupted.*re-run the same prepare"):
        check_prepared(str(folder))
    (folder / "manifest.json").write_text("{}")
    check_prepared(str(folder))


# ------------------------------------------------------------------ one line instead of a traceback

def test_out_that_is_a_file(capsys, data, tmp_path):
    out = tmp_path / "taken"
    out.write_text("mine")
    refused(capsys, ["prepare", "--data", str(data), "--out", str(out)], str(out), "not a folder",
            roots=[tmp_path])


def test_read_only_output_folder(capsys, data, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    refused(capsys, ["folds", "--data", str(data), "--out", str(ro / "folds.csv")], str(ro), "not writable",
            roots=[tmp_path])
    if os.geteuid() != 0:  # the real thing, where permissions bind (root ignores them)
        monkeypatch.setattr(os, "access", real)
        ro.chmod(0o555)
        try:
            refused(capsys, ["folds", "--data", str(data), "--out", str(ro / "folds.csv")], str(ro),
                    roots=[tmp_path])
        finally:
            ro.chmod(0o755)


def test_submit_checks_the_file_before_credentials(capsys, tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    empty = tmp_path / "sub.csv"
    empty.write_bytes(b"")
    refused(capsys, ["submit", str(empty), "-m", "x", "--sample-submission", str(DEMO / "sample_submission.csv")],
            str(empty), "0 bytes", roots=[tmp_path])


def test_two_prepares_into_one_folder(capsys, data, tmp_path):
    out = tmp_path / "tf"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".prepare.lock").write_text(f"{holder.pid}\n")
        refused(capsys, ["prepare", "--data", str(data), "--out", str(out), "--n-folds", "3"],
                "another `melanoma prepare`", str(holder.pid), roots=[out, data])
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over(tmp_path):
    from melanoma.data.outlock import exclusive

    lock = tmp_path / ".prepare.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")
    with exclusive(lock, str(tmp_path)):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


# ------------------------------------------------------------------ duplicates independent of --size

def test_hashes_and_flags_do_not_depend_on_the_size(tmp_path):
    from melanoma.data.check import hash_images

    paths = [str(p) for p in sorted((DEMO / "jpeg" / "train").glob("*.jpg"))[:12]]
    big = tmp_path / "big.jpg"  # an original larger than any --size, so the draft scale would differ
    Image.open(paths[0]).resize((1200, 1200)).save(big, quality=92)
    paths.append(str(big))
    results = [hash_images(paths, size, 200_000_000, workers=1) for size in (16, 64, 96, 384)]
    assert all(r == results[0] for r in results[1:])


# ------------------------------------------------------------------ degenerate images

def stripes(seed: int, noise: float = 0.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    cols = np.repeat(rng.integers(60, 230, (1, 12, 3)), 10, axis=1).astype(np.float32)  # 120 columns
    img = np.repeat(cols, 90, axis=0) + rng.normal(0, noise, (90, 120, 3))
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def test_check_lists_every_striped_image(capsys, tmp_path):
    shipped = DATA / "striped"  # real striped thumbnails (CC0)
    real = sorted((DEMO / "jpeg" / "train").glob("*.jpg"))[:6]
    root = tmp_path / "data"
    (root / "jpeg" / "train").mkdir(parents=True)
    (root / "jpeg" / "test").mkdir(parents=True)
    striped = []
    real_striped = sorted(shipped.glob("ISIC_000000[0-3].jpg"))
    assert len(real_striped) == 4, shipped
    for i, src in enumerate(real_striped):
        shutil.copyfile(src, root / "jpeg" / "train" / f"STRIPE_{i}.jpg")  # real striped thumbnails
        striped.append(f"STRIPE_{i}")
    for i in range(3):  # and generated ones, with a little noise
        stripes(i, noise=1.5 * i).save(root / "jpeg" / "train" / f"GEN_{i}.jpg", quality=90)
        striped.append(f"GEN_{i}")
    Image.new("RGB", (80, 60), (180, 120, 110)).save(root / "jpeg" / "test" / "FLAT_0.jpg")
    for p in real:
        shutil.copyfile(p, root / "jpeg" / "train" / p.name)
    names = striped + [p.stem for p in real]
    pd.DataFrame({"image_name": names, "patient_id": names, "sex": "male", "age_approx": 50,
                  "anatom_site_general_challenge": "torso", "target": [i % 2 for i in range(len(names))]}
                 ).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_name": ["FLAT_0"], "patient_id": ["T0"], "sex": "female", "age_approx": 40,
                  "anatom_site_general_challenge": ""}).to_csv(root / "test.csv", index=False)
    assert main(["check", "--data", str(root), "--out", str(tmp_path / "report.json"), "--workers", "1"]) == 0
    report = pd.read_json(tmp_path / "report.json", typ="series")["degenerate_images"]
    flagged = {e["image_name"]: e["reason"] for e in report["images"]}
    assert set(flagged) == set(striped) | {"FLAT_0"}
    assert all("stripes" in flagged[n] for n in striped) and "single colour" in flagged["FLAT_0"]
    out = capsys.readouterr().out
    assert all(n in out for n in striped)
