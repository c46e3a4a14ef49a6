"""Robust image loading, resizing, encoding and a difference hash, in worker processes without TensorFlow.

Everything a worker of `prepare` or `check` runs lives here and imports only PIL and numpy, so spawned
workers start in well under a second. A bad image never raises out of a worker: `process_chunk` records the
reason per image and the parent decides (`--on-bad-image fail` stops with a line naming the CSV row, `skip`
logs it and leaves the image out).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
RESIZE_MODES = ("crop", "pad", "stretch")


class BadImage(ValueError):
    """An image that cannot be used; the message says why (the caller adds the file and CSV row)."""


@dataclass(frozen=True)
class ImageSettings:
    size: int  # stored side; also the draft target, so decoding never goes below it
    resize: str = "crop"
    quality: int = 95
    max_pixels: int = 200_000_000
    encode: bool = True  # False: only hash (the `check` pass)
    lesion: str = "none"  # none | mask | crop: melanoma.data.lesion.apply_lesion before the resize
    lesion_margin: float = 0.1
    segmenter: str | None = None  # segmenter.keras (None: the classical mask)
    segmenter_sha256: str | None = None  # part of the key: another segmenter redoes the chunks

    def key(self) -> str:
        # "v2": hash and quality flags from the fixed-size view (chunks of older runs are redone)
        key = f"v2/{self.size}/{self.resize}/{self.quality}/{self.max_pixels}/{int(self.encode)}"
        if self.lesion != "none":  # appended only then: keys (and resumable work) without it are unchanged
            key += f"/{self.lesion}/{self.lesion_margin}/{self.segmenter_sha256}"
        return key

    @property
    def decode_side(self) -> int:
        """Side the JPEG draft decode must reach: twice the stored side when a lesion crop will zoom in."""
        return self.size * 2 if self.lesion == "crop" else self.size


def _open(source: str | bytes, max_pixels: int) -> Image.Image:
    """Open (header only) with our own pixel limit instead of PIL's global decompression-bomb limit.

    PIL warns above 89 MP and refuses above 179 MP; dermoscopy originals reach 24 MP and a 10,000x10,000
    image (100 MP) is plausible, so the limit is a setting (prepare.max_pixels) checked here with a clear
    message. JPEGs are then decoded with `draft`, at 1/2..1/8 scale, so even 100 MP costs little memory.
    """
    if (len(source) if isinstance(source, bytes) else os.path.getsize(source)) == 0:
        raise BadImage("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # checked below against max_pixels; restored at once
        try:
            # Bytes (an upload to `serve`) are decoded from memory: they never touch the disk.
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise BadImage(f"{w}x{h} = {w * h / 1e6:.0f} MP exceeds prepare.max_pixels "
                       f"({max_pixels / 1e6:.0f} MP); raise it to accept such images")
    return img


def load_rgb(path: str | Path | bytes, size: int, max_pixels: int = 200_000_000) -> tuple[Image.Image, int, int]:
    """Decode to RGB, upright per EXIF; return it with the original (upright) width and height.

    `path` is a file, or the encoded bytes themselves.

    Grayscale, RGBA, CMYK, palette and 16-bit images are converted to RGB; the format is read from the
    bytes, so PNG data in a .jpg file works. Truncated or corrupt files raise BadImage.
    """
    try:
        img = _open(path if isinstance(path, bytes) else str(path), max_pixels)
        with img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # DCT scaling: decode at the smallest scale >= size
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: keep the high byte (PIL's convert would clip to 255)
                img = Image.fromarray((np.asarray(img.convert("I")) >> 8).clip(0, 255).astype(np.uint8))
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Composite on black (the pad colour), not PIL's drop-alpha, so transparent areas are defined.
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            img = img.convert("RGB")  # also forces the full decode: truncation surfaces here
            img.load()
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
        if isinstance(path, bytes) and "cannot identify image file" in str(e):
            raise BadImage("not an image (no known image format)") from None  # not PIL's BytesIO repr
        raise BadImage(f"cannot decode: {e}") from None
    return img, width, height


def square(img: Image.Image, size: int, mode: str) -> Image.Image:
    if mode == "crop":
        return ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(img, (size, size), method=Image.Resampling.LANCZOS, color=(0, 0, 0))
    if mode == "stretch":
        return img.resize((size, size), Image.Resampling.LANCZOS)
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def to_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def stored_jpeg(img: Image.Image, settings: ImageSettings) -> bytes:
    """What `prepare` stores for a decoded image: the lesion step (prepare.lesion), made square,
    Lanczos-resized, JPEG at prepare.quality."""
    if settings.lesion != "none":
        from melanoma.data.lesion import apply_lesion  # scikit-image: only when a lesion step is asked for

        img = apply_lesion(img, settings.lesion, settings.lesion_margin, settings.segmenter)
    return to_jpeg(square(img, settings.size, settings.resize), settings.quality)


def model_input(data: bytes, settings: ImageSettings, size: int, stored_size: int | None = -1) -> np.ndarray:
    """Encoded image bytes -> the uint8 (size, size, 3) tensor that training fed the model.

    The one preprocessing function of `predict` and `serve`: prepare's decode (EXIF, colour mode, pixel
    limit), crop/pad and resize and its JPEG encode at the same quality, then the train reader's own
    decode (`pipeline.decode_image`), so the pixels are identical to those of a trained-on record.
    `stored_size` is the side the reader was told the records have (-1: settings.size; None: unknown,
    as for the public TFRecords, where the reader always resizes). Raises BadImage.
    """
    import tensorflow as tf

    from melanoma.data.reader import decode_image

    img, _, _ = load_rgb(data, settings.decode_side, settings.max_pixels)
    jpeg = stored_jpeg(img, settings)
    stored = settings.size if stored_size == -1 else stored_size
    return decode_image(tf.constant(jpeg), size, stored).numpy()


TILE_SEP = "::"  # melanoma.data.hdf5.TILE_SEP, repeated so that a JPEG-only worker never imports h5py

# Side that the duplicate hash and the quality flags see (a JPEG draft decode at least this large): fixed, so
# that the same data gives the same duplicates, the same folds and the same flags at any --size.
VIEW_SIDE = 64


def view_of(path: str | Path, max_pixels: int = 200_000_000) -> Image.Image:
    """The size-independent view of an image: decoded with JPEG draft scaling towards VIEW_SIDE."""
    return load_rgb(path, VIEW_SIDE, max_pixels)[0]


def degenerate(img: Image.Image) -> str | None:
    """Why an image is no usable photograph, or None: a single colour, almost no detail, or constant along
    one axis (stripes: every column, or every row, nearly one colour).

    Measured on a 32x32 box-filtered copy. Stripes: the column (or row) means explain more than 69% of the
    colour variance and the gradients across the stripes are over 3.4x those along them. Tuned on the 550
    ISIC archive thumbnails: the 150 striped ones are flagged with margin, no dermoscopy image is.
    """
    a = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
    if float(a.std(axis=(0, 1)).max()) < 4.0:  # per channel: a flat pink is one colour
        return "a single colour (standard deviation under 4 grey levels)"
    grey = a.mean(axis=2)
    gy, gx = float(np.abs(np.diff(grey, axis=0)).mean()), float(np.abs(np.diff(grey, axis=1)).mean())
    if max(gx, gy) < 0.5:
        return "almost no detail (mean gradient under 0.5 grey levels per pixel)"
    total = float(a.var(axis=(0, 1)).sum())
    within_columns = float(a.var(axis=0).mean(axis=0).sum()) / total  # what the column means leave unexplained
    within_rows = float(a.var(axis=1).mean(axis=0).sum()) / total
    if min(within_columns, within_rows) < 0.31 and min(gx, gy) / max(gx, gy) < 0.29:
        axis = "column" if within_columns < within_rows else "row"
        return f"stripes: every {axis} is nearly constant"
    return None


def dhash(img: Image.Image, min_contrast: float = 2.0) -> int | None:
    """64-bit difference hash: 9x8 grayscale, one bit per horizontally adjacent pair (left brighter).

    Robust to resizing and recompression, which is how the competition's duplicates differ. A flat image
    (thumbnail standard deviation under `min_contrast` grey levels) gives None: its bits would be noise,
    and every blank or solid image would otherwise be a "duplicate" of every other.
    """
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    if small.std() < min_contrast:
        return None
    bits = (small[:, :-1] > small[:, 1:]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def file_identity(path: str) -> list:
    """What makes a cached result for a file stale: its size and modification time (of the HDF5 file, for
    an ISIC 2024 tile: melanoma.data.hdf5)."""
    if TILE_SEP in path:
        from melanoma.data.hdf5 import source_identity  # h5py only where tiles are read

        return source_identity(path)
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _readable(path: str) -> str | bytes:
    """A JPEG path as it is, a tile's bytes read from its HDF5 file."""
    if TILE_SEP in path:
        from melanoma.data.hdf5 import read_source

        return read_source(path)
    return path


