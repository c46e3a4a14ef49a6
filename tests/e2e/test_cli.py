"""The command-line contract: the stage commands, the `run` chain, and one-line errors on bad input."""

import json
from pathlib import Path

import pandas as pd
import pytest

from melanoma.cli import build_parser, main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("melanoma: error:")]
    assert len(lines) == 1, err
    return lines[0]


def no_outputs(folder: Path) -> bool:
    """Nothing written (or only empty folders): no shards, manifest, temp or staging files."""
    return not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


# ------------------------------------------------------------------ bad input

def test_missing_column(demo_subset, tmp_path, capsys):
    train = pd.read_csv(demo_subset / "train.csv").drop(columns="target")
    train.to_csv(demo_subset / "train.csv", index=False)
    code, _, err = run_cli(capsys, "prepare", "--data", demo_subset, "--out", tmp_path / "tf", "--size", 32)
    assert code == 2
    assert "train.csv, line 1: missing column 'target'" in error_line(err)
    assert no_outputs(tmp_path / "tf")


def test_listed_image_absent(demo_subset, tmp_path, capsys):
    name = pd.read_csv(demo_subset / "train.csv").image_name[5]
    (demo_subset / "jpeg" / "train" / f"{name}.jpg").unlink()
    code, _, err = run_cli(capsys, "prepare", "--data", demo_subset, "--out", tmp_path / "tf", "--size", 32)
    line = error_line(err)
    assert code == 2 and "train.csv, line 7" in line and f"{name}.jpg is listed but does not exist" in line
    assert no_outputs(tmp_path / "tf")


def test_unreadable_jpeg_leaves_nothing_half_written(demo_subset, tmp_path, capsys):
    names = pd.read_csv(demo_subset / "test.csv").image_name
    (demo_subset / "jpeg" / "test" / f"{names[3]}.jpg").write_bytes(b"this is not a jpeg")
    code, _, err = run_cli(capsys, "prepare", "--data", demo_subset, "--out", tmp_path / "tf", "--size", 32)
    line = error_line(err)
    assert code == 2 and "test.csv, line 5" in line and "cannot read image" in line and names[3] in line
    assert no_outputs(tmp_path / "tf")  # the training shards already written were discarded too


def test_duplicate_image_name(demo_subset, tmp_path, capsys):
    train = pd.read_csv(demo_subset / "train.csv")
    train = pd.concat([train, train.iloc[[2]]], ignore_index=True)
    train.to_csv(demo_subset / "train.csv", index=False)
    code, _, err = run_cli(capsys, "folds", "--data", demo_subset, "--out", tmp_path / "folds.csv")
    line = error_line(err)
    assert code == 2 and f"train.csv, line {len(train) + 1}" in line and "duplicate image_name" in line
    assert "first seen on line 4" in line
    assert not (tmp_path / "folds.csv").exists()


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "folds", "--data", tmp_path, "--set", "train.epoch=3")
    assert code == 2 and "unknown config key train.epoch" in error_line(err)


# ------------------------------------------------------------------ end to end

def check_run_folder(run: Path, n_oof: int, test_ids: list[str]) -> dict:
    oof = pd.read_csv(run / "oof.csv")
    test = pd.read_csv(run / "test_pred.csv")
    # image runs add pred_plain (the prediction without TTA)
    assert list(oof.columns)[:4] == ["image_name", "target", "pred", "fold"] and len(oof) == n_oof
    assert set(oof.columns) <= {"image_name", "target", "pred", "fold", "pred_plain"}
    assert list(test.columns) == ["image_name", "target"] and sorted(test.image_name) == sorted(test_ids)
    assert oof.pred.between(0, 1).all() and test.target.between(0, 1).all()
    assert (run / "config.yaml").is_file() and json.loads((run / "run.json").read_text())["seed"] == 42
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow  # every stage through the CLI: minutes on 2 cores
def test_stage_commands_end_to_end(demo_subset, tmp_path, capsys):
    """The documented stage commands, one after another, on 40 real images: a valid submission."""
    out = tmp_path / "out"
    test_ids = list(pd.read_csv(demo_subset / "test.csv").image_name)
    assert run_cli(capsys, "folds", "--data", demo_subset, "--out", out / "folds.csv", "--n-folds", 2)[0] == 0
    folds = pd.read_csv(out / "folds.csv")
    assert list(folds.columns) == ["image_name", "patient_id", "target", "fold"] and len(folds) == 40

    assert run_cli(capsys, "prepare", "--data", demo_subset, "--out", out / "tf", "--size", 32,
                   "--folds-file", out / "folds.csv")[0] == 0
    manifest = json.loads((out / "tf" / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 40, "test": 10} and manifest["image_size"] == 32
    assert sorted(p.name.split("-")[0] for p in (out / "tf").glob("*.tfrec")) == ["test00", "train00", "train01"]

    code, _, err = run_cli(capsys, "train", "--tfrecords", out / "tf", "--out", out / "image", "--model",
                           "efficientnet_b0", "--size", 32, "--epochs", 1, "--batch-size", 8, "--fold-ids", "0",
                           "--weights", "none", "--tta", 1, "--set", "train.verbose=0")
    assert code == 0, err
    n_fold0 = int((folds.fold == 0).sum())
    metrics = check_run_folder(out / "image", n_fold0, test_ids)
    assert set(metrics["fold_auc"]) == {"0"}
    assert "malignant share of the loss" in err  # the imbalance line is logged

    assert run_cli(capsys, "tabular", "--data", demo_subset, "--folds-file", out / "folds.csv", "--out",
                   out / "tabular", "--set", "tabular.epochs=3")[0] == 0
    check_run_folder(out / "tabular", 40, test_ids)

    code, _, err = run_cli(capsys, "blend", "--runs", out / "image", out / "tabular", "--out",
                           out / "submission.csv", "--sample-submission", demo_subset / "sample_submission.csv")
    assert code == 0, err
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.image_name) == test_ids and sub.target.between(0, 1).all() and sub.target.notna().all()
    blend = json.loads((out / "blend.json").read_text())
    assert blend["n_common_oof"] == n_fold0  # image run covers fold 0 only: the blend says so
    assert abs(sum(r["weight"] for r in blend["runs"]) - 1) < 1e-9


