"""The ISIC 2017/2018 lesion-segmentation layout: IMAGES/ISIC_x.jpg beside MASKS/ISIC_x_segmentation.png.

Pairs are checked before anything is trained: an image without its mask, a mask without its image, a mask
not named after an image, an unreadable file or a mask of another size stops with one line naming the file.
Images and masks are stretched to the network's side together (the prediction is stretched back the same way).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from melanoma.errors import input_error
from melanoma.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = "_segmentation.png"
IGNORED = ("_superpixels",)  # ISIC 2017 ships superpixel maps beside its images


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise input_error(folder, "not a folder: --images needs the folder of ISIC_x.jpg images")
    found = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.stem.endswith(IGNORED) and not p.name.endswith(MASK_SUFFIX)}
    if not found:
        raise input_error(folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return found


def _masks(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise input_error(folder, "not a folder: --masks needs the folder of ISIC_x_segmentation.png masks")
    found = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # LICENSE, ATTRIBUTION.txt and the like
        if not p.name.endswith(MASK_SUFFIX):
            raise input_error(p, f"is not named IMAGE{MASK_SUFFIX}: rename it after its image or move it out")
        found[p.name[:-len(MASK_SUFFIX)]] = p
    return found


def pair_files(images: str | Path, masks: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, image, mask) for every image, sorted by name; every image needs a mask and every mask an image."""
    imgs, msks = _images(Path(images)), _masks(Path(masks))
    for name, path in imgs.items():
        if name not in msks:
            raise input_error(path, f"has no mask {Path(masks) / (name + MASK_SUFFIX)}: every image needs one")
    for name, path in msks.items():
        if name not in imgs:
            raise input_error(path, f"has no image {name}.jpg in {images}: mismatched names")
    return [(n, imgs[n], msks[n]) for n in sorted(imgs)]


def load_pair(image: Path, mask: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB (size, size, 3), bool mask (size, size)), both stretched to size."""
    try:
        with Image.open(image) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise input_error(image, f"cannot read image: {e}") from None
    try:
        with Image.open(mask) as m:
            grey = m.convert("L")
    except (OSError, ValueError) as e:
        raise input_error(mask, f"cannot read mask: {e}") from None
    if grey.size != rgb.size:
        raise input_error(mask, f"is {grey.width}x{grey.height}, its image {image.name} {rgb.width}x{rgb.height}: "
                                "a mask must have its image's size")
    x = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
    y = np.asarray(grey.resize((size, size), Image.Resampling.NEAREST)) > 127
    return x, y


def load_dataset(images: str | Path, masks: str | Path, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every pair, checked and loaded: names, images (N, size, size, 3) uint8, masks (N, size, size) bool."""
    pairs = pair_files(images, masks)
    xs = np.empty((len(pairs), size, size, 3), np.uint8)
    ys = np.empty((len(pairs), size, size), bool)
    with progress_bar(len(pairs), "segment: load") as bar:
        for i, (_, image, mask) in enumerate(pairs):
            xs[i], ys[i] = load_pair(image, mask, size)
            bar.update(1)
    return [n for n, _, _ in pairs], xs, ys


def split(n: int, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-image split (the segmentation sets have no patient ids): (train, held-out) indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_share)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
