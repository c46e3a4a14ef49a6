"""The ISIC 2024 tabular run's fitted models, kept for inference: RUN/models/ (and RUN/<model>/models/).

    models.json       what is inside: the model, its members, the feature columns in the order the trees take
                      them, the image runs whose predictions are features (image_run0, ...), the data settings the
                      metadata was read with, and the library versions that pickled them
    features.joblib   the fitted ISIC2024Features (its categories' levels, the columns it was fitted with)
    memberK.joblib    one SeededBoosters per fold (tabular.test_predictions: fold_mean) or the one refitted on
                      every training row (refit): each averages its seeds

`TabularModels.load(RUN).predict(metadata, image_preds)` scores new tiles exactly as the stage scored its test
rows: features among the given rows (a patient's tiles among themselves), the image predictions and their
within-patient forms, the mean over the members. It is written inside the stage's staging folder, so a run folder
never holds models of one run beside the predictions of another.

joblib pickles: load only bundles you made (`melanoma kaggle upload-models` does); the versions are checked and a
mismatch is logged, since a tree library may not read another version's pickle the same way.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from melanoma.data.schema import ID, PATIENT
from melanoma.errors import input_error
from melanoma.files import read_json, write_json
from melanoma.tabular.image_runs import column, normalised

log = logging.getLogger("melanoma.tabular")

MODELS_DIR = "models"
INFO = "models.json"
FORMAT_VERSION = 1
FEATURES = "features.joblib"
LIBRARIES = ("scikit-learn", "lightgbm", "xgboost", "catboost", "pandas", "numpy")


def _versions() -> dict[str, str]:
    out = {}
    for dist in LIBRARIES:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def save_models(folder: Path, features: Any, members: list[Any], columns: list[str], image_runs: list[dict],
                patient_id: str) -> None:
    """Write the models of one tabular model into `folder` (a staging folder's models/)."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(features, folder / FEATURES)
    names = [f"member{i}.joblib" for i in range(len(members))]
    for name, est in zip(names, members):
        joblib.dump(est, folder / name)
    write_json(folder / INFO, {
        "format_version": FORMAT_VERSION, "model": members[0].library if members else None, "members": names,
        "features": [str(c) for c in columns],
        "image_runs": [{"column": r["column"], "path": r["path"]} for r in image_runs],
        "data": {"patient_id": patient_id}, "versions": _versions()})


def remove_stale_members(folder: Path) -> None:
    """member files an earlier run with more members left (staged_dir moves files in; it removes none)."""
    if not (folder / INFO).is_file():
        return
    keep = set(read_json(folder / INFO)["members"])
    for path in folder.glob("member*.joblib"):
        if path.name not in keep:
            path.unlink()


class TabularModels:
    """A tabular run's saved models (see the module docstring)."""

    def __init__(self, folder: Path, info: dict[str, Any], features: Any, members: list[Any]):
        self.folder, self.info, self.features, self.members = folder, info, features, members

    @property
    def columns(self) -> list[str]:
        return list(self.info["features"])

    @property
    def n_image_runs(self) -> int:
        return len(self.info["image_runs"])

    @property
    def patient_id(self) -> str:
        return self.info.get("data", {}).get("patient_id", "required")

    @classmethod
    def load(cls, run_dir: str | Path) -> TabularModels:
        """The models of RUN (RUN/models/) or of a models folder itself; one line when there are none."""
        import joblib

        run_dir = Path(run_dir)
        folder = run_dir if (run_dir / INFO).is_file() else run_dir / MODELS_DIR
        if not (folder / INFO).is_file():
            raise input_error(run_dir, f"no {MODELS_DIR}/{INFO}: not an ISIC 2024 tabular run of this version "
                                       "(re-run `melanoma tabular` to keep its models)")
        info = read_json(folder / INFO)
        if info.get("format_version") != FORMAT_VERSION or not info.get("members"):
            raise input_error(folder / INFO, f"format_version {info.get('format_version')!r} with "
                                             f"{len(info.get('members') or [])} member(s): expected version "
                                             f"{FORMAT_VERSION} with at least one (re-run `melanoma tabular`)")
        mine = _versions()
        differ = {k: (v, mine.get(k)) for k, v in info.get("versions", {}).items() if mine.get(k) != v}
        if differ:
            log.warning("tabular models %s were saved with other library versions (saved -> here): %s", folder,
                        ", ".join(f"{k} {a} -> {b}" for k, (a, b) in differ.items()))
        missing = [n for n in (FEATURES, *info["members"]) if not (folder / n).is_file()]
        if missing:
            raise input_error(folder / missing[0], f"missing: {folder / INFO} lists it (copy the whole folder)")
        return cls(folder, info, joblib.load(folder / FEATURES), [joblib.load(folder / n) for n in info["members"]])

    def feature_table(self, metadata: pd.DataFrame, image_preds: list[np.ndarray] | None = None) -> pd.DataFrame:
        """The trees' input for `metadata` (read as melanoma.data.schema.read_test reads it), indexed by id."""
        preds = list(image_preds or [])
        if len(preds) != self.n_image_runs:
            raise ValueError(f"the tabular models take {self.n_image_runs} image run prediction(s), got {len(preds)}")
        index = pd.Index(metadata[ID])
        X = self.features.transform(metadata).set_axis(index, axis=0)
        if preds:  # as melanoma.tabular.image_runs builds them for the test rows: normalised among these rows
            values = {column(i): np.asarray(p, dtype=np.float64) for i, p in enumerate(preds)}
            X = pd.concat([X, normalised(values, index, metadata[PATIENT])], axis=1)
        return X[self.columns]

    def predict(self, metadata: pd.DataFrame, image_preds: list[np.ndarray] | None = None) -> np.ndarray:
        """The probability of each row: the mean over the members (each the mean over its seeds)."""
        X = self.feature_table(metadata, image_preds)
        if not len(X):
            return np.zeros(0)
        with threadpool_limits(limits=1):  # as the stage predicts: see melanoma.tabular.stage._fit
            return np.mean([m.predict_proba(X)[:, 1] for m in self.members], axis=0)