@pytest.mark.slow  # every stage through the CLI: minutes on 2 cores
def test_run_chains_every_stage(demo_subset, tmp_path, capsys):
    out = tmp_path / "run"
    # Four images copied under other names (other patients): `run` lets prepare deal the folds, so each
    # duplicate pair must share a fold.
    names = sorted(p.stem for p in (demo_subset / "jpeg" / "train").glob("*.jpg"))
    pairs = [(names[i], names[i + 20]) for i in range(0, 8, 2)]
    for a, b in pairs:
        (demo_subset / "jpeg" / "train" / f"{b}.jpg").write_bytes((demo_subset / "jpeg" / "train" / f"{a}.jpg").read_bytes())
    labels = demo_subset / "labels.csv"
    pd.read_csv(demo_subset / "test.csv")[["image_name"]].assign(target=[0, 1] * 5).to_csv(labels, index=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
n_folds: 2
paths: {{data: {demo_subset}, tfrecords: {out}/tf, runs: {out}/runs, submission: {out}/sub/submission.csv,
        test_labels: {labels}}}
prepare: {{size: 32}}
train: {{model: simple_cnn, size: 32, epochs: 1, batch_size: 8, weights: none, verbose: 0}}  # the wiring, fast
tabular: {{epochs: 2}}
""")
    code, stdout, err = run_cli(capsys, "run", "--config", config)
    assert code == 0, err
    test_ids = list(pd.read_csv(demo_subset / "test.csv").image_name)
    check_run_folder(out / "runs" / "image", 40, test_ids)
    check_run_folder(out / "runs" / "tabular", 40, test_ids)
    assert list(pd.read_csv(out / "sub" / "submission.csv").image_name) == test_ids
    for folder in (out / "tf", out / "runs" / "image", out / "runs" / "tabular", out / "sub"):
        assert (folder / "config.yaml").is_file() and (folder / "run.json").is_file()
    assert "held-out test AUC" in stdout and "submission" in stdout
    folds = pd.read_csv(out / "runs" / "folds.csv")
    assert folds.equals(pd.read_csv(out / "tf" / "folds.csv")) and (out / "runs" / "folds.run.json").is_file()
    fold_of = dict(zip(folds.image_name, folds.fold))
    assert all(fold_of[a] == fold_of[b] for a, b in pairs)


@pytest.mark.parametrize("argv,dest,value,new", [
    (["folds", "--folds", "3"], "n_folds", 3, "--n-folds"),
    (["prepare", "--folds", "3"], "n_folds", 3, "--n-folds"),
    (["train", "--folds", "0,1"], "fold_ids", [0, 1], "--fold-ids"),
    (["export", "RUN", "--out", "m", "--folds", "1"], "fold_ids", [1], "--fold-ids"),
    (["tabular", "--folds", "f.csv"], "folds_file", Path("f.csv"), "--folds-file"),
])
def test_each_meaning_of_folds_has_its_flag_and_the_old_spelling_still_works(capsys, argv, dest, value, new):
    old = build_parser().parse_args(argv)
    assert getattr(old, dest) == value
    assert f"--folds is deprecated here, use {new}" in capsys.readouterr().err
    renamed = build_parser().parse_args([new if a == "--folds" else a for a in argv])
    assert getattr(renamed, dest) == value and capsys.readouterr().err == ""
