"""The metadata vector of the image models: one definition for training, TTA, export, `predict` and `serve`.

Missing metadata is a first-class input (issue 28): new photos often come without age, sex or site, so each
field has its own missing indicator, and a last flag says the row has none at all. Layout 2 (META_DIM 13):

    sex one-hot (male, female), sex missing, site one-hot (6 sites), site missing, no metadata at all,
    age / 100 (0 when missing), age missing

A known value outside the one-hot vocabulary (a site another data set adds) is all zeros, not "missing".
The codes are the records' (`melanoma.data.records`): an index into the vocabulary, -1 = missing.

`encode` is written once over a tiny array interface, so tf.data (TensorFlow tensors, per record) and the
serving side (numpy, no TensorFlow import) compute the very same vector. A model trained on another layout
has a differently shaped input: `layout_problem` names it in one line instead of a shape error.

Training blanks fields at random (`train.meta.field_dropout` per field, `train.meta.row_dropout` for the whole row;
`blank_metadata` in melanoma.image.inputs), so the network learns to score with any field missing; validation,
TTA and prediction never blank anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from melanoma.data.records import N_SEX, N_SITE
from melanoma.data.schema import SEXES, SITES

LAYOUT = 2
COLUMNS = (tuple(f"sex={v}" for v in SEXES[:N_SEX]) + ("sex_missing",) + tuple(f"site={v}" for v in SITES[:N_SITE])
           + ("site_missing", "no_metadata", "age/100", "age_missing"))
META_DIM = len(COLUMNS)
DESCRIPTION = ("layout 2: one-hot sex (2) + sex-missing flag, one-hot site (6) + site-missing flag, "
               "no-metadata flag (all three missing), age/100 (0 when missing), age-missing flag; codes index "
               "the vocabularies (-1 = missing; a known value beyond the one-hot is all zeros)")


class _NumpyOps:
    @staticmethod
    def flag(condition):
        return np.asarray(condition, dtype=np.float32)

    @staticmethod
    def one_hot(code, n):
        return (np.asarray(code)[..., None] == np.arange(n)).astype(np.float32)

    @staticmethod
    def concat(parts):
        return np.concatenate([np.asarray(p, np.float32)[..., None] if np.ndim(p) == np.ndim(parts[0]) - 1
                               else p for p in parts], axis=-1)


class _TFOps:
    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def flag(self, condition):
        return self.tf.cast(condition, self.tf.float32)

    def one_hot(self, code, n):
        return self.tf.one_hot(self.tf.cast(code, self.tf.int32), n)  # out-of-range codes (-1, >= n): zeros

    def concat(self, parts):
        rank = len(parts[0].shape)
        return self.tf.concat([p[..., None] if len(p.shape) == rank - 1 else p for p in parts], axis=-1)


def encode(sex, age, site, ops=None):
    """Codes (scalars or arrays of any leading shape; -1 = missing) -> vectors of META_DIM, float32.

    `ops` None: numpy; `tf_ops()` for TensorFlow tensors (tf.data)."""
    ops = ops or _NumpyOps
    sex_missing, age_missing, site_missing = ops.flag(sex < 0), ops.flag(age < 0), ops.flag(site < 0)
    present = 1.0 - age_missing
    ages = ops.flag(age) * present / 100.0 + 0.0  # + 0.0: a missing age is 0, not -0
    return ops.concat([ops.one_hot(sex, N_SEX), sex_missing, ops.one_hot(site, N_SITE), site_missing,
                       sex_missing * age_missing * site_missing, ages, age_missing])


def tf_ops() -> _TFOps:
    return _TFOps()


def info(used: bool, vocab: dict) -> dict:
    """model.json's metadata section (the loader checks `layout`)."""
    return {"used": bool(used), "layout": LAYOUT, "dim": META_DIM, "columns": list(COLUMNS), "vocab": vocab,
            "n_sex": N_SEX, "n_site": N_SITE, "encoding": DESCRIPTION}


def layout_problem(layout, where: str | Path) -> str | None:
    """Why a model trained on metadata layout `layout` (None: before layouts were recorded) cannot be used."""
    if layout == LAYOUT:
        return None
    was = "layout 1 (12 values, before the missing-metadata indicators)" if layout is None else f"layout {layout}"
    return (f"{where}: trained with metadata {was}; this version feeds layout {LAYOUT} ({META_DIM} values): "
            "re-train the run with this version (or use the version that trained it)")
