"""Issue 26: nothing a user points at is overwritten. Every command of the CLI is fed one of its own inputs as its
output (or a folder it did not write) and must refuse with one line, exit 2, every file byte-identical."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.paths import ROOT
from PIL import Image

from melanoma.cli import main
from melanoma.commands import commands as registered

from helpers.runs import refused  # noqa: E402
from helpers.layouts import textured_layout
from helpers.runs import ALL, write_run

PLANS = {name: c.plan for name, c in registered().items() if c.plan is not None}
EXEMPT = {name: c.exempt for name, c in registered().items() if c.exempt is not None}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Inputs of every kind: a data folder, two run folders, TFRecords, an export, images, ground-truth masks,
    kernels/, and a repository root as the working folder."""
    w = tmp_path
    d = textured_layout(w / "data", n_train=12, n_test=2, n_patients=4)
    pd.read_csv(d / "train.csv").assign(fold=lambda t: t.index % 2)[
        ["image_name", "patient_id", "target", "fold"]].to_csv(d / "folds.csv", index=False)
    write_run(w / "run_a"), write_run(w / "run_b", "tabular")
    (w / "tf").mkdir()
    (w / "tf" / "train00-10.tfrec").write_bytes(b"shard")
    (w / "model").mkdir()
    (w / "model" / "model.json").write_text('{"format_version": 1}')
    (w / "images").mkdir()
    (w / "masks").mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (10 * i, 50, 90)).save(w / "images" / f"ISIC_{i:07d}.jpg")
        Image.new("L", (16, 16), 255).save(w / "masks" / f"ISIC_{i:07d}_segmentation.png")
    pd.DataFrame({"path": [str(w / "images" / "ISIC_0000000.jpg")]}).to_csv(w / "images.csv", index=False)
    (w / "kernels").mkdir()
    (w / "kernels" / "notebook.ipy").write_text("# %% [markdown]\n# notebook\n")
    (w / "repo").mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        (w / "repo" / name).write_text("")
    (w / "downloads" / "siim-isic-melanoma-classification").mkdir(parents=True)
    (w / "downloads" / "siim-isic-melanoma-classification" / "train.csv").write_text("mine\n")
    monkeypatch.chdir(w / "repo")
    return w


# (argv with W for the world's root, whether --force must not get past it either)
CASES = {
    "folds": (["folds", "--data", "W/data", "--out", "W/data/train.csv"], True),
    "prepare": (["prepare", "--data", "W/data", "--out", "W/data"], True),
    "check": (["check", "--data", "W/data", "--out", "W/data/train.csv"], True),
    "train": (["train", "--tfrecords", "W/tf", "--out", "W/tf"], True),
    "tabular": (["tabular", "--data", "W/data", "--folds-file", "W/data/folds.csv", "--out", "W/data"], True),
    "blend": (["blend", "--runs", "W/run_a", "W/run_b", "--out", "W/run_a/test_pred.csv"], True),
    "augment-preview": (["augment-preview", "--tfrecords", "W/tf", "--out", "W/tf/train00-10.tfrec"], True),
    "report": (["report", "W/run_a", "--out", "W/run_a"], True),
    "compare": (["compare", "W/run_a", "W/run_b", "--out", "W/run_a/oof.csv"], True),
    "export": (["export", "W/run_a", "--out", "W/run_a"], True),
    "predict": (["predict", "--model", "W/model", "--images", "W/images.csv", "--out", "W/images.csv"], True),
    "run": (["run", "--set", "paths.data=W/data", "--set", "paths.tfrecords=W/data", "--set", "paths.runs=W/runs"],
            True),
    "segment train": (["segment", "train", "--images", "W/images", "--masks", "W/masks", "--out", "W/masks"], True),
    "segment mask": (["segment", "mask", "--images", "W/images", "--out", "W/images"], True),
    "pseudo": (["pseudo", "--runs", "W/run_a", "--out", "W/run_a"], True),
    "synth": (["synth", "--tfrecords", "W/tf", "--out", "W/tf"], True),
    "ablate": (["ablate", "--vary", "train.epochs=1,2", "--set", "paths.data=W/data", "--out", "W/data"], True),
    "kaggle push": (["kaggle", "push", "--dry-run", "--kernels", "W/kernels", "--out", "W/kernels"], True),
    "kaggle wheels": (["kaggle", "wheels", "--owner", "alice", "--out", "W/repo"], True),
    "infer": (["infer", "--bundle", "W/model", "--data", "W/data", "--out", "W/model/model.json"], True),
    "kaggle upload-models": (["kaggle", "upload-models", "W/run_a", "--no-upload", "--out", "W/run_a"], True),
    # No local input: the output is a folder the command did not write (only --force replaces it).
    "kaggle download": (["kaggle", "download", "--csv-only", "--out", "W/downloads"], False),
    "kaggle output": (["kaggle", "output", "alice/melanoma-tpu", "--out", "W/data"], False),
}


