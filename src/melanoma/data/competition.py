"""The competitions the package knows, one profile object each: its files, id column, sites and metric.

Stages ask the profile; no stage tests a competition's name.

- `siim2020` (SIIM-ISIC 2020): train.csv / test.csv, JPEGs in jpeg/<split>/, `image_name`, ROC AUC, the
  metadata models of the tabular stage.
- `isic2024` (ISIC 2024, SLICE-3D): train-metadata.csv / test-metadata.csv, tiles in train-image.hdf5 /
  test-image.hdf5, `isic_id`, partial AUC above 80% TPR (melanoma.scoring.partial_auc), boosted trees on the
  lesion measurements in the tabular stage.

Inside the package every table uses the 2020 names (`image_name`, `anatom_site_general_challenge`): the profile
renames at the edges, when a competition CSV is read (melanoma.data.schema) and when a file a user sees is
written (`user_table`: oof.csv, test_pred.csv, folds.csv, submission.csv). Readers of those files take either
id column (`internal_ids`). Which competition: `competition:` in the config, else the files in the data folder
(`detect`), else what prepare recorded in the TFRecords manifest; the log says which and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
import pandas as pd

log = logging.getLogger(__name__)

ID = "image_name"  # the package's own id column (melanoma.data.schema.ID)
SITE = "anatom_site_general_challenge"


@dataclass(frozen=True)
class Competition:
    name: str
    slug: str  # the Kaggle competition
    id_column: str
    site_column: str
    train_csv: str
    test_csv: str
    images: str  # "jpeg": DATA/jpeg/<split>/<id>.jpg | "hdf5": DATA/<split>-image.hdf5, one tile per id
    metric: str  # "auc" | "pauc": the headline of every stage's log and metrics.json
    # Which tabular recipe the `tabular` stage runs (melanoma.tabular.stage.RECIPES): "metadata" (sex, age, site
    # and image statistics: the 2020 models) | "tbp" (the 3D-TBP lesion measurements: melanoma.tabular.tbp).
    tabular: str = "metadata"
    # Columns only the training file has: never features (the test file lacks them, or they follow from the label).
    train_only: tuple[str, ...] = ()
    # The file's site values -> the package's six (the image model's metadata vector): ISIC 2024 splits the torso.
    site_values: dict[str, str] = field(default_factory=dict)

    def csv_path(self, data_dir: str | Path, split: str) -> Path:
        return Path(data_dir) / (self.train_csv if split == "train" else self.test_csv)

    def image_file(self, data_dir: str | Path, split: str) -> Path:
        """The tile file of a split (images: hdf5)."""
        return Path(data_dir) / f"{split}-image.hdf5"

    @property
    def metric_name(self) -> str:
        return METRIC_NAMES[self.metric]

    def score(self, y, p) -> float | None:
        """The competition's metric (None for one class only)."""
        from melanoma.scoring import METRICS  # scikit-learn: loaded by the stages that score, not by every reader

        return METRICS[self.metric](y, p)

    def internal_table(self, df: pd.DataFrame) -> pd.DataFrame:
        """A table in the competition's own columns, in the package's names: the id and site columns renamed, the
        site values stripped, lower-cased and mapped to the package's six (ISIC 2024's torso halves)."""
        df = df.rename(columns={k: v for k, v in {self.id_column: ID, self.site_column: SITE}.items() if k != v})
        if self.site_values and SITE in df.columns:
            df[SITE] = df[SITE].str.strip().str.lower().replace(self.site_values)
        return df

    def user_table(self, df: pd.DataFrame) -> pd.DataFrame:
        """A table about to be written for a user: the package's id column under the competition's name."""
        return df.rename(columns={ID: self.id_column}) if self.id_column != ID else df


METRIC_NAMES = {"auc": "AUC", "pauc": "pAUC>80%TPR"}

SIIM2020 = Competition(
    name="siim2020", slug="siim-isic-melanoma-classification", id_column="image_name",
    site_column="anatom_site_general_challenge", train_csv="train.csv", test_csv="test.csv", images="jpeg",
    metric="auc", train_only=("target", "diagnosis", "benign_malignant"))
ISIC2024 = Competition(
    name="isic2024", slug="isic-2024-challenge", id_column="isic_id", site_column="anatom_site_general",
    train_csv="train-metadata.csv", test_csv="test-metadata.csv", images="hdf5", metric="pauc", tabular="tbp",
    train_only=("target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
                "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"),
    site_values={"anterior torso": "torso", "posterior torso": "torso"})
PROFILES: dict[str, Competition] = {c.name: c for c in (SIIM2020, ISIC2024)}
ID_COLUMNS = tuple(dict.fromkeys(c.id_column for c in PROFILES.values()))


def detect(data_dir: str | Path | None) -> tuple[Competition, str] | None:
    """The competition whose training or test file is in `data_dir`, with the reason; None when neither is."""
    if data_dir is None or "://" in str(data_dir):
        return None
    for profile in PROFILES.values():
        for name in (profile.train_csv, profile.test_csv):
            if (Path(data_dir) / name).is_file():
                return profile, f"found {name} in {data_dir}"
    return None


_said: set[tuple[str, str]] = set()
_why: dict[str, str] = {}  # the reason of the last resolve per competition, for announce


def resolve(choice: str, data_dir: str | Path | None = None, recorded: str | None = None) -> Competition:
    """The profile for the config's `competition` (auto | a name): a name wins; auto asks the data folder, then
    what prepare recorded (`recorded`, from the manifest), else siim2020 (`announce` logs it)."""
    if choice != "auto":
        profile, why = PROFILES[choice], "set in the config"
    else:
        found = detect(data_dir)
        if found is not None:
            profile, why = found
        elif recorded in PROFILES:
            profile, why = PROFILES[recorded], "recorded by prepare in the TFRecords manifest"
        else:
            profile, why = SIIM2020, "the default (no competition file found; set competition: to choose)"
    _why[profile.name] = why
    return profile


def announce(profile: Competition) -> None:
    """Log which competition and why, once per choice and reason: called by a stage once its inputs are valid
    (a refused command prints its one error line and nothing else)."""
    why = _why.get(profile.name, "set in code")
    if (profile.name, why) not in _said:
        _said.add((profile.name, why))
        log.info("competition: %s (%s), metric %s", profile.name, why, profile.metric_name)


def internal_ids(df: pd.DataFrame) -> pd.DataFrame:
    """A user's table with the competition's id column (isic_id) renamed to the package's (image_name)."""
    if ID in df.columns:
        return df
    for col in ID_COLUMNS:
        if col in df.columns:
            return df.rename(columns={col: ID})
    return df


def profile_of_columns(columns) -> Competition:
    """The competition a predictions table belongs to, by its id column (siim2020 when it names neither)."""
    for profile in PROFILES.values():
        if profile.id_column in columns:
            return profile
    return SIIM2020