def chunk_key(settings: ImageSettings, paths: list[str]) -> str:
    """Identity of one chunk's work: the settings and every input file's path, size and mtime."""
    h = hashlib.sha256(settings.key().encode())
    for p in paths:
        try:
            ident = file_identity(p)
        except OSError:
            ident = ["missing"]
        h.update(json.dumps([p, ident]).encode())
    return h.hexdigest()[:32]


def process_chunk(paths: list[str], settings: ImageSettings, spool: str | None, key: str) -> dict:
    """Decode each image once: hash it and (with settings.encode) resize and encode it into `spool`.

    The spool file holds the JPEGs back to back; the returned (and saved) index gives each image's offset,
    length, original size and hash, or its error. One image is in memory at a time. `spool + ".json"` is
    written last, so it marks the chunk complete for a resumed run.
    """
    results = []
    tmp = f"{spool}.tmp" if spool else None
    out = open(tmp, "wb") if tmp else None
    try:
        offset = 0
        for p in paths:
            try:
                src = _readable(p)
                img, w, h = load_rgb(src, settings.decode_side, settings.max_pixels)
                view = img if settings.decode_side == VIEW_SIDE else view_of(src, settings.max_pixels)
                entry = {"w": w, "h": h, "dhash": dhash(view), "degenerate": degenerate(view)}
                if settings.encode:
                    data = stored_jpeg(img, settings)
                    out.write(data)
                    entry.update(offset=offset, length=len(data))
                    offset += len(data)
            except BadImage as e:
                entry = {"error": str(e)}
            except OSError as e:  # the file vanished or cannot be opened at all
                entry = {"error": f"cannot read: {e}"}
            results.append(entry)
        if out is not None:
            out.close()
            os.replace(tmp, spool)
    finally:
        if out is not None and not out.closed:
            out.close()
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    index = {"key": key, "images": results}
    if spool:
        meta_tmp = f"{spool}.json.tmp"
        with open(meta_tmp, "w") as f:
            json.dump(index, f)
        os.replace(meta_tmp, f"{spool}.json")
    return index


def map_chunks(jobs: list[tuple], workers: int, on_done) -> None:
    """Run process_chunk(*job) for every job, in `workers` spawned processes (in this one when workers <= 1).

    At most 2 x workers jobs are in flight, so memory does not grow with the number of jobs; on_done(i, index)
    is called in this process as each finishes (in completion order). Spawn, not fork: the parent may have
    TensorFlow loaded, which is not fork-safe; the workers import only PIL and numpy.
    """
    if workers <= 1:
        for i, job in enumerate(jobs):
            on_done(i, process_chunk(*job))
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        pending: dict = {}
        next_job = 0
        try:
            while next_job < len(jobs) or pending:
                while next_job < len(jobs) and len(pending) < 2 * workers:
                    pending[pool.submit(process_chunk, *jobs[next_job])] = next_job
                    next_job += 1
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=pending.get):
                    on_done(pending.pop(fut), fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit when the parent dies (killed, OOM, pre-empted), instead of lingering as an orphan
    that holds its pipes open; the parent's re-run resumes the work."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