def test_every_command_is_planned_or_exempt():
    """A new command fails here until it has a plan beside it in its package's COMMANDS (or is exempt with its
    reason) and a case in CASES."""
    assert set(ALL) == set(PLANS) | set(EXEMPT), set(ALL) ^ (set(PLANS) | set(EXEMPT))
    assert not set(PLANS) & set(EXEMPT)
    assert set(CASES) == set(PLANS)
    for name, p in ALL.items():
        has_force = any("--force" in a.option_strings for a in p._actions)
        assert has_force == (name in PLANS), name


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_command_refuses_its_own_input_as_output(name, world, capsys):
    if name in EXEMPT:
        pytest.skip(f"exempt: {EXEMPT[name]}")
    argv, never = CASES[name]
    argv = [a.replace("W/", f"{world}/") for a in argv]
    line = refused(capsys, argv, roots=[world])
    assert "choose another" in line
    if never:  # an input is never replaced, --force or not
        assert "--force" not in line
        refused(capsys, argv + ["--force"], roots=[world])
    else:
        assert "--force" in line


def test_predict_refuses_an_input_image_as_output(world, capsys):
    image = world / "images" / "ISIC_0000000.jpg"
    for images in (world / "images", world / "images.csv"):
        refused(capsys, ["predict", "--model", str(world / "model"), "--images", str(images), "--out", str(image),
                         "--force"], str(image), roots=[world])


def test_segment_mask_never_replaces_ground_truth_masks(world, capsys):
    argv = ["segment", "mask", "--images", str(world / "images"), "--out", str(world / "masks")]
    assert "--force" in refused(capsys, argv, "masks", roots=[world])
    # into a new folder it writes its marker first: a re-run may replace its own masks
    out = world / "mine"
    assert main(["segment", "mask", "--images", str(world / "images"), "--out", str(out)]) == 0
    assert (out / "masks.json").is_file() and len(list(out.glob("*_segmentation.png"))) == 2
    assert main(["segment", "mask", "--images", str(world / "images"), "--out", str(out)]) == 0


def test_own_outputs_are_replaced_and_force_replaces_others(world, capsys):
    data, out = world / "data", world / "out" / "folds.csv"
    for _ in range(2):  # a re-run replaces its own folds.csv (folds.run.json beside it says so)
        assert main(["folds", "--data", str(data), "--out", str(out), "--n-folds", "2"]) == 0
    assert json.loads((out.parent / "folds.run.json").read_text())["stage"] == "folds"
    # inside the data folder, a new file is fine, and so is the re-run
    for _ in range(2):
        assert main(["folds", "--data", str(data), "--out", str(data / "my-folds.csv"), "--n-folds", "2"]) == 0
    foreign = world / "notes.csv"
    foreign.write_text("my notes\n")
    capsys.readouterr()
    line = refused(capsys, ["folds", "--data", str(data), "--out", str(foreign)], str(foreign), "--force",
                   roots=[world])
    assert "was not written by `melanoma folds`" in line
    assert main(["folds", "--data", str(data), "--out", str(foreign), "--force", "--n-folds", "2"]) == 0
    assert pd.read_csv(foreign).columns.tolist() == ["image_name", "patient_id", "target", "fold"]


