"""Blending runs: join by image_name, weight fitting, submission checks, and the files run_blend writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma.blend import blend_runs, combine, fit_weights, run_blend, to_ranks
from melanoma.data.submission import read_sample_submission, validate_submission
from melanoma.cli import main
from melanoma.config import BlendConfig, Config
from melanoma.errors import ConfigError, InputError, SubmissionError
from melanoma.scoring import auc
from conftest import competition_test_files



def ids(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}_{i:06d}" for i in range(start, start + n)]


def write_run(path: Path, oof_ids, y, pred, test_ids, test_pred, shuffle_seed: int | None = None) -> Path:
    """A run folder as the model stages write it (rows optionally shuffled)."""
    path.mkdir(parents=True, exist_ok=True)
    oof = pd.DataFrame({"image_name": list(oof_ids), "target": np.asarray(y, dtype=int),
                        "pred": np.asarray(pred, dtype=float), "fold": np.arange(len(oof_ids)) % 5})
    test = pd.DataFrame({"image_name": list(test_ids), "target": np.asarray(test_pred, dtype=float)})
    if shuffle_seed is not None:
        oof = oof.sample(frac=1.0, random_state=shuffle_seed)
        test = test.sample(frac=1.0, random_state=shuffle_seed + 1)
    oof.to_csv(path / "oof.csv", index=False)
    test.to_csv(path / "test_pred.csv", index=False)
    scores = np.concatenate([oof["pred"].to_numpy(), test["target"].to_numpy()])
    if ((scores < 0) | (scores > 1)).any():  # scores, not probabilities: the run says so (results.read_predictions)
        (path / "metrics.json").write_text('{"pred_scale": "logit"}')
    return path


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def mixture():
    """y ~ Bernoulli(sigmoid(2a + 2b - 1)); A sees a, B sees b, C is noise."""
    rng = np.random.default_rng(0)
    n, m = 4000, 500
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (rng.random(n) < sigmoid(2 * a + 2 * b - 1)).astype(int)
    ta, tb = rng.normal(size=m), rng.normal(size=m)
    return {
        "oof_ids": ids("TRAIN", n), "test_ids": ids("TEST", m), "y": y,
        "A": (sigmoid(a), sigmoid(ta)),          # calibrated-looking
        "B": (5.0 * b + 3.0, 5.0 * tb + 3.0),    # different scale: ranks make it comparable
        "C": (rng.random(n), rng.random(m)),     # pure noise
    }


def make_runs(tmp_path: Path, mix, names=("A", "B", "C"), shuffle: dict | None = None) -> list[Path]:
    shuffle = shuffle or {}
    return [
        write_run(tmp_path / name, mix["oof_ids"], mix["y"], mix[name][0], mix["test_ids"], mix[name][1],
                  shuffle_seed=shuffle.get(name))
        for name in names
    ]


# --------------------------------------------------------------------------------------------------------
# fit_weights


def test_fit_weights_recovers_known_mixture(mixture):
    y = pd.Series(mixture["y"])
    oofs = [pd.Series(mixture[k][0]) for k in "ABC"]
    w = fit_weights(oofs, y, 0.05)
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert w[2] <= 0.05, w  # noise gets ~0 weight
    assert w[0] >= 0.3 and w[1] >= 0.3, w
    ranks = [s.rank(pct=True) for s in oofs]
    blended = sum(wi * r for wi, r in zip(w, ranks))
    assert auc(y, blended) > max(auc(y, s) for s in oofs) + 0.02


def test_fit_weights_two_runs_prefers_the_better(mixture):
    y = pd.Series(mixture["y"])
    good = pd.Series(mixture["A"][0]) * pd.Series(np.exp(mixture["B"][0] / 5.0))  # monotone in a + b
    noise = pd.Series(mixture["C"][0])
    w = fit_weights([noise, good], y, 0.05)
    assert w[1] >= 0.9 and w.sum() == pytest.approx(1.0), w


def test_fit_weights_single_ties_and_calibration():
    rng = np.random.default_rng(1)
    y = pd.Series((rng.random(300) < 0.3).astype(int))
    p = pd.Series(rng.random(300) + 0.5 * y)
    assert fit_weights([p], y, 0.05).tolist() == [1.0]
    # identical inputs: every weighting ties, so the most equal weights win (deterministic)
    assert fit_weights([p, p], y, 0.05).tolist() == [0.5, 0.5]
    np.testing.assert_allclose(fit_weights([p, p, p], y, 0.05), [1 / 3] * 3)
    # ranks first: a monotone transform of one input (other calibration) does not change the weights
    q = pd.Series(rng.random(300) + 0.3 * y)
    np.testing.assert_array_equal(fit_weights([p, q], y, 0.1), fit_weights([np.exp(5 * p), q / 100], y, 0.1))
    with pytest.raises(ValueError, match="aligned"):
        fit_weights([p, q.set_axis(q.index + 1)], y, 0.1)


# --------------------------------------------------------------------------------------------------------
# blend_runs


def test_blend_joins_by_image_name_not_row_order(tmp_path, mixture):
    plain = make_runs(tmp_path / "plain", mixture)
    shuffled = make_runs(tmp_path / "shuffled", mixture, shuffle={"B": 7, "C": 11})
    sub1, rep1 = blend_runs(plain, None, 0.05)
    sub2, rep2 = blend_runs(shuffled, None, 0.05)
    pd.testing.assert_frame_equal(sub1, sub2)
    assert [r["weight"] for r in rep1["runs"]] == [r["weight"] for r in rep2["runs"]]
    assert rep1["blended_oof_auc"] == rep2["blended_oof_auc"]
    assert sub1["image_name"].tolist() == sorted(mixture["test_ids"])
    # the blend beats every single run and the report has what it promises
    assert rep1["blended_oof_auc"] > max(r["oof_auc"] for r in rep1["runs"])
    assert rep1["runs"][2]["weight"] <= 0.05
    assert rep1["n_common_oof"] == 4000 and rep1["n_test"] == 500 and rep1["method"] == "weighted"
    assert [r["n_oof"] for r in rep1["runs"]] == [4000] * 3
    assert sub1["target"].between(0, 1).all()


def test_partial_oof_overlap_uses_common_ids(tmp_path, caplog):
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.3).astype(int)
    all_ids = ids("TRAIN", 400)
    test_ids = ids("TEST", 50)
    a = write_run(tmp_path / "a", all_ids[:300], y[:300], rng.random(300) + y[:300], test_ids, rng.random(50))
    b = write_run(tmp_path / "b", all_ids[100:], y[100:], rng.random(300) + y[100:], test_ids, rng.random(50))
    with caplog.at_level(logging.WARNING, logger="melanoma.blend"):
        sub, rep = blend_runs([a, b], None, 0.1)
    assert rep["n_common_oof"] == 200
    assert [r["n_oof"] for r in rep["runs"]] == [300, 300]
    assert "200" in caplog.text and "300" in caplog.text
    assert len(sub) == 50


def test_disagreeing_targets_raise(tmp_path):
    rng = np.random.default_rng(3)
    y = (rng.random(100) < 0.3).astype(int)
    oof_ids, test_ids = ids("TRAIN", 100), ids("TEST", 20)
    a = write_run(tmp_path / "run_a", oof_ids, y, rng.random(100), test_ids, rng.random(20))
    y2 = y.copy()
    y2[5] = 1 - y2[5]
    b = write_run(tmp_path / "run_b", oof_ids, y2, rng.random(100), test_ids, rng.random(20))
    with pytest.raises(InputError, match="disagree on the target") as e:
        blend_runs([a, b], None, 0.1)
    assert "run_a" in str(e.value) and "run_b" in str(e.value) and "TRAIN_000005" in str(e.value)


def test_differing_test_ids_raise(tmp_path):
    rng = np.random.default_rng(4)
    y = (rng.random(100) < 0.3).astype(int)
    oof_ids = ids("TRAIN", 100)
    a = write_run(tmp_path / "run_a", oof_ids, y, rng.random(100), ids("TEST", 20), rng.random(20))
    b = write_run(tmp_path / "run_b", oof_ids, y, rng.random(100), ids("TEST", 20, start=1), rng.random(20))
    with pytest.raises(SubmissionError, match="run_b") as e:
        blend_runs([a, b], None, 0.1)
    assert "TEST_000000" in str(e.value)
    c = write_run(tmp_path / "run_c", oof_ids, y, rng.random(100), ids("TEST", 21), rng.random(21))
    with pytest.raises(SubmissionError, match=r"run_c has 1 test id\(s\) not in .*TEST_000020"):
        blend_runs([a, c], None, 0.1)


def test_nan_prediction_in_a_run_is_an_input_error(tmp_path):
    y = np.array([0, 1] * 10)
    pred = np.linspace(0, 1, 20)
    pred[3] = np.nan
    a = write_run(tmp_path / "a", ids("TRAIN", 20), y, pred, ids("TEST", 5), np.ones(5))
    with pytest.raises(InputError, match=r"oof.csv, line 5: pred must be a finite number"):
        blend_runs([a], None, 0.1)


# --------------------------------------------------------------------------------------------------------
# submission checks


@pytest.fixture
def sample():
    return pd.DataFrame({"image_name": ids("TEST", 5), "target": 0})


def good_sub():
    return pd.DataFrame({"image_name": ids("TEST", 5)[::-1], "target": [0.1, 0.0, 1.0, 0.5, 0.9]})


def test_validate_accepts_a_correct_submission(sample):
    validate_submission(good_sub(), sample)  # any row order


@pytest.mark.parametrize("change, message", [
    (lambda s: s.iloc[1:], r"1 of the 5 ids of the sample submission are missing, e.g. 'TEST_00000"),
    (lambda s: pd.concat([s, pd.DataFrame({"image_name": ["OTHER"], "target": [0.5]})]),
     r"1 image_name value\(s\) are not in the sample submission, e.g. 'OTHER'"),
    (lambda s: s.assign(target=[0.1, np.nan, 1.0, 0.5, 0.9]), r"1 target\(s\) are NaN"),
    (lambda s: s.assign(target=[0.1, "abc", 1.0, 0.5, 0.9]), r"not numbers, e.g. 'abc'"),
    (lambda s: s.assign(target=[0.1, np.inf, 1.0, 0.5, 0.9]), r"infinite"),
    (lambda s: pd.concat([s, s.iloc[:1]]), r"1 duplicate image_name value\(s\), e.g. 'TEST_000004'"),
    (lambda s: s.assign(target=[0.1, 1.5, 1.0, -0.2, 0.9]), r"2 target\(s\) are outside \[0, 1\]"),
    (lambda s: s.rename(columns={"target": "pred"}), r"columns must be exactly image_name,target, got image_name,pred"),
    (lambda s: s.assign(extra=1), r"columns must be exactly"),
    (lambda s: s[["target", "image_name"]], r"columns must be exactly"),
])
def test_validate_rejects(sample, change, message):
    with pytest.raises(SubmissionError, match=message) as e:
        validate_submission(change(good_sub()), sample, name="sub.csv")
    assert str(e.value).startswith("sub.csv: ") and "\n" not in str(e.value)


def test_read_sample_submission_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_sample_submission(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_name,prediction\nA,0\n")
    with pytest.raises(InputError, match=r"line 1: missing column 'target'"):
        read_sample_submission(bad)
    bad.write_text("image_name,target\nA,0\nB,0\nA,0\n")
    with pytest.raises(InputError, match=r"line 4: duplicate image_name 'A' \(first seen on line 2\)"):
        read_sample_submission(bad)
    bad.write_text("")
    with pytest.raises(InputError, match="not a readable CSV"):
        read_sample_submission(bad)


def test_competition_sized_sample_submission_validates(tmp_path):
    sample_path, test_path = competition_test_files(tmp_path / "comp")
    sample = read_sample_submission(sample_path)
    assert len(sample) == 10982
    test_ids = pd.read_csv(test_path, dtype={"image_name": "string"})["image_name"].tolist()
    rng = np.random.default_rng(5)
    order = rng.permutation(len(test_ids))
    shuffled = [test_ids[i] for i in order]
    y = (rng.random(300) < 0.2).astype(int)
    oof_ids = ids("ISIC_TRAIN", 300)
    a = write_run(tmp_path / "a", oof_ids, y, rng.random(300) + y, shuffled, rng.random(len(test_ids)))
    b = write_run(tmp_path / "b", oof_ids, y, rng.random(300), test_ids, rng.normal(size=len(test_ids)))
    sub, rep = blend_runs([a, b], sample, 0.05)
    assert sub.columns.tolist() == ["image_name", "target"]
    assert sub["image_name"].tolist() == sample["image_name"].tolist()
    assert sub["target"].notna().all() and sub["target"].between(0, 1).all()
    assert rep["n_test"] == 10982
    validate_submission(sub, sample)


# --------------------------------------------------------------------------------------------------------
# run_blend


def test_run_blend_writes_submission_and_report(tmp_path, mixture, caplog):
    runs = make_runs(tmp_path / "runs", mixture)
    sample_path = tmp_path / "sample_submission.csv"
    sample_ids = list(np.random.default_rng(6).permutation(mixture["test_ids"]))
    pd.DataFrame({"image_name": sample_ids, "target": 0}).to_csv(sample_path, index=False)
    out = tmp_path / "sub" / "submission.csv"
    with caplog.at_level(logging.INFO, logger="melanoma.blend"):
        report = run_blend(Config(), runs, out, sample_path)
    assert sorted(p.name for p in out.parent.iterdir()) == ["blend.json", "config.yaml", "run.json", "submission.csv"]
    sub = pd.read_csv(out)
    assert sub.columns.tolist() == ["image_name", "target"]
    assert sub["image_name"].tolist() == sample_ids
    on_disk = json.loads((out.parent / "blend.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["n_common_oof"] == 4000 and len(on_disk["runs"]) == 3
    assert json.loads((out.parent / "run.json").read_text())["stage"] == "blend"
    assert "blended OOF AUC" in caplog.text and "weight" in caplog.text


def test_run_blend_writes_nothing_when_validation_fails(tmp_path, mixture):
    runs = make_runs(tmp_path / "runs", mixture)
    sample_path = tmp_path / "sample_submission.csv"
    pd.DataFrame({"image_name": mixture["test_ids"] + ["TEST_EXTRA"], "target": 0}).to_csv(sample_path, index=False)
    out = tmp_path / "sub" / "submission.csv"
    with pytest.raises(SubmissionError, match="1 of the 501 ids of the sample submission are missing, e.g. 'TEST_EXTRA'"):
        run_blend(Config(), runs, out, sample_path)
    assert not out.parent.exists()


# --------------------------------------------------------------------------------------------------------
# blend depth: a known mixture, methods, many runs, the image/metadata weight, partial overlap


@pytest.fixture(scope="module")
def known_mixture():
    """target = top 20% of 0.7 a + 0.3 b + noise; run A predicts a, B predicts b, C is noise."""
    rng = np.random.default_rng(10)
    n, m = 4000, 300
    a, b = rng.random(n), rng.random(n)
    z = 0.7 * a + 0.3 * b + rng.normal(scale=0.05, size=n)
    y = (z > np.quantile(z, 0.8)).astype(int)
    return {"oof_ids": ids("TRAIN", n), "test_ids": ids("TEST", m), "y": y,
            "A": (a, rng.random(m)), "B": (b, rng.random(m)), "C": (rng.random(n), rng.random(m))}


def test_weights_recover_a_known_mixture(tmp_path, known_mixture):
    mix = known_mixture
    two = make_runs(tmp_path / "two", mix, names=("A", "B"))
    _, rep = blend_runs(two, None, BlendConfig(method="weighted", step=0.05))
    assert [r["weight"] for r in rep["runs"]] == pytest.approx([0.7, 0.3], abs=0.051)
    assert rep["blended_oof_auc"] >= max(r["oof_auc"] for r in rep["runs"])
    three = make_runs(tmp_path / "three", mix)
    _, rep = blend_runs(three, None, BlendConfig(method="weighted", step=0.05))
    w = [r["weight"] for r in rep["runs"]]
    assert w[0] == pytest.approx(0.7, abs=0.05) and w[1] == pytest.approx(0.3, abs=0.05) and w[2] <= 0.02, w
    assert rep["blended_oof_auc"] >= max(r["oof_auc"] for r in rep["runs"]) + 0.02


def test_rank_and_power_blends(tmp_path, known_mixture):
    runs = make_runs(tmp_path, known_mixture)
    y = known_mixture["y"]
    ranks = [to_ranks(pd.Series(known_mixture[k][0])) for k in "ABC"]
    test_ranks = [to_ranks(pd.Series(known_mixture[k][1])) for k in "ABC"]
    sub, rep = blend_runs(runs, None, BlendConfig(method="rank"))
    assert rep["method"] == "rank" and [r["weight"] for r in rep["runs"]] == pytest.approx([1 / 3] * 3)
    assert rep["blended_oof_auc"] == pytest.approx(auc(y, sum(ranks) / 3))
    np.testing.assert_allclose(sub["target"], sum(test_ranks) / 3)  # test ids are sorted like the fixture's
    sub_p, rep_p = blend_runs(runs, None, BlendConfig(method="power", power=4.0))
    expected = (sum(r**4 for r in test_ranks) / 3) ** 0.25
    np.testing.assert_allclose(sub_p["target"], expected)
    assert rep_p["power"] == 4.0 and rep_p["blended_oof_auc"] == pytest.approx(auc(y, (sum(r**4 for r in ranks) / 3) ** 0.25))
    assert sub_p["target"].between(0, 1).all()
    # p = 1 is the rank average; p = 0 the geometric mean
    sub_1, _ = blend_runs(runs, None, BlendConfig(method="power", power=1.0))
    np.testing.assert_allclose(sub_1["target"], sub["target"])
    geo = combine(test_ranks, np.full(3, 1 / 3), "power", 0.0)
    np.testing.assert_allclose(geo, np.prod(np.column_stack(test_ranks), axis=1) ** (1 / 3))


def test_many_runs_and_bad_settings(tmp_path, known_mixture):
    rng = np.random.default_rng(11)
    mix = dict(known_mixture)
    for k in "DEF":  # more "seeds" of A: a plus noise
        mix[k] = (mix["A"][0] + rng.normal(scale=0.3, size=len(mix["y"])), rng.random(len(mix["test_ids"])))
    _, rep = blend_runs(make_runs(tmp_path, mix, names=tuple("ABCDEF")), None, 0.05)
    assert len(rep["runs"]) == 6 and sum(r["weight"] for r in rep["runs"]) == pytest.approx(1.0)
    assert rep["blended_oof_auc"] >= max(r["oof_auc"] for r in rep["runs"])
    runs = make_runs(tmp_path / "x", known_mixture, names=("A", "B"))
    for bad, msg in ((BlendConfig(method="median"), "blend.method must be one of weighted, rank, power"),
                     (BlendConfig(tabular_weight=1.5), r"blend.tabular_weight must be in \[0, 1\]"),
                     (BlendConfig(step=0.0), r"blend.step must be in \(0, 1\]")):
        with pytest.raises(ConfigError, match=msg):
            blend_runs(runs, None, bad)


def mark_stage(run_dir: Path, stage: str) -> Path:
    (run_dir / "run.json").write_text(json.dumps({"stage": stage}))
    return run_dir


def test_tabular_weight_found_and_fixed(tmp_path, known_mixture, caplog):
    a, b, c = make_runs(tmp_path, known_mixture)
    mark_stage(a, "train"), mark_stage(b, "tabular"), mark_stage(c, "train")
    _, found = blend_runs([a, b, c], None, BlendConfig())
    tab = found["tabular_weight"]
    assert [r["stage"] for r in found["runs"]] == ["train", "tabular", "train"]
    assert tab["fixed"] is None and tab["found"] == pytest.approx(found["runs"][1]["weight"]) == tab["used"]
    assert tab["found"] == pytest.approx(0.3, abs=0.05)
    _, fixed = blend_runs([a, b, c], None, BlendConfig(tabular_weight=0.5))
    w = [r["weight"] for r in fixed["runs"]]
    assert w[1] == pytest.approx(0.5) and w[0] + w[2] == pytest.approx(0.5) and w[0] > w[2]
    assert fixed["tabular_weight"] == {"found": pytest.approx(tab["found"]), "fixed": 0.5, "used": pytest.approx(0.5)}
    # rank average: equal weights within each group
    _, fixed_rank = blend_runs([a, b, c], None, BlendConfig(method="rank", tabular_weight=0.25))
    assert [r["weight"] for r in fixed_rank["runs"]] == pytest.approx([0.375, 0.25, 0.375])
    assert fixed_rank["tabular_weight"]["found"] == pytest.approx(1 / 3)
    # no tabular run: the fixed weight cannot apply, said in the log
    for d in (a, b, c):
        (d / "run.json").unlink()
    with caplog.at_level(logging.WARNING, logger="melanoma.blend"):
        _, none = blend_runs([a, b, c], None, BlendConfig(tabular_weight=0.25))
    assert none["tabular_weight"] is None and "no run is a tabular run" in caplog.text


def test_partial_overlap_records_drops_per_run(tmp_path, caplog):
    rng = np.random.default_rng(12)
    y = (rng.random(500) < 0.3).astype(int)
    all_ids, test_ids = ids("TRAIN", 500), ids("TEST", 40)
    # a: all 500 (external data), b: 400, c: 350 of them (another fold set)
    a = write_run(tmp_path / "a", all_ids, y, rng.random(500) + y, test_ids, rng.random(40))
    b = write_run(tmp_path / "b", all_ids[100:], y[100:], rng.random(400) + y[100:], test_ids, rng.random(40))
    c = write_run(tmp_path / "c", all_ids[:350], y[:350], rng.random(350) + y[:350], test_ids, rng.random(40))
    with caplog.at_level(logging.WARNING, logger="melanoma.blend"):
        _, rep = blend_runs([a, b, c], None, BlendConfig(method="rank"))
    assert rep["n_common_oof"] == 250
    assert [(r["n_oof"], r["n_dropped"]) for r in rep["runs"]] == [(500, 250), (400, 150), (350, 100)]
    assert "only 250 OOF ids are common" in caplog.text and "250 of 500" in caplog.text and "100 of 350" in caplog.text


def test_cli_blend_methods_and_report(tmp_path, known_mixture, capsys):
    a, b, c = make_runs(tmp_path / "runs", known_mixture)
    mark_stage(b, "tabular")
    out = tmp_path / "sub" / "submission.csv"
    code = main(["blend", "--runs", str(a), str(b), str(c), "--out", str(out), "--method", "power",
                 "--power", "3", "--tabular-weight", "0.25"])
    assert code == 0, capsys.readouterr().err
    rep = json.loads((out.parent / "blend.json").read_text())
    assert rep["method"] == "power" and rep["power"] == 3.0 and rep["tabular_weight"]["used"] == pytest.approx(0.25)
    assert all({"oof_auc", "weight", "n_oof", "n_dropped", "stage"} <= set(r) for r in rep["runs"])
    assert rep["blended_oof_auc"] is not None and len(pd.read_csv(out)) == 300
    code = main(["blend", "--runs", str(a), "--out", str(out), "--tabular-weight", "2"])
    assert code == 2 and "blend.tabular_weight: expected a number >= 0 and <= 1, got 2" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# submission checks against a competition-sized test set (10,982 ids)


@pytest.fixture(scope="module")
def real_sample(tmp_path_factory):
    sample_path, test_path = competition_test_files(tmp_path_factory.mktemp("comp"))
    sample = read_sample_submission(sample_path)
    test_ids = pd.read_csv(test_path, dtype={"image_name": "string"})["image_name"]
    assert len(sample) == 10982 and set(sample["image_name"]) == set(test_ids)
    return sample


def real_sub(sample):
    rng = np.random.default_rng(13)
    return pd.DataFrame({"image_name": sample["image_name"].astype(str), "target": rng.random(len(sample))})


@pytest.mark.parametrize("change, message", [
    (lambda s: s.drop(index=17), r"1 of the 10982 ids of the sample submission are missing, e.g. 'ISIC_"),
    (lambda s: pd.concat([s, s.iloc[[5]]]), r"1 duplicate image_name value\(s\), e.g. 'ISIC_"),
    (lambda s: s.assign(target=s["target"].where(s.index != 3)), r"1 target\(s\) are NaN/missing, e.g. for 'ISIC_"),
    (lambda s: s.assign(target=s["target"].where(s.index != 8, 1.2)), r"1 target\(s\) are outside \[0, 1\], e.g. 1.2"),
    (lambda s: s.assign(target=s["target"].where(s.index != 8, -0.1)), r"outside \[0, 1\]"),
    (lambda s: s.assign(fold=0), r"columns must be exactly image_name,target, got image_name,target,fold"),
    (lambda s: pd.concat([s, pd.DataFrame({"image_name": ["ISIC_9999999"], "target": [0.5]})]),
     r"1 image_name value\(s\) are not in the sample submission, e.g. 'ISIC_9999999'"),
])
def test_real_test_set_submission_checks(real_sample, change, message):
    validate_submission(real_sub(real_sample), real_sample)  # the unchanged file passes
    with pytest.raises(SubmissionError, match=message) as e:
        validate_submission(change(real_sub(real_sample)), real_sample, name="submission.csv")
    assert "\n" not in str(e.value) and str(e.value).startswith("submission.csv: ")
