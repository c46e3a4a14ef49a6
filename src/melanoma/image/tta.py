"""Prediction passes: plain, the deterministic flips and `train.tta` random augmentations, averaged (TTA)."""

from __future__ import annotations

import keras
import numpy as np

from melanoma.config import TrainConfig
from melanoma.image.augment import FLIP_VIEWS
from melanoma.image.pipeline import Shard, predict_dataset
from melanoma.progress import progress_bar


def prediction_views(tcfg: TrainConfig) -> list[tuple[str, object]]:
    """The passes averaged at prediction time: plain, the deterministic flips, then `tta` random augmentations."""
    views: list[tuple[str, object]] = [("plain", None)]
    if tcfg.tta_flips:
        views += list(FLIP_VIEWS.items())
    views += [(f"tta{i + 1}", tcfg.augment) for i in range(tcfg.tta)]
    return views


def predict(pm: keras.Model, shards: list[Shard], names: np.ndarray, tcfg: TrainConfig,
            stored_size: int | None, batch: int, pad: bool = False) -> dict[str, np.ndarray]:
    """Prediction per name for each view (see prediction_views), aligned through idx.

    `pm` is the prediction_model wrapper: it returns each prediction beside the idx of its own record.
    `pad` fills the last batch up to `batch` with rows of idx -1 (dropped here): a batch split over several
    devices must divide evenly.
    """
    out = {}
    views = prediction_views(tcfg)
    with progress_bar(len(views) * len(names), f"predict ({len(views)} view{'s' * (len(views) > 1)})") as bar:
        for name, view in views:
            out[name] = _predict_view(pm, predict_dataset(shards, names, tcfg.size, stored_size, batch, view,
                                                          meta=tcfg.metadata, pad=pad), len(names), pad)
            bar.update(len(names))
    return out


def _predict_view(pm: keras.Model, ds, n: int, pad: bool) -> np.ndarray:
    """One prediction pass, each prediction put at the row of its own idx (padding rows dropped)."""
    res = pm.predict(ds, verbose=0)
    idx, pred = np.asarray(res["idx"]).reshape(-1), np.asarray(res["pred"], dtype=np.float64).reshape(-1)
    real = idx >= 0 if pad else slice(None)
    idx, pred = idx[real], pred[real]
    if (idx < 0).any() or len(idx) != n or len(np.unique(idx)) != n:
        raise RuntimeError(f"prediction ids do not match the {n} records: "
                           f"{len(idx)} predictions, {len(np.unique(idx))} distinct ids")
    aligned = np.empty(n)
    aligned[idx] = pred
    return aligned


def mean_views(views: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(list(views.values()), axis=0)