def test_check_and_compare_replace_only_their_own_json(world, capsys):
    report = world / "leak.json"
    assert main(["check", "--data", str(world / "data"), "--out", str(report), "--workers", "1"]) == 0
    assert (world / "leak.duplicates.csv").is_file()
    assert main(["check", "--data", str(world / "data"), "--out", str(report), "--workers", "1"]) == 0
    res = world / "cmp.json"
    for _ in range(2):
        assert main(["compare", str(world / "run_a"), str(world / "run_b"), "--out", str(res),
                     "--bootstrap", "20"]) == 0
    capsys.readouterr()
    refused(capsys, ["compare", str(world / "run_a"), str(world / "run_b"), "--out", str(report)], str(report),
            roots=[world])


def test_blend_beside_another_run_is_refused(world, capsys):
    """The submission's sidecars (run.json, config.yaml, blend.json) would replace a train run's own."""
    refused(capsys, ["blend", "--runs", str(world / "run_b"), "--out", str(world / "run_a" / "sub.csv")],
            "run.json", roots=[world])


# ---------------------------------------------------------------- the guard's rules, directly

def test_guard_rules(tmp_path):
    from melanoma.errors import ConfigError
    from melanoma.outputs import Out, guard, run_folder

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x")
    folder = Out(tmp_path / "run", folder=True, own=run_folder("train"), writes=("oof.csv",))
    guard("train", [folder], {"--data": data})  # new folder: fine
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".staging-report-1-abcdefgh").mkdir()
    guard("train", [folder], {"--data": data})  # only our own leftovers: still free
    (tmp_path / "run" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="pass --force"):
        guard("train", [folder], {"--data": data})
    guard("train", [folder], {"--data": data}, force=True)
    (tmp_path / "run" / "run.json").write_text('{"stage": "train", "package": "melanoma"}')
    guard("train", [folder], {"--data": data})  # ours now
    with pytest.raises(ConfigError, match="writes oof.csv there, which is its input"):
        guard("train", [folder], {"--folds-file": tmp_path / "run" / "oof.csv"}, force=True)
    link = tmp_path / "link"
    link.symlink_to(data)
    with pytest.raises(ConfigError, match="is also an input"):  # the same folder under another name
        guard("prepare", [Out(link, folder=True)], {"--data": data}, force=True)
    guard("prepare", [Out("gs://bucket/tf", folder=True)], {"--data": data})  # remote: left to the stage


def test_stale_staging_is_removed_by_the_next_run_of_its_command(tmp_path, caplog):
    import logging
    import subprocess

    from melanoma.files import staged_dir, stale_staging
    from melanoma.kaggle.doctor import staging_leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "runs" / "report"
    out.mkdir(parents=True)
    mine, legacy = out / f".staging-report-{dead.pid}-abcdefgh", out / ".staging-k2j4_x9q"
    others = out / f".staging-export-{dead.pid}-abcdefgh"  # another command's: left alone
    for p in (mine, legacy, others):
        p.mkdir()
        (p / "report.html").write_text("half")
    live = out / ".staging-report-1-abcdefgh"  # pid 1 is alive: a run in progress
    live.mkdir()
    assert set(staging_leftovers([tmp_path / "runs"])) == {mine, legacy, others}
    with caplog.at_level(logging.INFO, logger="melanoma"), staged_dir(out, "report") as stage:
        (stage / "report.html").write_text("new")
    assert not mine.exists() and not legacy.exists() and others.exists() and live.exists()
    assert "removed" in caplog.text and mine.name in caplog.text
    assert (out / "report.html").read_text() == "new" and stale_staging(out) == [others]


def test_doctor_lists_staging_leftovers(tmp_path, capsys):
    (tmp_path / "runs" / "report" / ".staging-qwertyui").mkdir(parents=True)
    assert main(["doctor", "--no-devices", "--set", f"paths.runs={tmp_path / 'runs'}"]) == 0
    assert ".staging-qwertyui" in capsys.readouterr().out


