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
from melanoma.data.schema import AGE, ID, SEX, SITE, TARGET, read_test, read_train  # noqa: E402
from melanoma.data.folds import assign_folds  # noqa: E402
from melanoma.files import write_csv  # noqa: E402

N_FOLDS = 3
SITES = ["torso", "lower extremity", "upper extremity", "head/neck"]
TEST_ONLY_SITES = ["palms/soles", "oral/genital"]


def small_cfg(**tabular_kw) -> Config:
    kw = dict(model="mlp_smote", hidden=[16, 8], dropout=0.1, epochs=12, batch_size=16, learning_rate=1e-2)
    kw.update(tabular_kw)
    return Config(seed=7, n_folds=N_FOLDS, tabular=TabularConfig(**kw))


def make_data(root, n=150, n_test=30, seed=0, site=True):
    """Competition-format train.csv/test.csv with a strong age + sex signal, plus folds.csv.

    Every training age is distinct (so a row's features identify it among training rows); test ages lie far
    above the training range and every test row has a site no training row has (so its one-hot site block
    is all zeros, which no training row has: training rows without a site get the 'missing' category).
    Test patients have three images each and reuse the ids of training patients (who have two), so a test
    patient's context built from anything but test rows would show.
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
        "patient_id": [f"IP_{i // 3:05d}" for i in range(n_test)],  # ids training patients also have
        SEX: ["male", "female", ""] * (n_test // 3) + ["male"] * (n_test % 3),
        AGE: 100.0 + np.arange(n_test) % 21,  # outside the training range (ages are at most 120)
        SITE: [TEST_ONLY_SITES[i % len(TEST_ONLY_SITES)] for i in range(n_test)],
    })
    if not site:  # the column stays (a missing one is an error), every cell empty
        train[SITE] = ""
        test[SITE] = ""
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
    pipes, smote_inputs, context_inputs = [], [], []
    real_build = tabular.build_pipeline
    real_resample = tabular.RecordingSMOTE.fit_resample
    real_context = tabular.patient_context

    def spy_build(*args, **kwargs):
        pipe = real_build(*args, **kwargs)
        pipes.append(pipe)
        return pipe

    def spy_resample(self, X, y, **params):
        smote_inputs.append((np.array(X, copy=True), np.array(y, copy=True)))
        return real_resample(self, X, y, **params)

    def spy_context(X):
        context_inputs.append(X.copy())
        return real_context(X)

    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("melanoma.tabular")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tabular.models, "build_pipeline", spy_build)
            mp.setattr(tabular.RecordingSMOTE, "fit_resample", spy_resample)
            mp.setattr(tabular.features, "patient_context", spy_context)
            metrics = tabular.run_tabular(small_cfg(), root / "data", folds_path, root / "out")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    train = read_train(root / "data")
    folds = pd.read_csv(folds_path, dtype={ID: "string"})
    df = train.merge(folds[[ID, "fold"]], on=ID)
    return dict(root=root, out=root / "out", df=df, test=read_test(root / "data"), metrics=metrics,
                pipes=pipes, smote_inputs=smote_inputs, context_inputs=context_inputs,
                log=[r.getMessage() for r in records])


def test_smote_sees_only_training_rows(signal_run):
    df, test, pipes, seen = signal_run["df"], signal_run["test"], signal_run["pipes"], signal_run["smote_inputs"]
    assert len(pipes) == N_FOLDS and len(seen) == N_FOLDS  # one pipeline and one SMOTE call per fold
    smote_rows = signal_run["metrics"]["smote"]["folds"]
    for k, (pipe, (X_seen, y_seen)) in enumerate(zip(pipes, seen)):
        trn, val = df[df["fold"] != k], df[df["fold"] == k]
        features = pipe.named_steps["features"]
        fp_trn = fingerprints(features.transform(trn[tabular.FEATURE_COLUMNS]))
        fp_val = set(fingerprints(features.transform(val[tabular.FEATURE_COLUMNS])))
        fp_test = set(fingerprints(features.transform(test[tabular.FEATURE_COLUMNS])))
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
        X_test = ct.transform(test[tabular.FEATURE_COLUMNS])
        assert (X_test[:, names.index("age__age_approx")] == 1.0).all()
        # unseen sites encode as all zeros and still get finite probabilities
        site_cols = [i for i, n in enumerate(names) if n.startswith(f"cat__{SITE}_")]
        assert (X_test[:, site_cols] == 0).all()
        proba = pipe.predict_proba(test[tabular.FEATURE_COLUMNS])
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


@pytest.mark.slow  # the Keras MLP's fold fits: ~6 s of CPU; logreg and gbm cover the missing column in the fast suite
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
    monkeypatch.setattr(tabular.models, "build_pipeline", lambda tcfg, seed, y=None: Pipeline(
        [("features", tabular.make_features()), ("clf", DummyClassifier(strategy="prior"))]))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(melanoma.config, "save_run_info", boom)
    with pytest.raises(OSError, match="disk full"):
        tabular.run_tabular(small_cfg(smote=False), tmp_path / "data", folds_path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------------------------- issue 5:
# several models, patient-context features


def test_patient_context_of_test_rows_comes_from_test_rows_only(signal_run):
    df, test, pipes = signal_run["df"], signal_run["test"], signal_run["pipes"]
    assert set(test["patient_id"]) <= set(df["patient_id"])  # test patients reuse training patients' ids
    # every frame the context was computed on is all training rows or all test rows, never a mix
    calls = signal_run["context_inputs"]
    assert calls
    for X in calls:
        is_test = X[AGE].to_numpy() >= 150.0
        assert is_test.all() or not is_test.any()
    # a test patient has 3 test images (2 training images under the same id would make 5)
    feats = pd.read_csv(signal_run["out"] / "features.csv", dtype={ID: "string", "fold": "string"})
    feats_test = feats[feats["fold"] == "test"].set_index(ID).loc[test[ID]]
    np.testing.assert_array_equal(feats_test["patient_n_images"], [3] * len(test))
    expected = tabular.patient_context(test)
    for col in tabular.CONTEXT:
        np.testing.assert_allclose(feats_test[col].to_numpy(), expected[col].to_numpy())
    for k, pipe in enumerate(pipes):
        trn = df[df["fold"] != k]
        branch = pipe.named_steps["features"].named_transformers_["context"]
        ctx_trn = tabular.patient_context(trn[tabular.FEATURE_COLUMNS]).to_numpy()
        np.testing.assert_allclose(branch.named_steps["impute"].statistics_, np.nanmedian(ctx_trn, axis=0))
        np.testing.assert_allclose(branch.named_steps["scale"].data_max_, np.nanmax(ctx_trn, axis=0))
        np.testing.assert_allclose(branch.named_steps["scale"].data_min_, np.nanmin(ctx_trn, axis=0))
        # the fitted branch turns the test rows' own context into the model's inputs
        names = list(pipe.named_steps["features"].get_feature_names_out())
        cols = [names.index(f"context__{c}") for c in tabular.CONTEXT]
        X_test = pipe.named_steps["features"].transform(test[tabular.FEATURE_COLUMNS])
        np.testing.assert_allclose(X_test[:, cols], branch.named_steps["scale"].transform(
            branch.named_steps["impute"].transform(expected.to_numpy())))


def test_patient_context_hand_made_example():
    X = pd.DataFrame({
        "patient_id": pd.array(["P1", "P2", "P1", "P1", "P1", pd.NA], dtype="string"),
        AGE: [40.0, 30.0, 50.0, np.nan, 60.0, 70.0],
        SITE: pd.array(["torso", pd.NA, "torso", "torso", "head/neck", "torso"], dtype="string"),
    }, index=[10, 3, 7, 1, 0, 99])  # any index, any order: rows are grouped by id, not by position
    ctx = tabular.patient_context(X)
    assert list(ctx.columns) == tabular.CONTEXT and len(ctx) == 6
    nan = np.nan
    expected = {
        #                        P1 40  P2 30  P1 50  P1 NaN  P1 60  own 70 (no id: its own patient)
        "patient_n_images": [4, 1, 4, 4, 4, 1],
        "patient_age_min": [40, 30, 40, 40, 40, 70],
        "patient_age_max": [60, 30, 60, 60, 60, 70],
        "patient_age_rank": [1 / 3, 1, 2 / 3, nan, 1, 1],
        "age_minus_patient_mean": [-10, 0, 0, nan, 10, 0],
        "patient_site_share": [3 / 4, 1, 3 / 4, 3 / 4, 1 / 4, 1],
    }
    for col, values in expected.items():
        np.testing.assert_allclose(ctx[col].to_numpy(), values, err_msg=col)
    # the same rows in another order give the same features per row
    perm = [5, 2, 0, 4, 1, 3]
    np.testing.assert_allclose(tabular.patient_context(X.iloc[perm]).to_numpy(), ctx.to_numpy()[perm])
    # no patient_id column at all (and read_train's one patient per image) both mean one-image patients
    for Y in (X.drop(columns=["patient_id"]), X.assign(patient_id=[f"IMG_{i}" for i in range(6)])):
        one = tabular.patient_context(Y)
        np.testing.assert_array_equal(one["patient_n_images"], 1)
        np.testing.assert_array_equal(one["patient_site_share"], 1)
        np.testing.assert_array_equal(one["age_minus_patient_mean"], [0, 0, 0, nan, 0, 0])
    table = tabular.feature_table(X)
    assert list(table.columns) == [AGE, SITE, *tabular.CONTEXT]  # the columns X has, then the context
    np.testing.assert_allclose(table[tabular.CONTEXT].to_numpy(), ctx.to_numpy())


def frames(root, **kw):
    """train (with fold), test as read by melanoma.data.schema, from make_data."""
    folds_path = make_data(root, **kw)
    train, test = read_train(root), read_test(root)
    folds = pd.read_csv(folds_path, dtype={ID: "string"})
    return train.merge(folds[[ID, "fold"]], on=ID), test


def test_every_model_is_a_sklearn_estimator_and_handles_unseen_categories(tmp_path):
    from sklearn.utils.validation import check_is_fitted

    df, test = frames(tmp_path, n=60, n_test=9, seed=2)
    df[SEX] = df[SEX].astype(object).where(df[SEX] != "female", pd.NA).astype("string")  # no 'female' in train
    # image size columns are used when both tables have them, skipped otherwise
    assert tabular.input_columns(df.assign(width=1), test) == tabular.FEATURE_COLUMNS
    df["width"], test["width"] = np.where(np.arange(len(df)) % 2, 6000.0, np.nan), 1024.0
    df["height"], test["height"] = 4000.0, 768.0
    inputs = tabular.input_columns(df, test)
    assert inputs == tabular.FEATURE_COLUMNS + tabular.SIZE
    X, y = df[inputs], df[TARGET].to_numpy()
    tcfg = TabularConfig(hidden=[8], epochs=2, batch_size=16, gbm_max_iter=20, gbm_min_samples_leaf=5)
    for name in tabular.TABULAR_MODELS:
        est = tabular.build_tabular_model(name, tcfg, seed=1, y=y)
        twin = clone(est)
        assert twin is not est and is_classifier(twin)
        assert [n for n, _ in twin.steps] == [n for n, _ in est.steps]
        assert twin.steps[-1][1].get_params() == est.steps[-1][1].get_params()
        assert est.fit(X, y) is est, name
        check_is_fitted(est)
        clf = est.steps[-1][1]
        assert list(clf.classes_) == [0, 1]
        learned = [a for a in vars(clf) if a.endswith("_") and not a.startswith("_")]
        assert learned, name
        assert not hasattr(clone(est).steps[-1][1], "classes_")  # a clone of a fitted model is unfitted
        # test: sites and a sex ('female') never seen in training
        proba = est.predict_proba(test[inputs])
        assert proba.shape == (len(test), 2) and np.isfinite(proba).all(), name
        assert np.allclose(proba.sum(axis=1), 1.0)
        names = list(est.named_steps["features"].get_feature_names_out())
        codes = est.named_steps["features"].transform(test[inputs])
        if name in ("gbm", "lgbm", "hgb"):  # unseen categories reach the booster as missing; sizes stay raw
            assert names[:2] == [SEX, SITE] and {"width", "height"} <= set(names)
            assert np.isnan(codes[:, 1]).all()
            assert np.isnan(codes[test[SEX].to_numpy(dtype=object, na_value="") == "female", 0]).all()
            assert (codes[:, names.index("width")] == 1024).all()
        else:  # one-hot: all zeros; sizes imputed and scaled by the training range
            site_cols = [i for i, n in enumerate(names) if n.startswith(f"cat__{SITE}_")]
            assert (codes[:, site_cols] == 0).all()
            assert (codes[:, names.index("size__width")] == 0).all()  # 1024 < the training 6000: clipped
    with pytest.raises(tabular.ConfigError, match="tabular.model"):
        tabular.build_tabular_model("xgboost", tcfg, seed=1)


@pytest.mark.parametrize("model", ["logreg", "gbm"])
def test_entirely_missing_site_column_other_models(tmp_path, model):
    # (mlp_smote: test_entirely_missing_site_column_end_to_end)
    folds_path = make_data(tmp_path / "data", n=90, n_test=12, seed=3, site=False)
    cfg = small_cfg(model=model, gbm_min_samples_leaf=5)
    metrics = tabular.run_tabular(cfg, tmp_path / "data", folds_path, tmp_path / "out")
    assert metrics["model"] == model and np.isfinite(metrics["oof_auc"])
    pred = pd.read_csv(tmp_path / "out" / "test_pred.csv")
    assert len(pred) == 12 and pred[TARGET].between(0, 1).all()
    feats = pd.read_csv(tmp_path / "out" / "features.csv")
    assert feats[SITE].isna().all() and (feats["patient_site_share"] == 1).all()


@pytest.fixture(scope="module")
def all_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tabular_all")
    folds_path = make_data(root / "data")
    cfg = small_cfg(model="all", epochs=6, gbm_min_samples_leaf=10, gbm_max_iter=100)
    metrics = tabular.run_tabular(cfg, root / "data", folds_path, root / "out")
    return dict(root=root, out=root / "out", folds_path=folds_path, metrics=metrics,
                train=read_train(root / "data"), test=read_test(root / "data"))


def test_all_writes_every_model_and_the_best_on_oof(all_run):
    out, metrics, train, test = all_run["out"], all_run["metrics"], all_run["train"], all_run["test"]
    models = metrics["models"]
    assert list(models) == list(tabular.TABULAR_MODELS)
    # the learnable signal is found by the linear model and the booster (mlp_smote: test_run_outputs_...)
    assert models["logreg"] > 0.8 and models["gbm"] > 0.8, models
    best = max(models, key=models.get)
    assert metrics["model"] == best and metrics["oof_auc"] == pytest.approx(models[best])
    assert "OOF" in metrics["selection"] and best in metrics["selection"]
    for name in tabular.TABULAR_MODELS:
        sub = out / name
        for f in ("oof.csv", "test_pred.csv", "metrics.json", "config.yaml", "run.json"):
            assert (sub / f).is_file(), (name, f)
        m = json.loads((sub / "metrics.json").read_text())
        assert m["model"] == name and m["oof_auc"] == pytest.approx(models[name])
        assert f"model: {name}" in (sub / "config.yaml").read_text()
        pred = pd.read_csv(sub / "test_pred.csv", dtype={ID: "string"})
        assert sorted(pred[ID]) == sorted(test[ID]) and pred[TARGET].between(0, 1).all()  # unseen sites
    top = json.loads((out / "metrics.json").read_text())
    assert top["models"] == pytest.approx(models) and top["model"] == best
    pd.testing.assert_frame_equal(pd.read_csv(out / "oof.csv"), pd.read_csv(out / best / "oof.csv"))
    assert "model: all" in (out / "config.yaml").read_text()

    feats = pd.read_csv(out / "features.csv", dtype={ID: "string", "fold": "string"})
    assert list(feats.columns) == [ID, "fold", SEX, AGE, SITE, *tabular.CONTEXT]
    assert len(feats) == len(train) + len(test) and not feats[ID].duplicated().any()
    assert set(feats["fold"]) == {"0", "1", "2", "test"}
    np.testing.assert_array_equal(feats.set_index(ID).loc[train[ID], AGE], train[AGE])  # before scaling
    np.testing.assert_array_equal(feats.set_index(ID).loc[train[ID], "patient_n_images"], 2)

    imp = json.loads((out / "gbm" / "metrics.json").read_text())["importances"]
    assert set(imp) == {SEX, SITE, AGE, *tabular.CONTEXT}
    assert all(np.isfinite(v) for v in imp.values())
    assert max(imp, key=imp.get) in (AGE, "patient_age_max", "patient_age_min")  # the signal is the age


def test_single_model_run_replaces_an_all_run_and_cli_model_flag(all_run, tmp_path):
    import shutil

    from melanoma import cli

    out = tmp_path / "run"
    shutil.copytree(all_run["out"], out)
    data = all_run["root"] / "data"
    code = cli.main(["-q", "tabular", "--data", str(data), "--folds-file", str(all_run["folds_path"]),
                     "--out", str(out), "--model", "logreg"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "logreg" and list(metrics["models"]) == ["logreg"] and "selection" not in metrics
    assert not [m for m in tabular.TABULAR_MODELS if (out / m).exists()]  # the earlier run's model folders are gone
    assert "model: logreg" in (out / "config.yaml").read_text()
    assert cli.main(["-q", "tabular", "--data", str(data), "--out", str(out), "--set", "tabular.model=svm"]) == 2


def test_context_features_carry_an_ugly_duckling_signal(tmp_path):
    """Risk depends only on how an image differs from its patient's others: gbm needs the context to see it."""
    rng = np.random.default_rng(5)
    n_pat, per = 60, 6
    pid = np.repeat([f"IP_{p:04d}" for p in range(n_pat)], per)
    base = np.repeat(rng.choice(np.arange(30, 75, 5), n_pat), per).astype(float)
    age = base + rng.choice([0, 5, 10], size=n_pat * per)
    main = rng.choice(SITES, n_pat)
    site = np.array([main[i // per] if rng.random() < 0.8 else rng.choice(SITES) for i in range(n_pat * per)])
    share = pd.Series(site).groupby([pid, site]).transform("size").to_numpy() / per
    target = ((share <= 1 / 3) & (rng.random(n_pat * per) < 0.7)).astype(int)
    target[rng.random(n_pat * per) < 0.03] = 1
    train = pd.DataFrame({ID: [f"ISIC_{i:07d}" for i in range(n_pat * per)], "patient_id": pid,
                          SEX: "male", AGE: age, SITE: site, TARGET: target})
    test = train.drop(columns=[TARGET]).head(12).assign(**{ID: [f"ISIC_T{i:06d}" for i in range(12)]})
    root = tmp_path / "data"
    root.mkdir()
    train.to_csv(root / "train.csv", index=False)
    test.to_csv(root / "test.csv", index=False)
    write_csv(root / "folds.csv", assign_folds(read_train(root), N_FOLDS, 0))
    auc = {}
    for context in (True, False):
        cfg = small_cfg(model="gbm", context=context, gbm_min_samples_leaf=5, gbm_max_iter=60,
                        gbm_importance_repeats=0)
        auc[context] = tabular.run_tabular(cfg, root, root / "folds.csv", tmp_path / f"out{context}")["oof_auc"]
    assert auc[True] > 0.8 and auc[True] > auc[False] + 0.1, auc


# --------------------------------------------------------------------------------------------- image sizes
# width/height from the TFRecords folder: prepare's image_sizes.csv or the public datasets' train.csv/test.csv

CAMERAS = [(640, 480), (1024, 768), (1872, 1053), (6000, 4000)]  # malignancy rises with the width


def size_data(root):
    """make_data's CSVs (no width/height) with a target that depends on the image width only, and the sizes."""
    make_data(root, n=180, n_test=30, seed=4)
    train, test = pd.read_csv(root / "train.csv"), pd.read_csv(root / "test.csv")
    rng = np.random.default_rng(4)
    cam_train, cam_test = rng.integers(0, len(CAMERAS), len(train)), rng.integers(0, len(CAMERAS), len(test))
    rate = np.array([0.02, 0.1, 0.5, 0.9])
    train[TARGET] = (rng.random(len(train)) < rate[cam_train]).astype(int)
    train.to_csv(root / "train.csv", index=False)
    write_csv(root / "folds.csv", assign_folds(read_train(root), N_FOLDS, 4))
    sizes = pd.concat([
        pd.DataFrame({ID: train[ID], "split": "train", "width": [CAMERAS[c][0] for c in cam_train],
                      "height": [CAMERAS[c][1] for c in cam_train]}),
        pd.DataFrame({ID: test[ID], "split": "test", "width": [CAMERAS[c][0] for c in cam_test],
                      "height": [CAMERAS[c][1] for c in cam_test]}),
    ], ignore_index=True)
    return root / "folds.csv", train, test, sizes


def size_run(root, folds_path, sizes_dir, out, **kw):
    cfg = small_cfg(model="logreg", **kw)
    return tabular.run_tabular(cfg, root, folds_path, out, sizes_dir)


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    root = tmp_path_factory.mktemp("tabular_sizes")
    folds_path, train, test, sizes = size_data(root / "data")
    tfrec = root / "tfrec"
    tfrec.mkdir()
    sizes.sample(frac=1.0, random_state=0).to_csv(tfrec / tabular.SIZES_CSV, index=False)  # any row order
    return dict(root=root, data=root / "data", folds_path=folds_path, train=train, test=test, sizes=sizes,
                tfrec=tfrec)


def test_image_sizes_csv_is_joined_by_name_and_carries_the_signal(sized, caplog):
    data, folds_path, tfrec, sizes = sized["data"], sized["folds_path"], sized["tfrec"], sized["sizes"]
    out = sized["root"] / "auto"
    with caplog.at_level(logging.INFO, logger="melanoma.tabular"):
        auc = size_run(data, folds_path, tfrec, out)["oof_auc"]
    assert any("image width/height from" in m and tabular.SIZES_CSV in m for m in caplog.messages)
    off = size_run(data, folds_path, tfrec, sized["root"] / "off", image_size="off")["oof_auc"]
    assert auc > 0.8 and auc > off + 0.2, (auc, off)

    feats = pd.read_csv(out / "features.csv", dtype={ID: "string", "fold": "string"}).set_index(ID)
    expected = sizes.set_index(ID)
    for c in tabular.SIZE:  # joined by image_name, whatever the row order of image_sizes.csv
        np.testing.assert_array_equal(feats.loc[expected.index, c], expected[c])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == [SEX, AGE, SITE, "width", "height"]
    assert metrics["image_sizes_from"].endswith(tabular.SIZES_CSV)
    assert "width" not in pd.read_csv(sized["root"] / "off" / "features.csv").columns
    assert json.loads((sized["root"] / "off" / "metrics.json").read_text())["image_sizes_from"] is None


def test_public_tfrecords_csvs_with_width_and_height_via_cli(sized, tmp_path):
    from melanoma import cli

    train, test, sizes = sized["train"], sized["test"], sized["sizes"].set_index(ID)
    public = tmp_path / "public"
    public.mkdir()
    # the public datasets' companion CSVs: the metadata plus tfrecord, width, height (rows in another order)
    train.assign(tfrecord=np.arange(len(train)) % 15, width=sizes.loc[train[ID], "width"].to_numpy(),
                 height=sizes.loc[train[ID], "height"].to_numpy()).iloc[::-1].to_csv(public / "train.csv",
                                                                                   index=False)
    test.assign(width=sizes.loc[test[ID], "width"].to_numpy(),
                height=sizes.loc[test[ID], "height"].to_numpy()).to_csv(public / "test.csv", index=False)
    out = tmp_path / "run"
    code = cli.main(["-q", "tabular", "--data", str(sized["data"]), "--folds-file", str(sized["folds_path"]),
                     "--out", str(out), "--model", "logreg", "--tfrecords", str(public)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["oof_auc"] > 0.8 and "train.csv and" in metrics["image_sizes_from"]
    feats = pd.read_csv(out / "features.csv", dtype={ID: "string"}).set_index(ID)
    np.testing.assert_array_equal(feats.loc[sizes.index, "width"], sizes["width"])


def test_incomplete_image_sizes_warn_and_are_not_used(sized, tmp_path, caplog):
    partial = tmp_path / "partial"
    partial.mkdir()
    sizes = sized["sizes"]
    sizes[~sizes[ID].isin(sized["test"][ID].head(4))].to_csv(partial / tabular.SIZES_CSV, index=False)
    train, test = read_train(sized["data"]), read_test(sized["data"])
    with caplog.at_level(logging.INFO, logger="melanoma.tabular"):
        trn, tst, source = tabular.add_image_sizes(train, test, partial, "auto")
    assert source is None and "width" not in trn.columns and "width" not in tst.columns
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"0 of {len(train)} training and 4 of {len(test)} test images" in warnings[0]
    # a bucket is not looked into; a folder without sizes says so; the CSVs' own sizes come first
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="melanoma.tabular"):
        assert tabular.add_image_sizes(train, test, "gs://bucket/tfrec", "auto")[2] is None
        assert tabular.add_image_sizes(train, test, tmp_path / "none", "auto")[2] is None
    assert any("gs://bucket/tfrec" in m for m in caplog.messages) and len(caplog.messages) == 2
    own = tabular.add_image_sizes(train.assign(width=1.0, height=2.0), test.assign(width=3.0, height=4.0),
                                  sized["tfrec"], "auto")
    assert own[2] == "train.csv and test.csv" and (own[1]["width"] == 3.0).all()
    assert "width" not in tabular.add_image_sizes(train.assign(width=1.0, height=2.0), test, None, "off")[0]
    with pytest.raises(tabular.ConfigError, match="image_size"):
        size_run(sized["data"], sized["folds_path"], partial, tmp_path / "bad", image_size="yes")
