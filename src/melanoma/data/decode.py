"""prepare, phase 1: decode, hash and encode every image once, in parallel, into a resumable spool.

The images are cut into fixed chunks of CHUNK_IMAGES; each chunk is decoded in a worker process (no
TensorFlow), and its spool file's index (offsets, original sizes, hashes, errors) is written last as the
chunk's completion mark, so a killed run keeps every finished chunk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from melanoma.data.images import BadImage, ImageSettings, chunk_key, load_rgb, map_chunks, square, to_jpeg
from melanoma.data.schema import ID
from melanoma.errors import input_error

log = logging.getLogger("melanoma.data.prepare")  # one logger for the whole stage

CHUNK_IMAGES = 64  # images per decode job: fixed, so the work (and a resumed run) never depends on --workers
# Test hook: kill this process (SIGKILL, like an OOM kill or a pre-empted VM) after N chunks.
KILL_AFTER_CHUNKS = "MELANOMA_PREPARE_KILL_AFTER_CHUNKS"


def stage_bar(total: int, desc: str):
    """prepare's progress bar. Also in a log file (a long run on Kaggle shows its progress there), redrawn
    every few seconds rather than ten times a second."""
    return tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 5.0, disable=total == 0)


def kill_hook(var: str, done: int) -> None:
    limit = os.environ.get(var)
    if limit is not None and done >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def encode_image(path: str | Path, size: int, mode: str, quality: int, csv: str | Path = "",
                 line: int | None = None, max_pixels: int = 200_000_000) -> tuple[bytes, int, int]:
    """JPEG bytes of one image made square and resized, with its original width and height."""
    try:
        img, width, height = load_rgb(path, size, max_pixels)
    except (BadImage, OSError) as e:
        raise input_error(csv or path, f"cannot read image {path}: {e}", line) from None
    return to_jpeg(square(img, size, mode), quality), width, height


def decode_all(items: pd.DataFrame, settings: ImageSettings, work: Path, workers: int
                ) -> tuple[pd.DataFrame, list[str]]:
    """Per image: chunk, offset, length, w, h, dhash, error (chunks already complete are reused); and the
    key of every chunk."""
    chunks_dir = work / "chunks"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    paths = items["path"].tolist()
    n_chunks = math.ceil(len(paths) / CHUNK_IMAGES)
    results: list[list[dict] | None] = [None] * n_chunks
    keys: list[str] = []
    jobs, job_chunk = [], []
    for c in range(n_chunks):
        chunk_paths = paths[c * CHUNK_IMAGES:(c + 1) * CHUNK_IMAGES]
        key = chunk_key(settings, chunk_paths)
        keys.append(key)
        spool = chunks_dir / f"c{c:05d}.bin"
        index = _completed_chunk(spool, key)
        if index is not None:
            results[c] = index
        else:
            jobs.append((chunk_paths, settings, str(spool), key))
            job_chunk.append(c)
    reused = n_chunks - len(jobs)
    if reused:
        log.info("prepare: resuming: %d of %d decode chunks already complete", reused, n_chunks)

    total = sum(len(j[0]) for j in jobs)
    workers = max(1, min(workers, len(jobs)))
    bar = stage_bar(total, "prepare: decode")
    done_count = [0]

    def on_done(j: int, index: dict) -> None:
        results[job_chunk[j]] = index["images"]
        bar.update(len(index["images"]))
        done_count[0] += 1
        kill_hook(KILL_AFTER_CHUNKS, done_count[0])

    with bar:
        map_chunks(jobs, workers, on_done)
    rows = []
    for c, index in enumerate(results):
        for entry in index:
            rows.append({"chunk": c, "offset": entry.get("offset", -1), "length": entry.get("length", -1),
                         "w": entry.get("w", -1), "h": entry.get("h", -1), "dhash": entry.get("dhash"),
                         "error": entry.get("error"), "degenerate": entry.get("degenerate")})
    out = pd.DataFrame(rows, index=items.index)
    for col in ("dhash", "error", "degenerate"):
        out[col] = out[col].astype("object")
    return out, keys


def _completed_chunk(spool: Path, key: str) -> list[dict] | None:
    meta = spool.with_name(spool.name + ".json")
    if not (spool.is_file() and meta.is_file()):
        return None
    try:
        index = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if index.get("key") != key:
        return None
    expected = sum(e.get("length", 0) for e in index["images"])
    return index["images"] if spool.stat().st_size == expected else None


def bad_images(items: pd.DataFrame, decoded: pd.DataFrame, mode: str) -> list[dict]:
    """Unreadable and degenerate images: an error naming the first (fail), or the list of them (skip)."""
    unreadable = decoded["error"].notna().to_numpy()
    bad = np.flatnonzero(unreadable | decoded["degenerate"].notna().to_numpy())
    if len(bad) and mode == "fail":
        i = int(bad[0])
        why = (f"cannot read image {items.at[i, 'path']}: {decoded.at[i, 'error']}" if unreadable[i] else
               f"image {items.at[i, 'path']} is no photograph: {decoded.at[i, 'degenerate']}")
        raise input_error(items.at[i, "csv"], f"{why} (--on-bad-image skip leaves such images out)",
                          int(items.at[i, "line"]))
    skipped = []
    for i in bad:
        reason = decoded.at[i, "error"] if unreadable[i] else f"degenerate: {decoded.at[i, 'degenerate']}"
        entry = {"image_name": items.at[i, ID], "split": items.at[i, "split"], "csv": items.at[i, "csv"],
                 "line": int(items.at[i, "line"]), "reason": reason}
        log.warning("prepare: skipped %s, line %d: %s: %s", entry["csv"], entry["line"], items.at[i, "path"],
                    entry["reason"])
        skipped.append(entry)
    if skipped:
        n_test = sum(e["split"] == "test" for e in skipped)
        log.warning("prepare: %d bad images skipped (listed in manifest.json)%s", len(skipped),
                    f"; {n_test} are test images, which will have no prediction" if n_test else "")
    return skipped
