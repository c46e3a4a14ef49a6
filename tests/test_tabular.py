"""The tabular (metadata) stage: leakage-free SMOTE and transforms, missing columns, sklearn API, outputs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import logging  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.base import clone, is_classifier  # noqa: E402

from melanoma import tabular  # noqa: E402
from melanoma.config import Config, TabularConfig  # noqa: E402
from melanoma.data import AGE, ID, SEX, SITE, TARGET, read_test, read_train  # noqa: E402
from melanoma.folds import assign_folds  # noqa: E402
from melanoma.files import write_csv  # noqa: E402

N_FOLDS = 3
SITES = ["torso", "lower extremity", "upper extremity", "head/neck"]
TEST_ONLY_SITES = ["tongue", "palms/soles", "oral/genital"]


def small_cfg(**tabular_kw) -> Config:
    kw = dict(hidden=[16, 8], dropout=0.1, epochs=12, batch_size=16, learning_rate=1e-2)
    kw.update(tabular_kw)
    return Config(seed=7, n_folds=N_FOLDS, tabular=TabularConfig(**kw))


def make_data(root, n=150, n_test=30, seed=0, site=True):
    """Competition-format train.csv/test.csv with a strong age + sex signal, plus folds.csv.

    Every training age is distinct (so a row's features identify it among training rows); test ages lie far
    above the training range and every test row has a site no training row has (so its one-hot site block
    is all zeros, which no training row has: training rows without a site get the 'missing' category).
    """
    rng = np.random.default_rng(seed)
    age = np.round(rng.permutation(np.linspace(20.0, 90.0, n)), 3)
    male = rng.random(n) < 0.5
    logit = 0.15 * (age - 55.0) + 2.5 * male - 4.0  # about 22% positives
    target = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    sex = np.where(male, "male", "female").astype(object)
    sex[rng.random(n) < 0.1] = ""  # some missing sex
    train = pd.DataFrame({
        ID: [f"ISIC_{i:07d}" for i in range(n)],
        "patient_id": [f"IP_{i // 2:05d}" for i in range(n)],  # two images per patient
        SEX: sex,
        AGE: age,
        SITE: [SITES[i % len(SITES)] if i % 7 else "" for i in range(n)],
        TARGET: target,
    })
    test = pd.DataFrame({
        ID: [f"ISIC_{9000000 + i:07d}" for i in range(n_test)],
        "patient_id": [f"IP_T{i:04d}" for i in range(n_test)],
        SEX: ["male", "female", ""] * (n_test // 3) + ["male"] * (n_test % 3),
        AGE: 150.0 + np.arange(n_test),  # far outside the training range
        SITE: [TEST_ONLY_SITES[i % len(TEST_ONLY_SITES)] for i in range(n_test)],
    })
    if not site:
        train = train.drop(columns=[SITE])
        test = test.drop(columns=[SITE])
    root.mkdir(parents=True, exist_ok=True)
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    folds = assign_folds(read_train(root), N_FOLDS, seed)
    write_csv(root / "folds.csv", folds)
    return root / "folds.csv"


def fingerprints(X):
    return [tuple(np.round(np.asarray(row, dtype=np.float64), 6)) for row in np.asarray(X)]


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory):
    """One run_tabular on the signal data, with spies on the pipelines built and on what SMOTE receives."""
    root = tmp_path_factory.mktemp("tabular_signal")
    folds_path = make_data(root / "data")
    pipes, smote_inputs = [], []
    real_build = tabular.build_pipeline
    real_resample = tabular.RecordingSMOTE.fit_resample

    def spy_build(*args, **kwargs):
        pipe = real_build(*args, **kwargs)
        pipes.append(pipe)
        return pipe

    def spy_resample(self, X, y, **params):
        smote_inputs.append((np.array(X, copy=True), np.array(y, copy=True)))
        return real_resample(self, X, y, **params)

    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("melanoma.tabular")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tabular, "build_pipeline", spy_build)
            mp.setattr(tabular.RecordingSMOTE, "fit_resample", spy_resample)
            metrics = tabular.run_tabular(small_cfg(), root / "data", folds_path, root / "out")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    train = read_train(root / "data")
    folds = pd.read_csv(folds_path, dtype={ID: "string"})
    df = train.merge(folds[[ID, "fold"]], on=ID)
    return dict(root=root, out=root / "out", df=df, test=read_test(root / "data"), metrics=metrics,
                pipes=pipes, smote_inputs=smote_inputs, log=[r.getMessage() for r in records])


def test_smote_sees_only_training_rows(signal_run):
    df, test, pipes, seen = signal_run["df"], signal_run["test"], signal_run["pipes"], signal_run["smote_inputs"]
    assert len(pipes) == N_FOLDS and len(seen) == N_FOLDS  # one pipeline and one SMOTE call per fold
    smote_rows = signal_run["metrics"]["smote"]["folds"]
    for k, (pipe, (X_seen, y_seen)) in enumerate(zip(pipes, seen)):
        trn, val = df[df["fold"] != k], df[df["fold"] == k]
        features = pipe.named_steps["features"]
        fp_trn = fingerprints(features.transform(trn[tabular.FEATURES]))
        fp_val = set(fingerprints(features.transform(val[tabular.FEATURES])))
        fp_test = set(fingerprints(features.transform(test[tabular.FEATURES])))
        assert len(set(fp_trn)) == len(trn)  # rows are distinguishable, so the checks below have teeth
        assert not fp_val & set(fp_trn) and not fp_test & set(fp_trn)

        fp_seen = fingerprints(X_seen)
        assert len(X_seen) == len(trn)
        assert sorted(fp_seen) == sorted(fp_trn)  # exactly the training rows, each once
        assert not set(fp_seen) & fp_val
        assert not set(fp_seen) & fp_test
        np.testing.assert_array_equal(np.sort(y_seen), np.sort(trn[TARGET].to_numpy()))

        row = smote_rows[k]
        assert row["fold"] == k and row["applied"]
        assert row["rows_before"] == len(trn)
        assert row["positives_before"] == int(trn[TARGET].sum())
        assert row["rows_after"] > row["rows_before"]
        assert row["rows_after"] - row["rows_before"] == row["positives_after"] - row["positives_before"]
        n_neg = len(trn) - row["positives_before"]
        assert row["positives_after"] == pytest.approx(0.5 * n_neg, abs=1)  # smote_ratio 0.5


def test_transforms_fitted_on_training_rows_only(signal_run):
    df, test, pipes = signal_run["df"], signal_run["test"], signal_run["pipes"]
    assert test[AGE].min() > df[AGE].max()
    for k, pipe in enumerate(pipes):
        trn = df[df["fold"] != k]
        ct = pipe.named_steps["features"]
        age = ct.named_transformers_["age"]
        assert age.named_steps["scale"].data_max_[0] == pytest.approx(trn[AGE].max())
        assert age.named_steps["scale"].data_min_[0] == pytest.approx(trn[AGE].min())
        assert age.named_steps["impute"].statistics_[0] == pytest.approx(trn[AGE].median())
        onehot = ct.named_transformers_["cat"].named_steps["onehot"]
        site_categories = set(onehot.categories_[1])
        assert not site_categories & set(TEST_ONLY_SITES)
        assert site_categories == set(trn[SITE].fillna("missing"))
        # test ages are scaled by the training range (then clipped), so all of them land on 1; a scaler
        # fitted on the test rows would spread them over [0, 1]
        names = list(ct.get_feature_names_out())
        X_test = ct.transform(test[tabular.FEATURES])
        assert (X_test[:, names.index("age__age_approx")] == 1.0).all()
        # unseen sites encode as all zeros and still get finite probabilities
        site_cols = [i for i, n in enumerate(names) if n.startswith(f"cat__{SITE}_")]
        assert (X_test[:, site_cols] == 0).all()
        proba = pipe.predict_proba(test[tabular.FEATURES])
        assert proba.shape == (len(test), 2) and np.isfinite(proba).all()

    pred = pd.read_csv(signal_run["out"] / "test_pred.csv", dtype={ID: "string"})
    assert np.isfinite(pred[TARGET]).all() and len(pred) == len(test)


def test_run_outputs_and_learnable_signal(signal_run):
    out, df, test, metrics = signal_run["out"], signal_run["df"], signal_run["test"], signal_run["metrics"]
    assert metrics["oof_auc"] > 0.8, metrics
    oof = pd.read_csv(out / "oof.csv", dtype={ID: "string"})
    assert list(oof.columns) == [ID, TARGET, "pred", "fold"]
    assert len(oof) == len(df) and set(oof[ID]) == set(df[ID])
    merged = oof.merge(df[[ID, TARGET, "fold"]], on=ID, suffixes=("", "_true"))
    assert (merged["fold"] == merged["fold_true"]).all()
    assert (merged[TARGET] == merged[f"{TARGET}_true"]).all()
    assert oof["pred"].between(0, 1).all()

    pred = pd.read_csv(out / "test_pred.csv", dtype={ID: "string"})
    assert list(pred.columns) == [ID, TARGET]
    assert sorted(pred[ID]) == sorted(test[ID]) and len(pred) == len(test)
    assert pred[TARGET].between(0, 1).all()

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["oof_auc"] == pytest.approx(metrics["oof_auc"])
    assert set(saved["fold_auc"]) == {str(k) for k in range(N_FOLDS)}
    assert saved["model"] == "mlp_smote"
    assert saved["features"] == [SEX, AGE, SITE]
    assert saved["smote"]["enabled"] is True and len(saved["smote"]["folds"]) == N_FOLDS
    assert (out / "config.yaml").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == "tabular" and run["seed"] == 7
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers

    fold_lines = [m for m in signal_run["log"] if m.startswith("tabular fold") and "AUC" in m]
    assert len(fold_lines) == N_FOLDS
    assert sum("OOF AUC" in m for m in signal_run["log"]) == 1


def test_entirely_missing_site_column_end_to_end(tmp_path):
    folds_path = make_data(tmp_path / "data", n=90, n_test=12, seed=3, site=False)
    assert read_train(tmp_path / "data")[SITE].isna().all()
    metrics = tabular.run_tabular(small_cfg(epochs=5), tmp_path / "data", folds_path, tmp_path / "out")
    assert metrics["oof_auc"] is not None and np.isfinite(metrics["oof_auc"])
    for names in metrics["encoded_features"].values():
        site_names = [n for n in names if SITE in n]
        assert site_names == [f"cat__{SITE}_missing"]  # kept as one 'missing' category, not dropped
    pred = pd.read_csv(tmp_path / "out" / "test_pred.csv")
    assert len(pred) == 12 and pred[TARGET].between(0, 1).all()


def test_make_features_keeps_entirely_missing_columns():
    X = pd.DataFrame({
        SEX: pd.array([pd.NA, "male", None, "female"], dtype="string"),
        AGE: [40.0, np.nan, 60.0, 80.0],
        SITE: pd.array([pd.NA] * 4, dtype="string"),  # no site at all
    })
    ct = tabular.make_features().fit(X)
    out = ct.transform(X)
    names = list(ct.get_feature_names_out())
    assert out.shape == (4, len(names)) and np.isfinite(out).all()
    assert [n for n in names if SITE in n] == [f"cat__{SITE}_missing"]
    np.testing.assert_array_equal(out[:, names.index("cat__sex_missing")], [1, 0, 1, 0])  # pd.NA and None
    np.testing.assert_array_equal(out[:, names.index("age__missingindicator_age_approx")], [0, 1, 0, 0])
    np.testing.assert_allclose(out[:, names.index("age__age_approx")], [0, 0.5, 0.5, 1])  # median 60

    # no age at all: the column is kept (not dropped by the imputer) and stays finite
    X[AGE] = np.nan
    ct = tabular.make_features().fit(X)
    out = ct.transform(X)
    names = list(ct.get_feature_names_out())
    assert "age__age_approx" in names and "age__missingindicator_age_approx" in names
    assert np.isfinite(out).all()


def test_smote_plan_adapts_to_the_training_fold():
    cfg = TabularConfig(smote_k=5, smote_ratio=0.5)
    plan = tabular.smote_plan(cfg, np.array([0] * 20 + [1] * 3))
    assert plan["apply"] and plan["k_neighbors"] == 2  # lowered to n_minority - 1
    plan = tabular.smote_plan(cfg, np.array([0] * 20 + [1] * 1))
    assert not plan["apply"] and "minority" in plan["reason"]
    plan = tabular.smote_plan(cfg, np.array([0] * 10 + [1] * 8))  # natural ratio 0.8 > 0.5
    assert not plan["apply"] and "ratio" in plan["reason"]
    assert "smote" not in tabular.build_pipeline(cfg, 0, np.array([0] * 20 + [1])).named_steps
    assert "smote" not in tabular.build_pipeline(TabularConfig(smote=False), 0).named_steps
    pipe = tabular.build_pipeline(cfg, 0, np.array([0] * 20 + [1] * 3))
    assert pipe.named_steps["smote"].k_neighbors == 2 and pipe.named_steps["smote"].sampling_strategy == 0.5


def test_sklearn_api_clone_and_fit():
    clf = tabular.KerasMLPClassifier(hidden=(8,), dropout=0.0, epochs=3, batch_size=8, learning_rate=1e-2, seed=1)
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == clf.get_params()
    assert is_classifier(clf)
    pipe = tabular.build_pipeline(TabularConfig(hidden=[8], epochs=3), seed=1)
    pipe2 = clone(pipe)
    assert [name for name, _ in pipe2.steps] == ["features", "smote", "clf"]
    assert pipe2.named_steps["clf"].get_params() == pipe.named_steps["clf"].get_params()

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.array(["benign", "malignant"] * 20)
    assert clf.fit(X, y) is clf
    assert clf.n_features_in_ == 3 and list(clf.classes_) == ["benign", "malignant"]
    proba = clf.predict_proba(X)
    assert proba.shape == (40, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(X)) <= {"benign", "malignant"}
    assert not hasattr(clone(clf), "model_")  # a clone is unfitted
    with pytest.raises(ValueError):
        clf.predict_proba(X[:, :2])  # wrong number of features
    # same seed, same data -> same model
    np.testing.assert_allclose(clone(clf).fit(X, y).predict_proba(X), proba, rtol=1e-5, atol=1e-6)


def test_failure_leaves_no_half_written_run(tmp_path, monkeypatch):
    from imblearn.pipeline import Pipeline
    from sklearn.dummy import DummyClassifier

    import melanoma.config

    folds_path = make_data(tmp_path / "data", n=60, n_test=6, seed=1)
    # a fast stand-in model: this test is about the writing, not the MLP
    monkeypatch.setattr(tabular, "build_pipeline", lambda tcfg, seed, y=None: Pipeline(
        [("features", tabular.make_features()), ("clf", DummyClassifier(strategy="prior"))]))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(melanoma.config, "save_run_info", boom)
    with pytest.raises(OSError, match="disk full"):
        tabular.run_tabular(small_cfg(smote=False), tmp_path / "data", folds_path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
