"""Synthetic melanomas into train-only shards, and the manifest (data/manifest.py) that `train` reads them by.

Naming (the source travels with the record): image_name `synth_<k>_<source image_name>`, `source`
`synthetic:<k>`, target 1, diagnosis melanoma, and the source's patient, sex, age, site and original size.
Pixels go through `prepare`'s own encode (data/images.py: Lanczos resize to the stored side, JPEG at the stored
quality), so the train reader decodes them exactly as it decodes real images: uint8 JPEG -> float [0, 255].

Shards are `OUT/fold<k>/synth<k>-<NN>-<COUNT>.tfrec`, listed in `OUT/manifest.json` as extra training data
reads them (image/sources.py): split "train", fold k, train_only, source "synthetic:k" (trains fold k only).
Its format "melanoma-synthetic" makes `find_shards` refuse the folder as `--tfrecords`, where fold-k shards
would mean "every fold but k".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from melanoma.data.images import ImageSettings, stored_jpeg
from melanoma.data.records import serialize_example
from melanoma.data.schema import AGE, ID, PATIENT, SEX, SITE
from melanoma.data.manifest import SYNTHETIC, Manifest, Shard, load_manifest, read_manifest, write_manifest
from melanoma.files import atomic_path
from melanoma.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT = SYNTHETIC
PREFIX = "synth"


def synthetic_name(fold: int, source: str) -> str:
    return f"{PREFIX}_{fold}_{source}"


def source_of(name: str) -> tuple[int, str]:
    """(fold, source image_name) of a synthetic image_name."""
    prefix, fold, source = name.split("_", 2)
    if prefix != PREFIX:
        raise ValueError(f"{name!r} is not a synthetic image name ({PREFIX}_<fold>_<source>)")
    return int(fold), source


def synthetic_tag(fold: int) -> str:
    return f"synthetic:{fold}"


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 pixels."""
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


class ShardWriter:
    """Serialized records buffered up to `shard_bytes`, each shard written to a temporary name and renamed."""

    def __init__(self, folder: Path, fold: int, shard_bytes: float):
        self.folder, self.fold, self.shard_bytes = folder, fold, shard_bytes
        self.buffer: list[bytes] = []
        self.size = 0
        self.shards: list[dict] = []

    def add(self, record: bytes) -> None:
        self.buffer.append(record)
        self.size += len(record)
        if self.size >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        import tensorflow as tf

        if not self.buffer:
            return
        name = f"{PREFIX}{self.fold}-{len(self.shards):02d}-{len(self.buffer)}.tfrec"
        with atomic_path(self.folder / name) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in self.buffer:
                writer.write(record)
        self.shards.append({"file": f"{self.folder.name}/{name}", "split": "train", "fold": self.fold,
                            "count": len(self.buffer), "positives": len(self.buffer),
                            "train_only": True, "source": synthetic_tag(self.fold)})
        self.buffer, self.size = [], 0


def write_fold(g_ab, batches, fold_dir: Path, fold: int, settings: ImageSettings, diagnosis: int,
               shard_bytes: float, total: int) -> tuple[list[dict], list[dict]]:
    """Translate every batch with the benign -> malignant generator and write the records.
    Returns (shards, index rows: image_name, source_image)."""
    from melanoma.synth.loop import inference

    translate = inference(g_ab)
    writer = ShardWriter(fold_dir, fold, shard_bytes)
    rows = []
    with progress_bar(total, f"synth: fold {fold} translate") as bar:
        for batch in batches.as_numpy_iterator():
            fakes = to_uint8(translate(batch["pixels"]))
            for i, pixels in enumerate(fakes):
                source = batch[ID][i].decode()
                name = synthetic_name(fold, source)
                writer.add(serialize_example({
                    "image": stored_jpeg(Image.fromarray(pixels), settings), ID: name,
                    PATIENT: batch[PATIENT][i], SEX: batch[SEX][i], AGE: batch[AGE][i], SITE: batch[SITE][i],
                    "diagnosis": diagnosis, "target": 1, "width": batch["width"][i], "height": batch["height"][i],
                    "source": synthetic_tag(fold)}, "train"))
                rows.append({ID: name, "source_image": source, "fold": fold})
            bar.update(len(fakes))
    writer.flush()
    return writer.shards, rows


def update_index(out: Path, header: dict, fold: int, fold_info: dict) -> None:
    """Add (or replace) fold k's entry in OUT/manifest.json; the shard list is rebuilt from the folds."""
    old = load_manifest(str(out))
    details = {k: v for k, v in header.items() if k not in ("image_size", "n_folds")}
    folds = {**(old.details.get("folds", {}) if old is not None else {}), str(fold): fold_info}
    shards = [Shard.from_entry(str(out), s) for _, f in sorted(folds.items(), key=lambda kv: int(kv[0]))
              for s in f["shards"]]
    write_manifest(Manifest(str(out), tuple(shards), header["image_size"], header["n_folds"], FORMAT,
                            details={**details, "folds": folds}))


def read_index(out: Path) -> dict:
    """OUT/manifest.json's content (what `melanoma synth` returns)."""
    return read_manifest(str(out)).to_dict()