def test_wheels_with_a_python_pip_cannot_serve_leaves_nothing(tmp_path):
    from melanoma.errors import ConfigError, KaggleError
    from melanoma.kaggle.wheels import build_wheels

    root = ROOT
    out = tmp_path / "wheels"

    def pip(cmd):
        Path(cmd[cmd.index("--wheel-dir") + 1] if "--wheel-dir" in cmd else cmd[cmd.index("--dest") + 1],
             "melanoma-0.1.0-py3-none-any.whl").write_bytes(b"w")
        if "download" in cmd:
            raise KaggleError("pip download ... failed: no matching distribution")

    with pytest.raises(KaggleError):
        build_wheels(root, out, "alice", python="2.1", run=pip)
    assert not out.exists()
    with pytest.raises(ConfigError, match="--python 'x3'"):
        build_wheels(root, out, "alice", python="x3", run=pip)
    assert not out.exists()


# ---------------------------------------------------------------- predictions are checked where they are read

@pytest.mark.parametrize("pred, culprits", [
    ((0.2, 7.5, 0.4, -3.0), ("oof.csv, line 3", "pred must be a probability in [0, 1]", "got 7.5 for ISIC_0000001",
                             "2 such row(s)")),
    ((0.2, 0.5, float("nan"), 0.3), ("oof.csv, line 4", "pred must be a finite number, got nan")),
])
def test_impossible_predictions_are_refused_by_every_reader(world, capsys, pred, culprits):
    bad = write_run(world / "bad", pred=pred)
    good = world / "run_a"
    for argv in (["report", str(bad), "--out", str(world / "rep"), "--bootstrap", "10"],
                 ["compare", str(good), str(bad)],
                 ["blend", "--runs", str(good), str(bad), "--out", str(world / "sub" / "s.csv")],
                 ["pseudo", "--runs", str(bad), "--out", str(world / "ps"), "--tfrecords", str(world / "tf")]):
        refused(capsys, argv, "bad/oof.csv", *culprits, roots=[world])
    assert not (world / "rep").exists() and not (world / "sub").exists()


def test_logit_runs_say_so(world):
    from melanoma.data.runs import read_run

    run = write_run(world / "logit", pred=(-2.0, 3.5, 0.1, 9.0))
    (run / "metrics.json").write_text('{"pred_scale": "logit"}')
    oof, _ = read_run(run)
    assert oof["pred"].max() == 9.0


def test_submit_names_the_line_of_an_impossible_target(world, capsys):
    sample = world / "sample.csv"
    pd.DataFrame({"image_name": ["A", "B"], "target": 0}).to_csv(sample, index=False)
    sub = world / "sub.csv"
    pd.DataFrame({"image_name": ["A", "B"], "target": [0.5, 1.5]}).to_csv(sub, index=False)
    refused(capsys, ["submit", str(sub), "-m", "x", "--sample-submission", str(sample)], "sub.csv, line 3",
            "got 1.5", roots=[world])


def test_run_guards_the_outputs_of_its_own_stages_only(world, capsys, monkeypatch):
    """`stages: [train, blend]` reads the TFRecords folder (an input: prepare is not run), so a folder that prepare
    did not write is fine there; with prepare among the stages the same folder is an output and is refused."""
    import os

    import melanoma.run

    for var in ("KERAS_BACKEND", "MELANOMA_BACKEND_REASON", "XLA_FLAGS"):  # use_backend sets them: put them back
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)
    seen = []
    monkeypatch.setattr(melanoma.run, "run_pipeline", lambda cfg: seen.append(cfg.stages) or {"seconds": {}})
    argv = ["run", "--set", f"paths.data={world}/data", "--set", f"paths.tfrecords={world}/tf",
            "--set", f"paths.runs={world}/runs", "--set", f"paths.submission={world}/sub/submission.csv"]
    assert main([*argv, "--set", "stages=[train, blend]"]) == 0, capsys.readouterr().err
    assert seen == [["train", "blend"]]
    line = refused(capsys, argv, f"{world}/tf", "paths.tfrecords", roots=[world])
    assert "was not written by `melanoma run`" in line
