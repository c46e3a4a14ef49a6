"""`melanoma segment train`: a small U-Net on image/mask pairs, scored by Dice and Jaccard on held-out images.

OUT gets segmenter.keras with segmenter.json (input side, threshold: what `prepare.segmenter` and the
export need), metrics.json, history.csv, predictions.png (held-out images, true and predicted outlines),
config.yaml and run.json. Everything is written in a staging folder and moved in at the end.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import __version__
from melanoma.config import Config, save_run_info
from melanoma.errors import input_error
from melanoma.files import staged_dir, write_csv, write_json
from melanoma.data.lesion import INFO_FILE, MODEL_FILE
from melanoma.segment.data import load_dataset, split
from melanoma.segment.losses import dice_bce, dice_metric, scores

log = logging.getLogger(__name__)
FORMAT = "melanoma-segmenter"


def train_dataset(x: np.ndarray, y: np.ndarray, batch: int, augment: bool, seed: int):
    """Endless shuffled batches of (0-255 float image, 0/1 mask), flipped and transposed together."""
    import tensorflow as tf

    def flip(img, mask):
        both = tf.concat([tf.cast(img, tf.float32), tf.cast(mask, tf.float32)[..., None]], axis=-1)
        both = tf.image.random_flip_left_right(tf.image.random_flip_up_down(both))
        both = tf.cond(tf.random.uniform(()) < 0.5, lambda: tf.transpose(both, (1, 0, 2)), lambda: both)
        return both[..., :3], both[..., 3:]

    def plain(img, mask):
        return tf.cast(img, tf.float32), tf.cast(mask, tf.float32)[..., None]

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat()
    ds = ds.map(flip if augment else plain, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def train_segmenter(cfg: Config, images: str | Path, masks: str | Path, out: str | Path) -> dict:
    """Train, score on the held-out split, write OUT. Returns metrics.json's content."""
    s = cfg.segment
    seed = cfg.seed if s.seed is None else s.seed
    names, x, y = load_dataset(images, masks, s.size)  # bad input stops here, before Keras is imported
    if len(names) < 2:
        raise input_error(images, f"{len(names)} image: at least 2 are needed (one to train, one to score)")
    import keras

    from melanoma.segment.model import build_unet

    train_idx, val_idx = split(len(names), s.val_share, seed)
    keras.utils.set_random_seed(seed)
    model = build_unet(s.size, s.width, s.depth)
    model.compile(optimizer=keras.optimizers.Adam(s.learning_rate), loss=dice_bce(s.dice_weight),
                  metrics=[dice_metric])
    steps = s.steps_per_epoch or max(1, math.ceil(len(train_idx) / s.batch_size))
    log.info("segment: %d images (%d train, %d held out), U-Net %dpx width %d depth %d, %d epochs x %d steps, "
             "backend %s", len(names), len(train_idx), len(val_idx), s.size, s.width, s.depth, s.epochs, steps,
             keras.backend.backend())
    start = time.perf_counter()
    val = (x[val_idx].astype(np.float32), y[val_idx, ..., None].astype(np.float32))
    hist = model.fit(train_dataset(x[train_idx], y[train_idx], s.batch_size, s.augment, seed), epochs=s.epochs,
                     steps_per_epoch=steps, validation_data=val, verbose=2)
    seconds = time.perf_counter() - start
    prob = np.asarray(model.predict(val[0], batch_size=s.batch_size, verbose=0))[..., 0]
    pred = prob > s.threshold
    per_image = scores(y[val_idx], pred)
    metrics = {
        "dice": float(per_image["dice"].mean()), "jaccard": float(per_image["jaccard"].mean()),
        "dice_median": float(np.median(per_image["dice"])), "n_train": int(len(train_idx)),
        "n_heldout": int(len(val_idx)), "heldout": [names[i] for i in val_idx], "seed": seed,
        "epochs": s.epochs, "steps_per_epoch": steps, "train_seconds": round(seconds, 1),
        "backend": keras.backend.backend(),
        "note": "mean over held-out images of per-image Dice and Jaccard at the threshold; split per image",
    }
    info = {"format": FORMAT, "version": __version__, "input_size": s.size, "threshold": s.threshold,
            "width": s.width, "depth": s.depth, "input": "RGB 0-255, stretched to input_size x input_size",
            "dice": metrics["dice"], "jaccard": metrics["jaccard"]}
    out = Path(out)
    with staged_dir(out, "segment") as stage:
        model.save(stage / MODEL_FILE)
        write_json(stage / INFO_FILE, info)
        write_json(stage / "metrics.json", metrics)
        write_csv(stage / "history.csv", pd.DataFrame(hist.history).rename_axis("epoch").reset_index())
        predictions_figure(x[val_idx], y[val_idx], pred, per_image["dice"], names, val_idx, s.figure_images,
                           stage / "predictions.png")
        save_run_info(stage, cfg, "segment", {"dice": metrics["dice"], "jaccard": metrics["jaccard"]})
    log.info("segment: held-out Dice %.3f, Jaccard %.3f (%d images) in %.0f s -> %s", metrics["dice"],
             metrics["jaccard"], len(val_idx), seconds, out)
    return metrics


def predictions_figure(x: np.ndarray, truth: np.ndarray, pred: np.ndarray, dice: np.ndarray, names: list[str],
                       idx: np.ndarray, n: int, path: Path) -> None:
    """Up to n held-out images: the image with the true (green) and predicted (magenta) outlines, the mask."""
    from melanoma.plots import figure, save

    n = min(n, len(x))
    if n == 0:
        return
    fig = figure(2 * 220, n * 220)
    for row in range(n):
        ax = fig.add_subplot(n, 2, 2 * row + 1)
        ax.imshow(x[row])
        ax.contour(truth[row], levels=[0.5], colors="#2ca02c", linewidths=1.2)
        if pred[row].any() and not pred[row].all():
            ax.contour(pred[row], levels=[0.5], colors="#e377c2", linewidths=1.2)
        ax.set_title(f"{names[idx[row]]}  Dice {dice[row]:.2f}", fontsize=8)
        ax2 = fig.add_subplot(n, 2, 2 * row + 2)
        ax2.imshow(pred[row], cmap="gray", vmin=0, vmax=1)
        ax2.set_title("predicted mask", fontsize=8)
        for a in (ax, ax2):
            a.set_axis_off()
    fig.tight_layout()
    save(fig, path)
