"""The error gallery: the most confident false negatives and false positives of a run's OOF predictions, as
thumbnails read from the TFRecords, each with its Grad-CAM heat map from the weights of the fold that
predicted it (foldK/best.weights.h5, else last.weights.h5). Without records or weights it degrades: no
thumbnails or no heat maps, and a note that says why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from melanoma.data.schema import AGE, ID, SEX, SITE, TARGET
from melanoma.files import read_json
from melanoma.report.figures import gallery_card
from melanoma.report.inputs import Run

log = logging.getLogger(__name__)
WEIGHTS = ("best.weights.h5", "last.weights.h5")


def _reader_errors() -> tuple[type[BaseException], ...]:
    import tensorflow as tf

    from melanoma.errors import MelanomaError

    return (MelanomaError, OSError, ValueError, tf.errors.OpError)


def pick(oof: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k positives scored lowest (false negatives) and the k negatives scored highest (false positives)."""
    pos = oof[oof[TARGET] == 1].nsmallest(k, "pred").assign(kind="false negative")
    neg = oof[oof[TARGET] == 0].nlargest(k, "pred").assign(kind="false positive")
    return pd.concat([pos, neg], ignore_index=True)


def records_by_name(tfrec_dir: str, names: list[str], n_folds: int) -> tuple[dict[str, dict], int | None]:
    """name -> {"jpeg": bytes, and the metadata codes} for the named training images, and the stored size."""
    import tensorflow as tf

    from melanoma.image.inputs import META_FIELDS
    from melanoma.data.reader import find_shards, parse_fn, read_records as records

    shardset = find_shards(str(tfrec_dir), n_folds)
    shards = [s.path for s in shardset.validation()]
    wanted = tf.constant(sorted(set(names)))
    parse = parse_fn("train", ("image", ID) + META_FIELDS)
    ds = records(shards, deterministic=True).map(parse).filter(lambda ex: tf.reduce_any(tf.equal(ex[ID], wanted)))
    found = {}
    for ex in ds.as_numpy_iterator():
        found[ex[ID].decode()] = {"jpeg": ex["image"], **{f: int(ex[f]) for f in META_FIELDS}}
    return found, shardset.image_size


def decode(jpeg: bytes, size: int | None = None) -> np.ndarray:
    """float32 (H, W, 3) in [0, 255], resized to size x size when given (as the model saw it)."""
    import tensorflow as tf

    img = tf.io.decode_jpeg(jpeg, channels=3)
    if size is not None and tuple(img.shape[:2]) != (size, size):
        img = tf.image.resize(img, [size, size], antialias=True)
    return tf.cast(img, tf.float32).numpy()


def _meta_vector(rec: dict) -> np.ndarray:
    from melanoma.data.metadata import encode

    return encode(*(np.int64(rec[k]) for k in (SEX, AGE, SITE)))


