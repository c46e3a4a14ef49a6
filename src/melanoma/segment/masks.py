"""`melanoma segment mask`: the lesion mask of every image in a folder, as NAME_segmentation.png (to inspect
what `prepare --lesion` will use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from melanoma.data.images import BadImage, load_rgb
from melanoma.errors import input_error
from melanoma.files import atomic_path, write_json
from melanoma.progress import progress_bar
from melanoma.data.lesion import lesion_mask, resolve_segmenter
from melanoma.segment.data import IMAGE_SUFFIXES, MASK_SUFFIX

# Written first into the output folder: it marks the masks in it as this command's (melanoma.outputs), so a
# re-run may replace them and a folder of other masks (ground truth) is never overwritten.
MARKER = "masks.json"


def write_masks(images: str | Path, out: str | Path, segmenter: str | None = None) -> int:
    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise input_error(images, "not a folder of images")
    files = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise input_error(images, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    model, _ = resolve_segmenter(segmenter, "--segmenter")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MARKER, {"stage": "segment mask", "images": str(images), "segmenter": segmenter,
                              "count": len(files)})
    with progress_bar(len(files), "segment: masks") as bar:
        for p in files:
            try:
                img = load_rgb(p, 1 << 16)[0]  # full resolution: the mask has the image's size
            except BadImage as e:
                raise input_error(p, f"cannot read image: {e}") from None
            mask = (lesion_mask(img, model).astype(np.uint8) * 255)
            with atomic_path(out / f"{p.stem}{MASK_SUFFIX}") as tmp:
                Image.fromarray(mask).save(tmp, format="PNG")
            bar.update(1)
    return len(files)
