"""`melanoma ablate`: the grid, the folder of a setting, the paired statistics, and a CLI run that reuses runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from melanoma.ablate import grid, paired, parse_vary, seed_interval, setting_cfg, setting_folder
from melanoma.config import Config, apply_overrides
from melanoma.errors import ConfigError
from melanoma.report.evaluate import compare_pair
from melanoma.report.metrics import cluster_codes


def test_parse_vary_and_grid_put_the_base_first():
    varies = parse_vary(["train.head=binary,diagnosis", "train.dropout=0.3,0.5"])
    assert varies == [("train.head", ["binary", "diagnosis"]), ("train.dropout", [0.3, 0.5])]
    base, settings = grid(Config(), varies)
    assert base == (("train.head", "binary"), ("train.dropout", 0.2))  # the base config's values
    assert settings[0] == base and len(settings) == 5  # the base was not in the grid: added
    _, settings = grid(Config(), parse_vary(["train.head=binary,diagnosis"]))
    assert settings == [(("train.head", "binary"),), (("train.head", "diagnosis"),)]
    for bad in (["train.head"], ["seed=1,2"], ["train.head=binary,binary"], []):
        with pytest.raises(ConfigError):
            parse_vary(bad)
    with pytest.raises(ConfigError, match="train.head"):
        grid(Config(), parse_vary(["train.head=binary,softmax"]))  # checked before anything trains
    with pytest.raises(ConfigError, match="unknown config key"):
        grid(Config(), parse_vary(["train.nope=1,2"]))


def test_a_setting_keeps_its_folder_whatever_keys_reach_it(tmp_path):
    cfg = Config()
    one = setting_folder(tmp_path, (("train.head", "binary"),), setting_cfg(cfg, (("train.head", "binary"),)))
    one.mkdir()
    same = (("train.head", "binary"), ("train.dropout", 0.2))
    assert setting_folder(tmp_path, same, setting_cfg(cfg, same)) == one  # the same config: the same run
    other = (("train.head", "binary"), ("train.dropout", 0.5))
    assert setting_folder(tmp_path, other, setting_cfg(cfg, other)) != one
    # the seed is not part of a setting
    assert setting_folder(tmp_path, (), apply_overrides(cfg, {"seed": 7})) == one


def test_paired_difference_matches_compare_and_its_bootstrap():
    rng = np.random.default_rng(0)
    n = 300
    y = (rng.random(n) < 0.3).astype(int)
    names = [f"I{i}" for i in range(n)]
    patients = pd.Series([f"P{i // 3}" for i in range(n)], index=names)

    def oof(noise):
        return pd.DataFrame({"target": y, "pred": y + rng.normal(0, noise, n)},
                            index=pd.Index(names, name="image_name"))

    a, b = {1: oof(0.5)}, {1: oof(1.5)}
    res = paired(a, b, patients, 200, 3, compare_pair)
    order = sorted(names)  # paired joins the runs on image_name, in name order
    ref = compare_pair(a[1].target[order].to_numpy(), a[1].pred[order].to_numpy(), b[1].pred[order].to_numpy(),
                       cluster_codes(patients[order].to_numpy()), 200, 3)
    assert res["diff_vs_base"] == pytest.approx(ref["diff"]) and res["diff_vs_base"] > 0.1
    assert [res["diff_ci_low"], res["diff_ci_high"]] == pytest.approx(ref["ci"])  # the same patient draws
    assert res["p_value"] < 0.05 and res["per_seed"][1]["delong_p"] == pytest.approx(ref["delong"]["p"])
    same = paired(a, a, patients, 200, 3, compare_pair)
    assert same["diff_vs_base"] == 0 and same["p_value"] == 1.0
    two = paired({1: a[1], 2: oof(0.7)}, {1: b[1], 2: oof(1.5)}, patients, 100, 3, compare_pair)
    assert two["diff_vs_base"] == pytest.approx(np.mean([v["diff"] for v in two["per_seed"].values()]))
    mean = seed_interval([0.7, 0.8, 0.9])
    assert mean["mean_auc"] == pytest.approx(0.8) and mean["ci_low"] == pytest.approx(0.8 - 4.303 * 0.1 / 3 ** 0.5,
                                                                                       abs=1e-3)
    assert seed_interval([0.7])["ci_low"] is None
    wide = seed_interval([0.5, 0.9])  # two seeds: t = 12.7 stretches the interval past both ends of an AUC
    assert (wide["ci_low"], wide["ci_high"]) == (0.0, 1.0) and wide["mean_auc"] == pytest.approx(0.7)


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    return subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow  # three tiny trainings in two subprocesses: about 140 s on 2 busy cores
def test_ablate_through_the_cli_reuses_finished_runs(demo_subset, tmp_path):
    base = {"seed": 42, "n_folds": 2, "data": {"patient_id": "per_image"},
            "paths": {"data": str(demo_subset), "runs": str(tmp_path / "runs")},
            "prepare": {"size": 32, "workers": 1},
            "train": {"model": "small_cnn_32", "size": 32, "epochs": 1, "batch_size": 8, "weights": "none",
                      "tensorboard": False, "lr_max_per_image": 1e-3, "warmup_epochs": 0},
            "report": {"bootstrap": 50}}
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(base))
    out = tmp_path / "ablate"
    res = run_cli(["ablate", "--config", str(config), "--vary", "train.head=binary,diagnosis", "--seeds", "1",
                   "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 run(s) trained, 0 reused" in res.stdout
    table = pd.read_csv(out / "ablate.csv")
    assert list(table.setting) == ["train.head=binary", "train.head=diagnosis"]
    assert table.auc_seed42.between(0, 1).all() and table.base.tolist() == [True, False]
    assert np.isfinite(table.diff_vs_base[1]) and 0 <= table.p_value[1] <= 1
    assert "| train.head=diagnosis |" in res.stdout and (out / "ablate.md").is_file()
    folders = sorted((out / "runs").iterdir())
    assert len(folders) == 2 and len(list((out / "tfrecords").iterdir())) == 1  # one prepare, shared folds
    mtimes = {f: (f / "seed42" / "metrics.json").stat().st_mtime_ns for f in folders}
    # one more value (the other class map of the diagnosis head): only that setting trains; the base
    # (binary, winners9) and the diagnosis run, now reached through two --vary keys, are reused
    res = run_cli(["ablate", "--config", str(config), "--vary", "train.head=diagnosis",
                   "--vary", "train.class_map=winners9,isic2017", "--seeds", "1", "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "1 run(s) trained, 2 reused" in res.stdout
    assert {f: (f / "seed42" / "metrics.json").stat().st_mtime_ns for f in folders} == mtimes
    assert len(list((out / "runs").iterdir())) == 3
    result = json.loads((out / "ablate.json").read_text())
    assert [r["setting"] for r in result["rows"]] == [
        "train.head=binary, train.class_map=winners9", "train.head=diagnosis, train.class_map=winners9",
        "train.head=diagnosis, train.class_map=isic2017"]
    assert result["rows"][0]["base"] and result["trained"] == 1 and result["reused"] == 2
    for folder in (out / "runs").iterdir():  # every run was trained on the same folds
        oof = pd.read_csv(folder / "seed42" / "oof.csv")
        folds = pd.read_csv(out / "folds.csv").set_index("image_name").fold
        assert (oof.fold == oof.image_name.map(folds)).all()


def test_ablate_refuses_a_bad_grid_in_one_line_before_writing(tmp_path, capsys):
    from melanoma.cli import main

    out = tmp_path / "ablate"
    assert main(["ablate", "--vary", "train.head=binary,softmax", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "melanoma: error: train.head: expected one of binary, diagnosis, got 'softmax'"]
    assert main(["ablate", "--vary", "train.head=binary", "--seeds", "0", "--out", str(out)]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_the_table_scores_isic2024_runs_by_partial_auc(tmp_path):
    """Runs whose metrics.json says metric: pauc (ISIC 2024, oof.csv keyed by isic_id) are tabled in pAUC."""
    from melanoma.ablate import markdown, table
    from melanoma.scoring import partial_auc

    rng = np.random.default_rng(1)
    n = 400
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    y = (rng.random(n) < 0.1).astype(int)
    pd.DataFrame({"isic_id": ids, "patient_id": [f"IP_{i // 4}" for i in range(n)], "target": y,
                  "fold": np.arange(n) % 2}).to_csv(tmp_path / "folds.csv", index=False)
    runs = {}
    for name, noise in ((("train.epochs", 1),), 0.4), ((("train.epochs", 2),), 1.2):
        run = tmp_path / f"run{noise}"
        run.mkdir()
        pd.DataFrame({"isic_id": ids, "target": y, "pred": 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, noise, n)))),
                      "fold": np.arange(n) % 2}).to_csv(run / "oof.csv", index=False)
        (run / "metrics.json").write_text(json.dumps({"metric": "pauc"}))
        runs[name] = {0: run}
    base = next(iter(runs))
    result = table(Config(), base, runs, tmp_path / "folds.csv")
    oof = pd.read_csv(runs[base][0] / "oof.csv")
    assert result["metric"] == "pauc"
    assert result["rows"][0]["auc_seed0"] == pytest.approx(partial_auc(oof.target, oof.pred), abs=1e-9)
    assert result["rows"][1]["diff_vs_base"] < 0 and result["rows"][1]["per_seed"][0]["delong_p"] is None
    assert markdown({**result, "seeds": [0]}).startswith("| setting | pAUC seed 0 |")
