"""The model's head: `train.head: binary` (one sigmoid unit: melanoma) or `diagnosis` (a softmax over a class map).

A diagnosis head learns from the records' `diagnosis` codes, mapped to the classes of `train.class_map`; its
melanoma column is the one output used downstream (oof.csv, test_pred.csv, blend, report, export), so every
later stage is the same for both heads. The record's `target` always wins over its diagnosis: target 1 is the
melanoma class, and a record whose diagnosis says melanoma with target 0 goes to the map's benign fallback. So
the melanoma column's label is exactly `target`, and the validation AUC (checkpoint choice) is melanoma vs rest.

Codes -> names: our shards' manifest (data/manifest.py) records the diagnosis vocabulary (VOCABULARIES first,
then the other names seen, e.g. ISIC 2019's, sorted); the public Kaggle TFRecords, which have no manifest, use
the order of VOCABULARIES (their label encoding). A code missing (-1) reads as "unknown".

This module imports no TensorFlow or Keras at load time (config checks and `ablate` import it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from melanoma.data.manifest import Manifest
from melanoma.data.schema import DIAGNOSIS, ID, TARGET

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassMap:
    name: str
    classes: tuple[str, ...]  # softmax column order
    members: dict[str, tuple[str, ...]]  # class -> the diagnosis names (lower case) it takes
    default: str  # class of any diagnosis not listed (and of a missing one)
    fallback: str  # class of a record with target 0 whose diagnosis maps to melanoma

    @property
    def melanoma(self) -> int:
        return self.classes.index("melanoma")

    def class_of(self, diagnosis: str | None) -> int:
        name = (diagnosis or "unknown").strip().lower()
        for cls, names in self.members.items():
            if name in names:
                return self.classes.index(cls)
        return self.classes.index(self.default)


_KERATOSES = ("seborrheic keratosis", "benign keratosis", "bkl", "lichenoid keratosis", "solar lentigo",
              "lentigo nos")

# ISIC 2017 part 3: melanoma, nevus, seborrheic keratosis. The benign keratoses (ISIC 2019's BKL and the 2020
# keratoses and lentigines) join seborrheic keratosis; every other diagnosis, unknown and missing included
# (also ISIC 2019's BCC, SCC, AK, DF, VASC with target 0), is the "nevus" class, read as nevus-or-other benign:
# nothing is dropped, so the training set is the same as the binary head's.
ISIC2017 = ClassMap("isic2017", ("melanoma", "nevus", "seborrheic keratosis"),
                    {"melanoma": ("melanoma", "mel"), "seborrheic keratosis": _KERATOSES}, "nevus", "nevus")

# The nine classes of the 1st-place SIIM-ISIC 2020 solution (Ha, Liu, Liu; "bo-liu"), as in its get_df
# (haqishen/SIIM-ISIC-Melanoma-Classification-1st-Place-Solution, dataset.py, out_dim == 9): 2020 seborrheic
# keratosis, lichenoid keratosis, solar lentigo and lentigo NOS -> BKL; cafe-au-lait macule and atypical
# melanocytic proliferation -> unknown; 2020's own "unknown" (most of its images, benign) stays a class of its
# own, `unknown`; ISIC 2019 (with 2018) keeps AK, BCC, BKL, DF, SCC, VASC, MEL -> melanoma, NV -> nevus. Column
# order is theirs (sorted names), so melanoma is column 6 as their mel_idx.
WINNERS9 = ClassMap("winners9", ("AK", "BCC", "BKL", "DF", "SCC", "VASC", "melanoma", "nevus", "unknown"),
                    {"melanoma": ("melanoma", "mel"), "nevus": ("nevus", "nv"), "BKL": _KERATOSES,
                     "AK": ("actinic keratosis", "ak", "akiec"), "BCC": ("basal cell carcinoma", "bcc"),
                     "DF": ("dermatofibroma", "df"), "VASC": ("vascular lesion", "vasc"),
                     "SCC": ("squamous cell carcinoma", "scc"),
                     "unknown": ("unknown", "unk", "cafe-au-lait macule", "atypical melanocytic proliferation")},
                    "unknown", "unknown")

CLASS_MAPS: dict[str, ClassMap] = {m.name: m for m in (ISIC2017, WINNERS9)}


def head_classes(tcfg) -> tuple[int, int | None]:
    """(classes, melanoma column) of the model the train config builds: (1, None) for the binary head; (1, 0)
    for the binary head with residual metadata fusion, whose model outputs [with metadata, image only]."""
    if tcfg.head == "binary":
        return 1, (0 if residual_fusion(tcfg) else None)
    cmap = CLASS_MAPS[tcfg.class_map]
    return len(cmap.classes), cmap.melanoma


def residual_fusion(tcfg) -> bool:
    """Whether the model joins the metadata as a residual on an image-only output (train.meta.fusion)."""
    return bool(tcfg.meta.enabled) and tcfg.meta.fusion == "residual" and tcfg.head == "binary"


def every_column(loss):
    """The binary loss applied to each output column against the one target (the residual metadata head's
    [with metadata, image only]), averaged: per-sample values, so class weights apply as usual."""
    import keras

    class EveryColumn(keras.losses.Loss):
        def __init__(self):
            super().__init__(name=f"{loss.name}_every_column", reduction=loss.reduction)

        def call(self, y_true, y_pred):
            y_true = keras.ops.broadcast_to(keras.ops.cast(y_true, y_pred.dtype), keras.ops.shape(y_pred))
            return loss.call(y_true, y_pred)

    return EveryColumn()


@dataclass(frozen=True)
class Labels:
    """A class map applied to one diagnosis vocabulary: code -> class, and the target override."""

    cmap: ClassMap
    table: np.ndarray  # int32, class of code c at c + 1; entry 0 is the missing code -1
    fields = (DIAGNOSIS,)  # the record fields one_hot reads besides target

    @classmethod
    def of(cls, cmap: ClassMap, vocab: list[str]) -> Labels:
        table = np.array([cmap.class_of(None)] + [cmap.class_of(v) for v in vocab], dtype=np.int32)
        return cls(cmap, table)

    @property
    def n(self) -> int:
        return len(self.cmap.classes)

    def classes(self, codes: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Class index per record (numpy): the same rule as `one_hot` (counts, class weights, tests)."""
        codes = np.asarray(codes, dtype=np.int64)
        inside = (codes >= -1) & (codes < len(self.table) - 1)
        cls = np.where(inside, self.table[np.clip(codes + 1, 0, len(self.table) - 1)], self.table[0])
        mel, fallback = self.cmap.melanoma, self.cmap.classes.index(self.cmap.fallback)
        cls = np.where(np.asarray(targets) == 1, mel, np.where(cls == mel, fallback, cls))
        return cls.astype(np.int64)

    def one_hot(self, ex: dict):
        """The float one-hot label of a parsed record (needs its diagnosis and target), in TensorFlow ops."""
        import tensorflow as tf

        table = tf.constant(self.table)
        code = tf.cast(ex[DIAGNOSIS], tf.int32)
        inside = tf.logical_and(code >= -1, code < len(self.table) - 1)
        cls = tf.where(inside, tf.gather(table, tf.clip_by_value(code + 1, 0, len(self.table) - 1)), table[0])
        mel, fallback = self.cmap.melanoma, self.cmap.classes.index(self.cmap.fallback)
        cls = tf.where(tf.equal(ex[TARGET], 1), mel, tf.where(tf.equal(cls, mel), fallback, cls))
        y = tf.one_hot(cls, self.n, dtype=tf.float32)
        if "soft_target" in ex:  # a pseudo-label p: p on melanoma, the rest on the record's benign class
            p = tf.cast(ex["soft_target"], tf.float32)[..., None]  # one record or a batch of them
            rest = tf.one_hot(tf.where(tf.equal(cls, mel), fallback, cls), self.n, dtype=tf.float32)
            y = tf.where(p >= 0, p * tf.one_hot(mel, self.n, dtype=tf.float32) + (1 - p) * rest, y)
        return y


    def without_diagnosis(self, ds):
        """Records of another data set (train.sources: external, pseudo, synthetic; image/extras.py), whose
        diagnosis codes are not in this vocabulary: read as missing, so target 1 is melanoma and the rest the map's
        default."""
        import tensorflow as tf

        return ds.map(lambda ex: {**ex, DIAGNOSIS: tf.constant(-1, tf.int64)},
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)