def heat_maps(run: Run, rows: pd.DataFrame, recs: dict[str, dict]) -> tuple[dict[str, np.ndarray], str | None]:
    """name -> heat map for the rows whose fold weights exist, and a note on what is missing (None: nothing)."""
    if run.stage != "train":
        return {}, f"no heat maps: a {run.stage} run has no image model of its own"
    train = run.config.get("train") or {}
    if "model" not in train or "size" not in train:
        return {}, "no heat maps: the run's config.yaml does not name its model and size"
    from melanoma.image.heads import head_classes, residual_fusion
    from melanoma.image.models import build_model
    from melanoma.data.metadata import META_DIM, layout_problem
    from melanoma.report.gradcam import GradCAM

    if (train.get("meta") or {}).get("enabled"):
        info = read_json(run.path / "run.json") if (run.path / "run.json").is_file() else {}
        problem = layout_problem(info.get("metadata_layout"), run.path)
        if problem:
            return {}, f"no heat maps: {problem}"

    maps: dict[str, np.ndarray] = {}
    missing = []
    for fold, part in rows.groupby("fold"):
        weights = next((run.path / f"fold{int(fold)}" / w for w in WEIGHTS
                        if (run.path / f"fold{int(fold)}" / w).is_file()), None)
        names = [n for n in part[ID] if n in recs]
        if weights is None:
            missing.append(int(fold))
            continue
        if not names:
            continue
        meta = bool((train.get("meta") or {}).get("enabled"))
        fusion = (train.get("meta") or {}).get("fusion", "joint")
        head = SimpleNamespace(head=train.get("head", "binary"), meta=SimpleNamespace(enabled=meta, fusion=fusion),
                               class_map=train.get("class_map", "winners9"))
        outputs, column = head_classes(head)
        # Residual metadata: the prediction column sees the image through a stop-gradient; its image-only column
        # (1) is what the image contributes, and what the heat map explains.
        column = 1 if residual_fusion(head) else column
        model = build_model(train["model"], int(train["size"]), None, float(train.get("dropout", 0.2)),
                            meta_dim=META_DIM if meta else 0, classes=outputs, meta_fusion=fusion)
        model.load_weights(str(weights))
        images = np.stack([decode(recs[n]["jpeg"], int(train["size"])) for n in names])
        vectors = np.stack([_meta_vector(recs[n]) for n in names]) if meta else None
        _, heat = GradCAM(model, column or 0)(images, vectors)
        maps.update(zip(names, heat))
    note = None
    if missing:
        note = f"no heat maps for fold(s) {', '.join(map(str, missing))}: the run's fold weights are absent"
    return maps, note


def gallery(run: Run, meta: pd.DataFrame, tfrec_dir: str | None, n_folds: int, k: int, gradcam: bool,
            out_dir: Path) -> dict[str, Any]:
    """Cards (PNG paths relative to the report folder) and notes for one run."""
    rows = pick(run.oof, k)
    result: dict[str, Any] = {"cards": [], "notes": []}
    if not len(rows):
        return result
    recs: dict[str, dict] = {}
    if tfrec_dir is None:
        result["notes"].append("no thumbnails: no TFRecords folder (paths.tfrecords)")
    else:
        try:
            recs, _ = records_by_name(tfrec_dir, list(rows[ID]), n_folds)
        except _reader_errors() as e:  # a missing folder or a bad shard costs the thumbnails, not the report
            result["notes"].append(f"no thumbnails: cannot read the TFRecords in {tfrec_dir} ({e})")
    maps: dict[str, np.ndarray] = {}
    if recs and gradcam:
        try:
            maps, note = heat_maps(run, rows, recs)
        except (ValueError, OSError, KeyError) as e:
            maps, note = {}, f"no heat maps: {e}"
        if note:
            result["notes"].append(note)
    elif recs:
        result["notes"].append("no heat maps: report.gradcam is off")
    for i, r in enumerate(rows.itertuples(index=False)):
        name = getattr(r, ID)
        info = meta.loc[name] if name in meta.index else None
        card = {"kind": r.kind, "image_name": name, "score": float(r.pred),
                "fold": None if pd.isna(r.fold) else int(r.fold), "png": None, "heat_map": name in maps}
        for key, col in (("sex", SEX), ("age", AGE), ("site", SITE)):
            v = None if info is None else info.get(col)
            card[key] = None if v is None or (isinstance(v, float) and np.isnan(v)) else (
                float(v) if key == "age" else str(v))
        if name in recs:
            image = np.clip(decode(recs[name]["jpeg"]), 0, 255).astype(np.uint8)
            heat = maps.get(name)
            if heat is not None and heat.shape != image.shape[:2]:
                import keras

                heat = keras.ops.convert_to_numpy(keras.ops.image.resize(
                    heat[..., None].astype("float32"), image.shape[:2]))[..., 0]
            rel = Path("gallery") / f"{run.label}-{i:02d}-{name}.png"
            gallery_card(image, heat, f"{r.kind}: {name}, score {r.pred:.3f}", out_dir / rel)
            card["png"] = str(rel)
        result["cards"].append(card)
    missing = sum(c["png"] is None for c in result["cards"])
    if recs and missing:
        result["notes"].append(f"{missing} image(s) not found in the TFRecords")
    return result
