"""What a report reads: run folders (image, tabular), blend outputs, held-out labels and image metadata.

A run folder holds oof.csv and test_pred.csv (melanoma.data.runs). A blend is its `blend.json` (or the folder or
submission.csv beside it): its OOF score is recomputed from the runs and weights it lists, exactly as `blend`
mixed them, and its test score is the submission. Metadata for subgroups (patient, sex, age, site) comes from
the data folder's train.csv/test.csv and image sizes from the TFRecords folder, joined by image_name; any of
them may be absent, and the report then says what it could not show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.config.aliases import canonical
from melanoma.data.competition import ID_COLUMNS, SIIM2020, detect, internal_ids
from melanoma.data.schema import AGE, ID, PATIENT, SEX, SITE, TARGET
from melanoma.errors import ConfigError, InputError, input_error
from melanoma.files import read_json
from melanoma.data.runs import read_metrics, read_predictions, read_run

log = logging.getLogger(__name__)

PATIENT_META = (PATIENT, SEX, AGE, SITE)


@dataclass
class Run:
    label: str
    path: Path
    stage: str  # train | tabular | blend | unknown
    oof: pd.DataFrame  # image_name, target, pred, fold (fold may be NaN for a blend of different folds)
    test: pd.DataFrame  # image_name, pred
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the run's config.yaml as a mapping (may be empty)

    @property
    def metric(self) -> str:
        """Its headline metric: "pauc" where its metrics say so (ISIC 2024), else "auc"."""
        return "pauc" if isinstance(self.metrics, dict) and self.metrics.get("metric") == "pauc" else "auc"

    @property
    def fold_dirs(self) -> list[Path]:
        return sorted(p for p in self.path.glob("fold*") if p.is_dir() and p.name[4:].isdigit())


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
        # A run written before issue 25 has the flat train keys: read in the current layout all the same.
        return canonical(raw) if isinstance(raw, dict) else {}
    except (OSError, yaml.YAMLError, ConfigError):
        return {}


def _stage(folder: Path) -> str:
    try:
        info = read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
    except ValueError:
        return "unknown"
    return str(info.get("stage", "unknown")) if isinstance(info, dict) else "unknown"


def _numeric(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, f"{col} must be a finite number, got {df[col].iloc[i]!r}", i + 2)
    return v


def _read_folder(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    oof, test = read_run(folder)  # validated: ids, finite predictions in [0, 1], targets 0/1 (results.py)
    oof = pd.DataFrame({ID: oof[ID].astype(str), TARGET: oof[TARGET], "pred": oof["pred"],
                        "fold": pd.to_numeric(oof["fold"], errors="coerce")})
    test = pd.DataFrame({ID: test[ID].astype(str), "pred": test[TARGET]})
    return oof, test


def _blend(path: Path) -> Run:
    """A blend's OOF score rebuilt from its runs and weights (blend.json), its test score from the submission."""
    from melanoma.blend import combine, to_ranks

    info = read_json(path)
    runs = info.get("runs") if isinstance(info, dict) else None
    if not runs:
        raise input_error(path, "not a blend report: no runs listed")
    joined = None
    for i, r in enumerate(runs):
        oof, _ = _read_folder(Path(r["path"]))
        part = oof.rename(columns={"pred": f"pred_{i}"})
        joined = part if joined is None else joined.merge(part[[ID, f"pred_{i}"]], on=ID, how="inner")
    joined = joined.sort_values(ID).reset_index(drop=True)
    weights = np.array([float(r["weight"]) for r in runs])
    score = combine([to_ranks(joined[f"pred_{i}"]) for i in range(len(runs))], weights, info.get("method", "weighted"),
                    float(info.get("power") or 2.0))
    oof = joined[[ID, TARGET, "fold"]].assign(pred=score)
    sub_path = Path(info.get("submission") or path.parent / "submission.csv")
    if not sub_path.is_file():
        raise input_error(sub_path, f"the submission of {path} is missing")
    sub = read_predictions(sub_path, TARGET)
    test = pd.DataFrame({ID: sub[ID].astype(str), "pred": sub[TARGET]})
    return Run("blend", path.parent, "blend", oof, test, {"blended_oof_auc": info.get("blended_oof_auc"),
                                                           "metric": info.get("metric", "auc")},
               _yaml(path.parent / "config.yaml"))


