"""The public Kaggle datasets the pipeline knows by name: the competition TFRecords and external training data,
by image side. One table, read by the place detection, `train.sources.external` and `kaggle push`."""

from __future__ import annotations

from pathlib import Path



# Chris Deotte's public TFRecords (the 15+16-file layout `train` reads without a manifest), by image side.
TFRECORD_DATASETS = {size: f"cdeotte/melanoma-{size}x{size}" for size in (128, 192, 256, 384, 512, 768)}


# External training data published beside them, by name (`train.sources.external: [isic2019]`) and image side: the
# one table `train` resolves names with and `kaggle push` attaches from (dataset_sources).
EXTERNAL_DATASETS = {"isic2019": {size: f"cdeotte/isic2019-{size}x{size}" for size in (128, 192, 256, 384, 512, 768)}}


def external_dataset(ref: str, size: int) -> str | None:
    """OWNER/SLUG of a train.sources.external entry: a name of EXTERNAL_DATASETS at `size` (or the nearest published
    side above it), an OWNER/SLUG as it is; None for a folder or URL (nothing to attach)."""
    if ref in EXTERNAL_DATASETS:
        sizes = sorted(EXTERNAL_DATASETS[ref])
        return EXTERNAL_DATASETS[ref][next((s for s in sizes if s >= size), sizes[-1])]
    if "://" in ref or ref.startswith((".", "/", "~")) or ref.count("/") != 1 or Path(ref).exists():
        return None
    return ref
