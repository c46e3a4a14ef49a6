"""`melanoma augment-preview`: a PNG grid of training images and augmented copies of each.

One row per image: the decoded original first, then `copies` augmented versions drawn with the configured
augmentation (cfg.train.augment at cfg.train.size), so a setting can be checked by eye before a long run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from melanoma.config import Config
from melanoma.data.schema import ID
from melanoma.errors import ConfigError, input_error
from melanoma.plots import DPI, PREVIEW_TITLE, figure, save
from melanoma.image.inputs import augment_batch
from melanoma.data.reader import read_records, decode_image, find_shards, parse_fn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of the grid: cells of `cell` px, `gap` px separators, a label band above each row."""

    rows: int
    cols: int
    cell: int
    gap: int = 2
    label: int = 0  # height of the name band above each row (0: no labels)

    @property
    def width(self) -> int:
        return self.cols * self.cell + (self.cols + 1) * self.gap

    @property
    def height(self) -> int:
        return self.rows * (self.cell + self.label) + (self.rows + 1) * self.gap

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a cell, as PIL's crop takes it."""
        x = self.gap + col * (self.cell + self.gap)
        y = self.gap + row * (self.cell + self.label + self.gap) + self.label
        return x, y, x + self.cell, y + self.cell


def label_font():
    """The names' font: matplotlib's default family at 7 pt."""
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=7)


def label_height(font) -> int:
    """Band height in pixels that fits a line of text in `font` at the figures' DPI."""
    return int(round(font.get_size_in_points() * DPI / 72)) + 4


def read_originals(tfrec_dir: str | Path, n: int, size: int, n_folds: int) -> tuple[np.ndarray, list[str]]:
    """The first `n` training images (deterministic read order) as uint8 (n, size, size, 3), and their names."""
    shardset = find_shards(str(tfrec_dir), n_folds)
    shards = shardset.train()
    if not shards:
        raise input_error(tfrec_dir, "no training shards to preview (run `melanoma prepare`)")
    parse = parse_fn("train", ("image", ID))
    # Deterministic interleave of the sorted shards: the same images in the same order on every run.
    ds = read_records([s.path for s in shards], deterministic=True).take(n).map(parse).map(lambda ex: (decode_image(ex["image"], size, shardset.image_size), ex[ID]))
    images, names = [], []
    for img, name in ds.as_numpy_iterator():
        images.append(img)
        names.append(name.decode())
    if not images:
        raise input_error(tfrec_dir, "the training shards hold no records")
    return np.stack(images), names


def augment_preview(cfg: Config, tfrec_dir: str | Path, out: str | Path, n: int = 8, copies: int = 4,
                    seed: int | None = None, labels: bool = True) -> Path:
    """Write the grid PNG to `out` (atomically) and return its path."""
    if n < 1 or copies < 0:
        raise ConfigError(f"augment-preview needs n >= 1 and copies >= 0, got n={n}, copies={copies}")
    size = cfg.train.size
    originals, names = read_originals(tfrec_dir, n, size, cfg.n_folds)
    # Seed TensorFlow's global generator: augment_batch draws unseeded ops, which then repeat run to run.
    tf.random.set_seed(cfg.seed if seed is None else seed)
    columns = [originals]
    batch = tf.constant(originals)
    for _ in range(copies):
        columns.append(augment_batch(batch, cfg.train.augment, size).numpy())

    font = label_font()
    layout = GridLayout(len(names), 1 + copies, size, label=label_height(font) if labels else 0)
    fig = figure(layout.width, layout.height)
    for r, name in enumerate(names):
        for c, col in enumerate(columns):
            # Round, not truncate: an unaugmented copy then matches the original pixel for pixel. figimage
            # places the pixels unresampled; its origin is the bottom-left corner of the figure.
            pixels = np.clip(np.rint(col[r]), 0, 255).astype(np.uint8)
            left, top, _, bottom = layout.cell_box(r, c)
            fig.figimage(pixels, xo=left, yo=layout.height - bottom, origin="upper")
        if labels:
            left, top = layout.cell_box(r, 0)[:2]
            fig.text(left / layout.width, 1 - (top - 2) / layout.height, name, fontproperties=font,
                     va="bottom", ha="left")
    out = save(fig, Path(out), PREVIEW_TITLE)
    log.info("augment-preview: %d images x %d augmented copies at %dpx -> %s", len(names), copies, size, out)
    return out