def labels_for(tcfg, manifest: Manifest) -> Labels | None:
    """The diagnosis head's labels for the records of this Manifest; None for the binary head. Codes -> names:
    the manifest's diagnosis vocabulary, else the public TFRecords' (VOCABULARIES)."""
    if tcfg.head == "binary":
        return None
    vocab = manifest.vocabulary(DIAGNOSIS)
    labels = Labels.of(CLASS_MAPS[tcfg.class_map], vocab)
    mapping = {v: labels.cmap.classes[labels.table[i + 1]] for i, v in enumerate(vocab)}
    log.info("train: diagnosis head, class map %s (%s); diagnoses -> classes: %s", labels.cmap.name,
             ", ".join(labels.cmap.classes), ", ".join(f"{k} -> {v}" for k, v in mapping.items()))
    return labels


def read_classes(shards: list, labels: Labels) -> np.ndarray:
    """Class index of every record in training shards, read without decoding images (diagnosis, target)."""
    import tensorflow as tf

    from melanoma.data.reader import parse_fn, read_records

    if not shards:
        return np.zeros(0, dtype=np.int64)
    ds = read_records([s.path for s in shards], deterministic=True).map(
        parse_fn("train", (ID, DIAGNOSIS, TARGET)), num_parallel_calls=tf.data.AUTOTUNE)
    codes, targets = [], []
    for part in ds.batch(8192).as_numpy_iterator():
        codes.append(part[DIAGNOSIS])
        targets.append(part[TARGET])
    if not codes:
        return np.zeros(0, dtype=np.int64)
    return labels.classes(np.concatenate(codes), np.concatenate(targets))


def class_counts(classes: np.ndarray, n: int) -> tuple[int, ...]:
    return tuple(int(c) for c in np.bincount(np.asarray(classes, dtype=np.int64), minlength=n)[:n])


def diagnosis_plans(shardset, folds: list[int], labels: Labels, tcfg) -> dict:
    """Each fold's Imbalance from the class counts of its training pool (the shards `train(exclude=[fold])`
    reads: the other folds and the train-only shards not tagged with this fold)."""
    from melanoma.image.imbalance import imbalance

    per_shard = {sh: class_counts(read_classes([sh], labels), labels.n) for sh in shardset.train()}
    plans = {}
    for fold in folds:
        counts = np.sum([per_shard[sh] for sh in shardset.train(exclude=[fold])], axis=0).astype(int)
        n_pos = int(counts[labels.cmap.melanoma])
        plans[fold] = imbalance(n_pos, int(counts.sum()) - n_pos, tcfg, tuple(int(c) for c in counts),
                                labels.cmap.melanoma)
    return plans


def head_loss(tcfg):
    """Categorical cross-entropy with the train config's label smoothing (focal: its categorical form)."""
    import keras

    if tcfg.imbalance.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=tcfg.imbalance.focal_gamma,
                                                         label_smoothing=tcfg.imbalance.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=tcfg.imbalance.label_smoothing)