def read_any(path: str | Path) -> Run:
    """A run folder, a blend folder, blend.json or a blend's submission.csv."""
    path = Path(path)
    if path.is_file() and path.suffix == ".csv" and (path.parent / "blend.json").is_file():
        return _blend(path.parent / "blend.json")
    if path.is_file() and path.name == "blend.json":
        return _blend(path)
    if path.is_dir() and not (path / "oof.csv").is_file() and (path / "blend.json").is_file():
        return _blend(path / "blend.json")
    if not path.exists():
        raise input_error(path, "not found: give a run folder (oof.csv, test_pred.csv) or a blend's blend.json")
    oof, test = _read_folder(path)
    return Run(path.name or "run", path, _stage(path), oof, test, read_metrics(path), _yaml(path / "config.yaml"))


def read_runs(paths: list[str | Path]) -> list[Run]:
    runs = [read_any(p) for p in paths]
    if not runs:
        raise InputError("report: no run folders given")
    seen: dict[str, int] = {}
    for r in runs:  # unique labels: two folders both called "image" become image and image-2
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label}-{seen[r.label]}"
    return runs


def test_labels(path: str | Path | None) -> pd.DataFrame | None:
    """image_name,target of the held-out test set (the file may name ISIC 2024's isic_id), or None when no labels
    file is configured."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "test labels file not found (paths.test_labels)")
    df = internal_ids(pd.read_csv(path, dtype={c: "string" for c in ID_COLUMNS}))
    for col in (ID, TARGET):
        if col not in df.columns:
            raise input_error(path, f"missing column '{col}' (expected image_name,target or isic_id,target)", 1)
    return pd.DataFrame({ID: df[ID].astype(str), TARGET: _numeric(df, TARGET, path).astype(int)})


def _csv(path: Path, wanted: set[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, usecols=lambda c: c in wanted,
                           dtype={**{c: "string" for c in ID_COLUMNS}, PATIENT: "string"})
    except (OSError, ValueError, pd.errors.ParserError) as e:
        log.warning("report: cannot read %s (%s); its metadata is left out", path, e)
        return None


def _competition_csv(data_dir: Path, split: str) -> pd.DataFrame | None:
    """The data folder's train or test metadata in the package's names (ISIC 2024's isic_id and site column
    renamed, its torso halves merged), the columns a report uses; None when absent or unreadable."""
    found = detect(data_dir)
    profile = found[0] if found is not None else SIIM2020
    names = {profile.id_column: ID, profile.site_column: SITE}
    df = _csv(profile.csv_path(data_dir, split), {ID, *PATIENT_META, "width", "height", *names})
    if df is None:
        return None
    df = profile.internal_table(df)
    return df if ID in df.columns else None


def metadata(data_dir: str | Path | None, tfrec_dir: str | Path | None) -> tuple[pd.DataFrame, list[str]]:
    """image_name -> patient_id, sex, age_approx, site, width, height (what is known), and notes on what is not."""
    notes: list[str] = []
    frames = []
    if data_dir is not None:
        for split in ("train", "test"):
            df = _competition_csv(Path(data_dir), split)
            if df is not None:
                frames.append(df)
    meta = pd.concat(frames, ignore_index=True).drop_duplicates(ID) if frames else pd.DataFrame({ID: []})
    if not frames:
        notes.append(f"no train.csv/test.csv (or ISIC 2024's train-metadata.csv/test-metadata.csv) in {data_dir}: "
                     "no patient ids or metadata subgroups")
    meta[ID] = meta[ID].astype(str)
    sizes = _sizes(tfrec_dir)
    if sizes is not None and not {"width", "height"} <= set(meta.columns):
        meta = meta.merge(sizes, on=ID, how="outer") if len(meta) else sizes
    for col in (*PATIENT_META, "width", "height"):
        if col not in meta.columns:
            meta[col] = np.nan
    if meta[PATIENT].isna().all():
        notes.append("no patient ids: the bootstrap resamples images, which understates the uncertainty "
                     "when a patient has several images")
    if meta["width"].isna().all():
        notes.append("no image sizes (image_sizes.csv in the TFRecords folder): no camera subgroups")
    return meta.set_index(ID), notes


def _sizes(tfrec_dir: str | Path | None) -> pd.DataFrame | None:
    if tfrec_dir is None or "://" in str(tfrec_dir):
        return None
    folder = Path(tfrec_dir)
    for files in ([folder / "image_sizes.csv"], [folder / "train.csv", folder / "test.csv"]):
        parts = [_csv(f, {ID, "width", "height"}) for f in files]
        if all(p is not None and {ID, "width", "height"} <= set(p.columns) for p in parts):
            sizes = pd.concat(parts, ignore_index=True).drop_duplicates(ID)
            sizes[ID] = sizes[ID].astype(str)
            return sizes
    return None
