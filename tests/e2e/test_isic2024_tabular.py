"""ISIC 2024 from the command line, after the image model: folds -> tabular --image-runs -> blend -> compare on a
generated dozen patients, ending in an isic_id,target submission that `melanoma submit`'s check accepts; an
image run on other folds refused in one line."""

from __future__ import annotations

import json

import pandas as pd

from helpers.isic2024 import demo_script, write_image_run
from melanoma.cli import main
from melanoma.data.submission import check_submission_file

SETTINGS = ["--set", "tabular.seeds=1", "--set", "tabular.negative_ratio=4", "--set", "tabular.lgbm_min_child_samples=5",
            "--set", "tabular.lgbm_max_rounds=60", "--set", "tabular.pauc_patience=10"]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tabular_on_image_runs_then_blend_to_an_isic_id_submission(tmp_path, capsys):
    data, runs = tmp_path / "data", tmp_path / "runs"
    demo_script().make_demo(data, seed=8, patients=12, tiles_per_patient=12, test_patients=2, malignant_share=0.1)
    assert cli(capsys, "folds", "--data", data, "--out", runs / "folds.csv")[0] == 0
    image = write_image_run(runs / "image", runs / "folds.csv", data)
    code, _, err = cli(capsys, "tabular", "--data", data, "--folds-file", runs / "folds.csv", "--out", runs / "tabular",
                       "--model", "lgbm", "--image-runs", image, *SETTINGS)
    assert code == 0, err
    metrics = json.loads((runs / "tabular" / "metrics.json").read_text())
    assert metrics["metric"] == "pauc" and metrics["image_runs"][0]["column"] == "image_run0"
    assert pd.read_csv(runs / "tabular" / "oof.csv").columns[0] == "isic_id"

    sub = tmp_path / "sub" / "submission.csv"
    code, _, err = cli(capsys, "blend", "--runs", image, runs / "tabular", "--out", sub,
                       "--sample-submission", data / "sample_submission.csv")
    assert code == 0, err
    assert pd.read_csv(sub).columns.tolist() == ["isic_id", "target"]
    assert check_submission_file(sub, data / "sample_submission.csv") == len(pd.read_csv(data / "sample_submission.csv"))

    from melanoma.run.pipeline import test_auc  # the run summary's held-out score: isic_id on both sides

    assert 0.0 <= test_auc(sub, data / "test_labels.csv") <= 1.0

    code, out, err = cli(capsys, "compare", runs / "tabular", image, "--data", data, "--bootstrap", "50")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"A {runs / 'tabular'}: OOF pAUC ")

    # An image run dealt on other folds would leak: refused in one line, nothing written.
    oof = pd.read_csv(image / "oof.csv")
    oof.assign(fold=(oof["fold"] + 1) % 5).to_csv(image / "oof.csv", index=False)
    code, _, err = cli(capsys, "tabular", "--data", data, "--folds-file", runs / "folds.csv", "--out",
                       tmp_path / "leaky", "--model", "lgbm", "--image-runs", image, *SETTINGS)
    lines = [line for line in err.splitlines() if line.startswith("melanoma: error:")]
    assert code == 2 and len(lines) == 1 and "line 2: its fold for" in lines[0] and "folds.csv" in lines[0], err
    assert not (tmp_path / "leaky").exists()


def test_run_stacks_on_the_image_run_it_trains_and_tabular_never_writes_into_one(tmp_path, capsys, monkeypatch):
    """`melanoma run` with tabular.image_runs naming its own image run: an output of its train stage, not an input
    the guard would refuse; `tabular --out` into an image run it reads is refused in one line."""
    import os

    import melanoma.run

    for var in ("KERAS_BACKEND", "MELANOMA_BACKEND_REASON", "XLA_FLAGS"):  # use_backend sets them: put them back
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)
    seen = []
    monkeypatch.setattr(melanoma.run, "run_pipeline", lambda cfg: seen.append(cfg.tabular.image_runs) or {"seconds": {}})
    runs = tmp_path / "runs"
    code, _, err = cli(capsys, "run", "--set", f"paths.data={tmp_path}/data", "--set", f"paths.tfrecords={tmp_path}/tf",
                       "--set", f"paths.runs={runs}", "--set", f"paths.submission={tmp_path}/sub/submission.csv",
                       "--set", f"tabular.image_runs=[{runs}/image]")
    assert code == 0, err
    assert seen == [[f"{runs}/image"]]
    (runs / "image").mkdir(parents=True)
    code, _, err = cli(capsys, "tabular", "--data", tmp_path / "data", "--folds-file", runs / "folds.csv",
                       "--out", runs / "image", "--image-runs", runs / "image")
    lines = [line for line in err.splitlines() if line.startswith("melanoma: error:")]
    assert code == 2 and len(lines) == 1 and "is also an input" in lines[0], err
