"""The classical lesion mask (no training): Otsu on a darkness + saturation channel, the largest component
away from the corners, holes filled; the whole image when nothing plausible is found.

scikit-image only (it runs in prepare's worker processes, which never import TensorFlow). A lesion is darker
and more saturated than the skin around it; the black vignette of many dermoscopes is dark but grey and sits
in the corners, so components that reach a corner are taken only when nothing else is there.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WORK_SIDE = 256  # masks are found on a view this large (long side), then scaled back: cost independent of size
MIN_SHARE = 0.005  # a lesion smaller than this share of the image is noise: use the whole image
MAX_SHARE = 0.95  # one larger is no separation of lesion from skin: use the whole image


def lesion_channel(rgb: np.ndarray) -> np.ndarray:
    """Per pixel in [0, 1]: high where dark and saturated (a lesion), low on skin."""
    from skimage.color import rgb2gray, rgb2hsv

    x = rgb.astype(np.float32) / 255.0
    return 0.5 * (1.0 - rgb2gray(x)) + 0.5 * rgb2hsv(x)[..., 1]


def classical_mask(img: Image.Image) -> np.ndarray:
    """Boolean lesion mask at the image's size (all True when no lesion is found)."""
    from skimage.filters import gaussian, threshold_otsu

    small = _work_view(img)
    channel = gaussian(lesion_channel(np.asarray(small)), sigma=max(1.0, min(small.size) / 128))
    if float(channel.max() - channel.min()) < 1e-3:  # a flat image: nothing to separate
        return np.ones((img.height, img.width), bool)
    mask = clean_mask(channel > threshold_otsu(channel))
    return upscale(mask, img.size)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """The largest component (preferring those that reach no image corner), holes filled; all True when it is
    implausibly small or large. Shared by the classical method and the trained segmenter's output."""
    from skimage.measure import label
    from skimage.morphology import disk, opening

    mask = opening(mask, disk(max(1, min(mask.shape) // 64)))  # hairs and speckle off
    labels = label(mask, connectivity=1)
    if labels.max() == 0:
        return np.ones_like(mask, bool)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    corners = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    inner = areas.copy()
    inner[list(corners)] = 0
    best = int(np.argmax(inner)) if inner.max() > 0 else int(np.argmax(areas))
    lesion = fill_holes(labels == best)
    share = lesion.mean()
    return lesion if MIN_SHARE <= share <= MAX_SHARE else np.ones_like(mask, bool)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Every background region that does not reach the image border becomes lesion."""
    from skimage.measure import label

    background = label(~mask, connectivity=1)
    border = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    return ~np.isin(background, border[border > 0])  # label 0 is the mask itself: kept


def _work_view(img: Image.Image) -> Image.Image:
    scale = WORK_SIDE / max(img.size)
    if scale >= 1:
        return img.convert("RGB")
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.convert("RGB").resize(size, Image.Resampling.BOX)


def upscale(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask to (width, height) = size, nearest neighbour."""
    if mask.shape[::-1] == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127
