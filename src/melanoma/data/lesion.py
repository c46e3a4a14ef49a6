"""The lesion step of the one preprocessing (`melanoma.data.images.stored_jpeg`): mask or crop a decoded
image to its lesion before it is made square and resized, in prepare, predict and serve alike.

The mask comes from a trained segmenter (segmenter.keras + segmenter.json, loaded once per process) or the
classical method; never from a ground-truth mask. Keras is imported only when a segmenter is used, so
prepare's workers stay free of TensorFlow in the classical case.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from melanoma.data.lesion_classical import classical_mask, clean_mask, upscale

LESION_MODES = ("none", "mask", "crop")
MODEL_FILE, INFO_FILE = "segmenter.keras", "segmenter.json"
_LOADED: dict[str, tuple] = {}  # segmenter path -> (model, info, lock): one load per process
_LOAD_LOCK = threading.Lock()


def segmenter_file(path: str | Path) -> Path:
    """A segment-train folder or its segmenter.keras -> the .keras file (raises FileNotFoundError)."""
    path = Path(path)
    model = path / MODEL_FILE if path.is_dir() else path
    if not model.is_file() or not model.with_name(INFO_FILE).is_file():
        raise FileNotFoundError(f"{path}: no {MODEL_FILE} with {INFO_FILE} beside it: give a folder written by "
                                "`melanoma segment train`")
    return model


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lesion_mask(img: Image.Image, segmenter: str | None = None) -> np.ndarray:
    """Boolean mask at the image's size: the segmenter's prediction, else the classical method."""
    return classical_mask(img) if segmenter is None else predicted_mask(img, segmenter)


def predicted_mask(img: Image.Image, segmenter: str) -> np.ndarray:
    """The trained segmenter's mask: input stretched to its side, thresholded, cleaned, scaled back."""
    model, info, lock = _load(segmenter)
    side = int(info["input_size"])
    x = np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32)[None]
    with lock:  # predict and serve preprocess in threads; one model call at a time
        prob = np.asarray(model.predict_on_batch(x))[0, ..., 0]
    return upscale(clean_mask(prob > float(info["threshold"])), img.size)


def _load(segmenter: str) -> tuple:
    with _LOAD_LOCK:
        if segmenter not in _LOADED:
            import keras

            path = segmenter_file(segmenter)
            info = json.loads(path.with_name(INFO_FILE).read_text())
            _LOADED[segmenter] = (keras.saving.load_model(path, compile=False), info, threading.Lock())
        return _LOADED[segmenter]


def apply_lesion(img: Image.Image, mode: str, margin: float = 0.1, segmenter: str | None = None) -> Image.Image:
    """mask: background black; crop: the square box around the lesion plus `margin` x its side on each side,
    clipped to the image; none: unchanged. A mask of the whole image (nothing found) leaves it unchanged."""
    if mode == "none":
        return img
    if mode not in LESION_MODES:
        raise ValueError(f"lesion mode must be one of {LESION_MODES}, got {mode!r}")
    mask = lesion_mask(img, segmenter)
    if mask.all():
        return img
    if mode == "mask":
        return Image.fromarray(np.asarray(img.convert("RGB")) * mask[..., None].astype(np.uint8))
    return img.crop(crop_box(mask, margin))


def crop_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a square around the mask's bounding box, grown by margin x its side on
    each side, then clipped to the image. Square, so that the later centre crop to a square cuts no lesion."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(bottom - top, right - left) * (1 + 2 * margin)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    h, w = mask.shape
    box = (int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2))),
           int(min(w, round(cx + side / 2))), int(min(h, round(cy + side / 2))))
    return box


def resolve_segmenter(path: str | None, key: str = "prepare.segmenter") -> tuple[str | None, str | None]:
    """(absolute path of segmenter.keras, its sha256), or (None, None) for the classical method."""
    from melanoma.errors import ConfigError

    if path is None:
        return None, None
    try:
        model = segmenter_file(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{key}: {e}") from None
    return str(model.resolve()), file_sha256(model)


def lesion_record(settings) -> dict:
    """What manifest.json and model.json say about the lesion step of these ImageSettings."""
    return {"mode": settings.lesion, "margin": settings.lesion_margin,
            "method": "none" if settings.lesion == "none" else ("segmenter" if settings.segmenter else "classical"),
            "segmenter": settings.segmenter, "segmenter_sha256": settings.segmenter_sha256}
