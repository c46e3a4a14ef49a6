"""The tabular stage on ISIC 2024 (melanoma.tabular.tbp, boosters, image_runs) on a generated dozen patients:
never a train-only column, negatives thinned only inside training folds, pAUC as the headline, image runs as
features (better pAUC when they carry signal; refused in one line when their folds or ids disagree)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from helpers.isic2024 import make_small_set, write_image_run
from melanoma.config import Config, TabularConfig
from melanoma.data.competition import ISIC2024
from melanoma.errors import ConfigError, InputError
from melanoma.scoring import partial_auc
from melanoma.tabular import boosters, tbp
from melanoma.tabular.isic2024 import RAW_NUMERIC
from melanoma.tabular.stage import run_tabular

# Small trees and few rounds: a dozen patients, about 15 malignant tiles.
FAST = dict(model="lgbm", seeds=2, lgbm_min_child_samples=5, lgbm_num_leaves=4, lgbm_learning_rate=0.1,
            lgbm_max_rounds=100, pauc_patience=10, negative_ratio=4)


def cfg(**kw) -> Config:
    return Config(tabular=TabularConfig(**{**FAST, **kw}))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("isic2024")
    data, folds = make_small_set(root)
    return root, data, folds


@pytest.fixture(scope="module")
def image_run(small):
    root, data, folds = small
    return write_image_run(root / "image", folds, data, signal=0.6)


@pytest.fixture(scope="module")
def tabular_alone(small):
    root, data, folds = small
    out = root / "tab"
    return out, run_tabular(cfg(), data, folds, out)


def test_feature_table_holds_every_measurement_and_no_train_only_column(small):
    _, data, folds = small
    df, test = tbp.read_tables(cfg(), ISIC2024, data, folds)
    assert set(ISIC2024.train_only) - {"target"} <= set(df.columns)  # the file has them: they must stay out
    X, Xt, _ = tbp.feature_tables(df, test, cfg().tabular, ISIC2024, folds)
    banned = set(ISIC2024.train_only)
    assert not [c for c in X.columns if c in banned or any(c.startswith(b + "_") for b in banned)]
    assert set(RAW_NUMERIC) <= set(X.columns) and list(X.columns) == list(Xt.columns)
    assert {"tbp_lv_areaMM2_pz", "tbp_lv_areaMM2_prank", "count_per_patient", "lesion_size_ratio"} <= set(X.columns)
    assert X.index.tolist() == df["image_name"].tolist()  # rows keyed by id
    # Nothing depends on them: scrambled labels, diagnoses and lesion ids give the same table.
    rng = np.random.default_rng(0)
    scrambled = df.copy()
    for col in banned:
        scrambled[col] = rng.permutation(scrambled[col].to_numpy())
    X2, _, _ = tbp.feature_tables(scrambled, test, cfg().tabular, ISIC2024, folds)
    pd.testing.assert_frame_equal(X, X2)


def test_run_is_keyed_by_isic_id_and_headed_by_pauc(small, tabular_alone):
    _, data, folds = small
    out, metrics = tabular_alone
    oof = pd.read_csv(out / "oof.csv")
    assert list(oof.columns) == ["isic_id", "target", "pred", "fold"]
    assert list(pd.read_csv(out / "test_pred.csv").columns) == ["isic_id", "target"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metric"] == "pauc" and saved["oof_pauc"] == pytest.approx(partial_auc(oof.target, oof.pred))
    assert 0.0 <= saved["oof_pauc"] <= 0.2 and "oof_auc" in saved
    assert saved["model"] == "lgbm" and saved["seeds"] == 2 and saved["negative_ratio"] == 4
    assert set(saved["fold_pauc"]) == {str(k) for k in range(5)}


def test_negatives_are_thinned_only_inside_the_training_folds(small, monkeypatch, tmp_path):
    """Every training call sees rows of the other folds only, all positives and 4 negatives per positive;
    every training tile is predicted once, out of fold."""
    _, data, folds_csv = small
    folds = pd.read_csv(folds_csv).set_index("isic_id")["fold"]
    seen = []
    train, predict = boosters.LIBRARIES["lgbm"]

    def recording(s, X, y, rounds, seed, valid, score):
        seen.append((seed, list(X.index), np.asarray(y), None if valid is None else list(valid[0].index)))
        return train(s, X, y, rounds, seed, valid, score)

    monkeypatch.setitem(boosters.LIBRARIES, "lgbm", (recording, predict))
    run_tabular(cfg(seeds=1), data, folds_csv, tmp_path / "tab")
    assert len(seen) >= 5
    for seed, rows, y, held_out in seen:
        k = seed - Config().seed  # one seed: the fold's model has seed cfg.seed + k
        assert not (folds[rows] == k).any()
        assert (y == 0).sum() == 4 * (y == 1).sum() > 0
        if held_out is not None:  # the early-stopping patients: training rows too, never thinned, never fitted on
            assert not (folds[held_out] == k).any() and not set(held_out) & set(rows)
    oof = pd.read_csv(tmp_path / "tab" / "oof.csv").set_index("isic_id")
    assert sorted(oof.index) == sorted(folds.index) and (oof["fold"] == folds[oof.index]).all()


def test_undersample_and_the_estimator_api():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(5, int), np.zeros(95, int)]
    keep = boosters.undersample(y, 3, rng)
    assert (y[keep] == 1).sum() == 5 and (y[keep] == 0).sum() == 15 and (np.diff(keep) > 0).all()
    assert len(boosters.undersample(y, 0, rng)) == 100 and len(boosters.undersample(y, 50, rng)) == 100
    X = pd.DataFrame({"a": rng.normal(size=100) + 2 * y, "b": pd.Categorical(rng.choice(["x", "y"], 100))})
    est = boosters.SeededBoosters(seeds=2, negative_ratio=3, min_child_samples=2, num_leaves=3, max_rounds=20)
    assert est.fit(X, y) is est and len(est.models_) == 2 and est.rows_kept_ == [20, 20]
    assert est.predict_proba(X).shape == (100, 2) and clone(est).get_params() == est.get_params()
    assert not hasattr(clone(est), "models_")


@pytest.mark.parametrize("name", ["hgb", "xgboost", "catboost"])
def test_every_library_learns_with_categories_and_missing_values(name):
    pytest.importorskip(boosters.PACKAGES[name])  # xgboost and catboost are options: tested where installed
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30, int), np.zeros(270, int)]
    X = pd.DataFrame({"a": np.where(rng.random(300) < 0.1, np.nan, rng.normal(size=300) + 1.5 * y),
                      "site": pd.Categorical(np.where(rng.random(300) < 0.1, None, rng.choice(["x", "y", "z"], 300)),
                                             categories=["x", "y", "z"])}).astype({"a": "float32"})
    est = boosters.SeededBoosters(library=name, seeds=2, negative_ratio=3, min_child_samples=3, num_leaves=4,
                                  learning_rate=0.1, max_rounds=50, early_stopping_rounds=5, seed=3)
    groups = np.arange(300) // 3
    p = est.fit(X, y, groups=groups).predict_proba(X)[:, 1]
    assert est.rows_kept_ == [120, 120] and all(1 <= r <= 50 for r in est.rounds_)
    assert partial_auc(y, p) > 0.06 and np.isfinite(p).all()  # a random ranking: about 0.02


def test_image_runs_add_their_signal(small, image_run, tabular_alone, tmp_path):
    _, data, folds = small
    alone = tabular_alone[1]["oof_pauc"]
    with_image = run_tabular(cfg(image_runs=[str(image_run)]), data, folds, tmp_path / "tab")
    assert with_image["oof_pauc"] > alone + 0.02, (with_image["oof_pauc"], alone)
    assert {"image_run0", "image_run0_pz", "image_run0_prank"} <= set(with_image["features"])
    assert with_image["image_runs"][0]["path"] == str(image_run)


def _edited_run(image_run, tmp_path, edit):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("test_pred.csv", "metrics.json", "run.json"):
        (bad / name).write_bytes((image_run / name).read_bytes())
    edit(pd.read_csv(image_run / "oof.csv")).to_csv(bad / "oof.csv", index=False)
    return bad


@pytest.mark.parametrize("edit, says", [
    (lambda o: o.assign(fold=np.where(o.index == 3, (o.fold + 1) % 5, o.fold)), "line 5: its fold for"),
    (lambda o: o.drop(index=[7]), "lacks 1 of the"),
])
def test_image_runs_with_other_folds_or_missing_ids_are_refused(small, image_run, tmp_path, edit, says):
    _, data, folds = small
    bad = _edited_run(image_run, tmp_path, edit)
    with pytest.raises(InputError) as e:
        run_tabular(cfg(image_runs=[str(bad)]), data, folds, tmp_path / "tab")
    message = str(e.value)
    assert "\n" not in message and str(bad / "oof.csv") in message and says in message
    assert not (tmp_path / "tab").exists()


def test_model_choices_are_checked_per_competition(small, tmp_path):
    _, data, folds = small
    with pytest.raises(ConfigError, match="siim2020 metadata model"):
        run_tabular(cfg(model="logreg"), data, folds, tmp_path / "a")
    with pytest.raises(ConfigError, match="none of logreg"):
        run_tabular(cfg(model="auto", auto_models=["logreg"]), data, folds, tmp_path / "b")
    assert tbp.model_names(dataclasses.replace(cfg().tabular, model="auto")) == ["lgbm", "hgb"]
    for name in ("xgboost", "catboost"):
        if not boosters.installed(name):
            with pytest.raises(ConfigError, match=f"needs the {name} package") as e:
                run_tabular(cfg(model=name), data, folds, tmp_path / name)
            assert "\n" not in str(e.value)
    assert not any((tmp_path / n).exists() for n in ("a", "b", "xgboost", "catboost"))


def test_siim2020_refuses_the_isic2024_settings(demo_subset, tmp_path):
    from melanoma.data.folds import run_folds

    run_folds(Config(n_folds=3), demo_subset, tmp_path / "folds.csv")
    for kw in (dict(seeds=3), dict(negative_ratio=10), dict(model="xgboost")):
        with pytest.raises(ConfigError, match="isic2024"):
            run_tabular(Config(tabular=TabularConfig(**kw)), demo_subset, tmp_path / "folds.csv", tmp_path / "t")
