"""Patient-level folds: no patient in two folds; malignant rate and images per patient balanced across folds.

Folds are computed once, saved as `folds.csv` (image_name, patient_id, target, fold) and read by every later
stage, so all models are validated on the same split and their OOF predictions can be blended.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.competition import ID_COLUMNS, SIIM2020, Competition, internal_ids, resolve, announce
from melanoma.data.schema import ID, PATIENT, TARGET, check_unique_ids, read_train
from melanoma.config import Config, save_run_info
from melanoma.data.dedup import union_groups
from melanoma.data.manifest import MANIFEST, recorded_competition
from melanoma.errors import input_error
from melanoma.files import write_csv
from melanoma.runtime.paths import RunPaths
from melanoma.runtime.stage import Result

log = logging.getLogger(__name__)

FOLD_COLUMNS = [ID, PATIENT, TARGET, "fold"]


def assign_folds(train: pd.DataFrame, n_folds: int, seed: int, groups: np.ndarray | pd.Series | None = None
                 ) -> pd.DataFrame:
    """Return image_name, patient_id, target, fold for every training row: triple-stratified folds.

    1. Patient-disjoint: a group (a patient, or with `groups` a union of patients linked by duplicate images)
       is in one fold only.
    2. Malignant rate balanced: groups with malignant images are dealt first, most positives first.
    3. Images per patient balanced: groups are dealt in blocks of n_folds of similar size (largest first), one
       group of each block per fold, the larger going to the fold that is behind in positives or images.

    Dealing blocks this way gives every fold the same distribution of patient sizes (its quantiles match to
    within one block) and near-equal image and positive counts; the seed shuffles ties, so folds are
    reproducible from it and differ between seeds. (The approach of the top public solutions' triple
    stratified folds, with a greedy deal instead of StratifiedKFold over coarse bins.)
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    keys = pd.Series(np.asarray(groups) if groups is not None else train[PATIENT].to_numpy(), index=train.index)
    stats = pd.DataFrame({"n": keys.groupby(keys).size(), "pos": train[TARGET].groupby(keys).sum()})
    if len(stats) < n_folds:
        raise ValueError(f"{len(stats)} patients cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    stats = stats.iloc[rng.permutation(len(stats))]  # ties broken by the seed
    fold_pos = np.zeros(n_folds)
    fold_img = np.zeros(n_folds)
    assigned: dict = {}
    positive = stats[stats.pos > 0].sort_values(["pos", "n"], ascending=False, kind="stable")
    negative = stats[stats.pos == 0].sort_values("n", ascending=False, kind="stable")
    for part, by_pos in ((positive, True), (negative, False)):
        names, n, pos = part.index.to_numpy(), part.n.to_numpy(), part.pos.to_numpy()
        for start in range(0, len(part), n_folds):
            block = slice(start, start + n_folds)
            # Folds furthest behind first (positives, then images), random among equals.
            tie = rng.random(n_folds)
            order = np.lexsort((tie, fold_img, fold_pos)) if by_pos else np.lexsort((tie, fold_img))
            for name, size, p, k in zip(names[block], n[block], pos[block], order):
                assigned[name] = int(k)
                fold_pos[k] += p
                fold_img[k] += size
    out = train[[ID, PATIENT, TARGET]].copy()
    out["fold"] = keys.map(assigned).astype(np.int64).to_numpy()
    return out.reset_index(drop=True)


SUMMARY_COLUMNS = ("images", "patients", "positives", "positive_rate", "ipp_q1", "ipp_median", "ipp_q3", "ipp_max")


def fold_summary(folds: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, patients, positives, positive rate and the quartiles of images per patient (ipp)."""
    g = folds.groupby("fold")
    per_patient = folds.groupby(["fold", PATIENT]).size().groupby(level="fold")
    return pd.DataFrame({
        "images": g.size(),
        "patients": g[PATIENT].nunique(),
        "positives": g[TARGET].sum(),
        "positive_rate": g[TARGET].mean().round(4),
        "ipp_q1": per_patient.quantile(0.25),
        "ipp_median": per_patient.median(),
        "ipp_q3": per_patient.quantile(0.75),
        "ipp_max": per_patient.max(),
    })


def fold_balance(summary: pd.DataFrame) -> dict[str, float]:
    """The largest deviation of any fold from the mean of the folds, per column of fold_summary."""
    return {c: round(float((summary[c] - summary[c].mean()).abs().max()), 6) for c in summary.columns}


def format_fold_table(summary: pd.DataFrame) -> str:
    balance = fold_balance(summary)
    dev = pd.DataFrame([balance], index=["max |dev|"])
    return pd.concat([summary.astype("float64"), dev]).to_string(float_format=lambda v: f"{v:g}")


def folds_from_tfrecord_column(train: pd.DataFrame, public_csv: Path, n_folds: int, seed: int) -> pd.DataFrame:
    """Folds that match the public Kaggle TFRecords: their companion train.csv names each image's file
    (`tfrecord`, -1 for the duplicates left out), and contiguous blocks of files are the folds, as `train`
    reads them. So the metadata model's folds are the image model's, and the blend compares like with like.
    Images in no file take their patient's fold, or a fold of their own dealt by assign_folds."""
    public = pd.read_csv(public_csv, dtype={ID: "string"}, usecols=lambda c: c in (ID, "tfrecord"))
    if ID not in public.columns:
        raise input_error(public_csv, f"missing column '{ID}'", 1)
    files = np.sort(public.loc[public["tfrecord"] >= 0, "tfrecord"].unique())
    if len(files) == 0 or len(files) % n_folds:
        raise input_error(public_csv, f"{len(files)} TFRecord files cannot be split evenly into {n_folds} folds")
    file_fold = {f: i // (len(files) // n_folds) for i, f in enumerate(files)}
    by_name = dict(zip(public[ID], public["tfrecord"].map(file_fold)))
    out = train[[ID, PATIENT, TARGET]].copy().reset_index(drop=True)
    out["fold"] = out[ID].map(by_name)
    patient_fold = out.dropna(subset=["fold"]).groupby(PATIENT)["fold"].agg(lambda f: f.mode().iloc[0])
    out["fold"] = out["fold"].fillna(out[PATIENT].map(patient_fold))
    rest = out["fold"].isna()
    if rest.any():
        dealt = assign_folds(out[rest], n_folds, seed) if out.loc[rest, PATIENT].nunique() >= n_folds else \
            out[rest].assign(fold=np.arange(rest.sum()) % n_folds)
        out.loc[rest, "fold"] = dealt["fold"].to_numpy()
    out["fold"] = out["fold"].astype(np.int64)
    log.info("folds: from the `tfrecord` column of %s (%d files, %d per fold); %d images in no file placed "
             "with their patient or dealt", public_csv, len(files), len(files) // n_folds, int(rest.sum()))
    return out


def public_folds_csv(tfrecords_dir: str | Path | None) -> Path | None:
    """The companion train.csv of a public TFRecord dataset (no manifest.json, a `tfrecord` column), if any."""
    if tfrecords_dir is None or str(tfrecords_dir).startswith("gs://"):
        return None
    folder = Path(tfrecords_dir)
    csv = folder / "train.csv"
    if (folder / MANIFEST).is_file() or not csv.is_file():
        return None
    with csv.open(encoding="utf-8", errors="replace") as f:  # a header only: a stray byte is not this check's concern
        header = f.readline().strip().split(",")
    return csv if "tfrecord" in header else None


def make_folds(train: pd.DataFrame, n_folds: int, seed: int, duplicates: list[tuple[int, int]] | None = None,
               public_csv: Path | None = None) -> pd.DataFrame:
    """The one function that deals folds (the `folds` stage, `prepare` and `run` all come here).

    `duplicates`: pairs of row positions of `train` showing the same image (from `dedup`, known once images are
    hashed). When given, even empty, the groups dealt are patients linked by duplicates (`dedup.union_groups`,
    labelled by their first row); without it, patients. `public_csv`: the companion train.csv of the public
    Kaggle TFRecords, whose files then decide the folds.
    """
    if public_csv is not None:
        return folds_from_tfrecord_column(train, public_csv, n_folds, seed)
    groups = None if duplicates is None else union_groups(train[PATIENT].tolist(), duplicates)
    return assign_folds(train, n_folds, seed, groups)


def write_folds(folds: pd.DataFrame, out: str | Path, cfg: Config, competition: Competition = SIIM2020) -> Path:
    """folds.csv (atomically, with the competition's id column) with its run info beside it, and the fold table
    in the log."""
    out = Path(out)
    write_csv(out, competition.user_table(folds))
    save_run_info(out.parent, cfg, "folds", prefix=f"{out.stem}.", extra={"competition": competition.name})
    log.info("folds: %d images, %d patients -> %s\n%s", len(folds), folds[PATIENT].nunique(), out,
             format_fold_table(fold_summary(folds)))
    return out


def run_folds(cfg: Config, data_dir: str | Path, out: str | Path, tfrecords_dir: str | Path | None = None
              ) -> pd.DataFrame:
    """The `folds` stage: DATA/train.csv -> folds.csv (cfg.n_folds folds, cfg.seed).

    When `tfrecords_dir` holds the public Kaggle TFRecords with their train.csv, the folds follow its files.
    """
    competition = resolve(cfg.competition, data_dir)
    train = read_train(data_dir, cfg.data.patient_id, competition)
    public = public_folds_csv(tfrecords_dir)
    n_patients = train[PATIENT].nunique()
    if public is None and n_patients < cfg.n_folds:  # as prepare says it (found by the CLI fuzz test)
        raise input_error(competition.csv_path(data_dir, "train"), f"{n_patients} patients cannot fill "
                                                                   f"{cfg.n_folds} folds: use --n-folds {n_patients} or fewer")
    folds = make_folds(train, cfg.n_folds, cfg.seed, public_csv=public)
    announce(competition)
    write_folds(folds, out, cfg, competition)
    return folds


def read_folds(path: str | Path, train: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read folds.csv; when `train` is given, check it covers exactly the training images."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "folds file not found (run `melanoma folds` first)")
    folds = internal_ids(pd.read_csv(path, dtype={**{c: "string" for c in ID_COLUMNS}, PATIENT: "string"}))
    for col in FOLD_COLUMNS:
        if col not in folds.columns:
            raise input_error(path, f"missing column '{col}'", 1)
    check_unique_ids(folds, path)
    if train is not None:
        extra = sorted(set(folds[ID]) - set(train[ID]))
        missing = sorted(set(train[ID]) - set(folds[ID]))
        if extra or missing:
            detail = f"{len(missing)} training images have no fold (e.g. {missing[0]})" if missing else \
                f"{len(extra)} images are not in train.csv (e.g. {extra[0]})"
            raise input_error(path, f"does not match train.csv: {detail}")
    return folds


def copy_prepared_folds(tfrec_dir: str | Path, out: str | Path, cfg: Config) -> Path:
    """The folds.csv that `prepare` dealt (beside its shards, which may be on gs://) written to `out`, so every
    later stage reads the folds that kept duplicate images together."""
    import tensorflow as tf  # tf.io.gfile: the TFRecords may be on gs://

    with tf.io.gfile.GFile(f"{str(tfrec_dir).rstrip('/')}/folds.csv", "rb") as f:
        folds = internal_ids(pd.read_csv(f, dtype={**{c: "string" for c in ID_COLUMNS}, PATIENT: "string"}))
    return write_folds(folds, out, cfg, resolve(cfg.competition, None, recorded_competition(tfrec_dir)))


def run(cfg: Config, paths: RunPaths) -> Result:
    """The `folds` stage (melanoma.runtime.stage): PATHS.data/train.csv -> PATHS.folds, following the public
    Kaggle TFRecords in PATHS.tfrecords when that folder has their train.csv."""
    folds = run_folds(cfg, paths.data, paths.folds, paths.tfrecords)
    return Result("folds", {"folds": paths.folds}, {"n_folds": int(folds["fold"].nunique())}, detail=folds)
