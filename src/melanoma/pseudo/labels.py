"""`melanoma pseudo`: soft-labelled test images as train-only shards (`train.sources.pseudo: DIR` trains on them).

The runs' test predictions are blended (melanoma.blend, joined by image_name, never by row order) and
calibrated into probabilities (`pseudo.calibrate`, fitted on the blended OOF). A test image is kept when its
probability is confidently low or high: p <= 1 - `pseudo.min_confidence` or p >= `pseudo.min_confidence`.
Its record is the test record (image and metadata) as a training record: `soft_target` = p (the label the
loss uses), `target` = round(p), `source` "pseudo", `diagnosis` -1. Shards hold `pseudo.shard_images` records;
manifest.json lists them (split train, fold -1, train_only, source "pseudo"), `pseudo_labels.csv` every kept
image with its label. They enter every fold's training (image/extras.py), never a validation set or the OOF:
the test images are not competition training images.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.config import Config, save_run_info
from melanoma.data.manifest import MANIFEST, PSEUDO, Manifest, Shard, write_manifest
from melanoma.data.schema import AGE, ID, PATIENT, SEX, SITE, TARGET
from melanoma.errors import ConfigError, input_error
from melanoma.files import write_csv

log = logging.getLogger("melanoma.pseudo")

TEST_FIELDS = ("image", ID, PATIENT, SEX, AGE, SITE)


def blended_probabilities(cfg: Config, runs: list[str | Path]) -> pd.DataFrame:
    """image_name, probability: the runs' test predictions blended and calibrated on the blended OOF."""
    from melanoma.blend import blend_runs

    sub, report = blend_runs(runs, None, dataclasses.replace(cfg.blend, calibrate=cfg.pseudo.calibrate))
    log.info("pseudo: blend of %d runs, OOF AUC %.4f, %d test predictions", len(runs),
             report["blended_oof_auc"] or float("nan"), len(sub))
    return sub.rename(columns={TARGET: "probability"})


def select(probs: pd.DataFrame, min_confidence: float) -> pd.DataFrame:
    """The confident rows with their labels: soft_target = p, target = round(p)."""
    p = probs["probability"].to_numpy(dtype=float)
    keep = (p >= min_confidence) | (p <= 1.0 - min_confidence)
    out = probs[keep].reset_index(drop=True)
    return pd.DataFrame({ID: out[ID].astype(str), "soft_target": out["probability"].astype(float),
                         TARGET: (out["probability"] >= 0.5).astype(int)})


def _test_records(tfrec_dir: str, n_folds: int):
    """Parsed test records (dicts of numpy values) of a TFRecords folder, in file order, and the stored side."""
    import tensorflow as tf

    from melanoma.data.records import feature_description
    from melanoma.data.reader import find_shards

    shardset = find_shards(tfrec_dir, n_folds)
    if not shardset.test():
        raise input_error(tfrec_dir, "has no test shards: pseudo-labels need the test images")
    desc = feature_description("test", TEST_FIELDS)
    ds = tf.data.TFRecordDataset([s.path for s in shardset.test()]).map(lambda r: tf.io.parse_single_example(r, desc))
    return ds.as_numpy_iterator(), shardset.image_size


def write_pseudo(cfg: Config, runs: list[str | Path], tfrec_dir: str, out: str | Path) -> dict[str, Any]:
    """Blend, select, write the shards, manifest.json, pseudo_labels.csv and the run info. Returns the summary."""
    out = Path(out)
    if (out / MANIFEST).exists():
        raise ConfigError(f"{out} already holds pseudo-labels: choose another --out")
    chosen = select(blended_probabilities(cfg, runs), cfg.pseudo.min_confidence)
    if chosen.empty:
        raise ConfigError(f"pseudo: no test image is confident at pseudo.min_confidence={cfg.pseudo.min_confidence}: "
                          "lower it")
    import tensorflow as tf  # only once the runs are read and valid: bad predictions never wait for it

    from melanoma.data.records import serialize_example, shard_name
    labels = chosen.set_index(ID)
    records, image_size = _test_records(str(tfrec_dir), cfg.n_folds)
    out.mkdir(parents=True, exist_ok=True)
    shards, batch, batch_pos, written = [], [], [], set()

    def flush():
        name = shard_name("train", len(shards), len(batch))
        tmp = out / f".tmp-{name}"
        with tf.io.TFRecordWriter(str(tmp)) as w:
            for rec in batch:
                w.write(rec)
        os.replace(tmp, out / name)
        shards.append(Shard(str(out / name), "train", -1, len(batch), True, sum(batch_pos), "pseudo"))
        batch.clear()
        batch_pos.clear()

    for ex in records:
        name = ex[ID].decode()
        if name not in labels.index:
            continue
        row = labels.loc[name]
        values = {k: ex[k] for k in TEST_FIELDS}
        values.update({"diagnosis": -1, TARGET: int(row[TARGET]), "soft_target": float(row["soft_target"]),
                       "source": "pseudo"})
        batch.append(serialize_example(values, "train"))
        batch_pos.append(int(row[TARGET]))
        written.add(name)
        if len(batch) == cfg.pseudo.shard_images:
            flush()
    if batch:
        flush()
    missing = sorted(set(labels.index) - written)
    if missing:
        raise input_error(tfrec_dir, f"lacks {len(missing)} test image(s) the runs predicted, e.g. {missing[0]}: "
                                     "were the runs trained on these TFRecords?")
    write_csv(out / "pseudo_labels.csv", chosen)
    save_run_info(out, cfg, "pseudo", {"runs": [str(r) for r in runs], "tfrecords": str(tfrec_dir)})
    write_manifest(Manifest(str(out), tuple(shards), image_size, cfg.n_folds, PSEUDO,  # last: marks it complete
                            details={"kind": "pseudo", "min_confidence": cfg.pseudo.min_confidence}))
    summary = {"images": len(chosen), "positives": int(chosen[TARGET].sum()),
               "mean_soft_target": float(np.mean(chosen["soft_target"])), "shards": len(shards), "out": str(out)}
    log.info("pseudo: %d confident test images (%d labelled malignant) in %d shards -> %s", summary["images"],
             summary["positives"], summary["shards"], out)
    return summary
