"""The `prepare` stage: competition layout (+ external data) -> resized, sharded TFRecords with patient folds.

Two phases, both resumable:

1. Decode (parallel, `prepare.workers` spawned processes without TensorFlow). The images are cut into fixed
   chunks of 64; each chunk is decoded once (JPEG `draft` scaling: a 6000x4000 original is decoded at a
   fraction of the cost), hashed (dHash, for duplicates) and resized and encoded into a spool file in a
   work folder, with an index (offsets, original sizes, hashes, errors) written last as the chunk's
   completion mark. A worker holds one image at a time.
2. Folds and shards. With the hashes known, duplicates are found (and a duplicates CSV added); patients and
   duplicate images are merged into groups and dealt into triple-stratified folds (`folds.assign_folds`).
   Each training shard holds one fold; external images and upsampled malignant copies go to train-only
   shards. Shards are sized from the actual encoded sizes and written by this process from the spool
   (no second decode) through tf.io.TFRecordWriter and tf.io.gfile, so `--out gs://...` works: each to a
   temporary name, renamed when complete, its size and sha256 recorded in the work folder's plan.json.

An interrupted run (Ctrl-C, kill, crash) keeps its completed chunks and shards; re-running the same command
verifies them against the plan (key of the inputs and settings, size, sha256) and redoes the rest. A bad
input stops the run with one line naming the file and CSV row (`--on-bad-image fail`, the default) and leaves
nothing of this run behind; `--on-bad-image skip` logs each bad image and lists it in the manifest. The
manifest is written last and the work folder removed: a folder with a manifest.json is complete.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from melanoma import __version__
from melanoma.check import degenerate_summary, find_duplicates, format_report, leakage_report, read_duplicates_csv, \
    union_groups
from melanoma.config import Config, save_run_info
from melanoma.data import ID, PATIENT, TARGET, check_images_exist, csv_line, image_path, read_test, read_train
from melanoma.errors import ConfigError, InputError, input_error
from melanoma.external import read_external
from melanoma.files import _json_default as _plain, write_json
from melanoma.folds import assign_folds, fold_balance, fold_summary, format_fold_table, read_folds
from melanoma.outlock import LOCK_NAME, claim_output
from melanoma.images import RESIZE_MODES, BadImage, ImageSettings, chunk_key, load_rgb, map_chunks, square, \
    to_jpeg
from melanoma.records import build_vocabularies, encode_metadata, parse_shard_name, schema, serialize_example, \
    shard_name

log = logging.getLogger(__name__)

CHUNK_IMAGES = 64  # images per decode job: fixed, so the work (and a resumed run) never depends on --workers
WORK_DIR = ".prepare-work"
# Test hooks: kill this process (SIGKILL, like an OOM kill or a pre-empted VM) after N chunks or N shards.
KILL_AFTER_CHUNKS = "MELANOMA_PREPARE_KILL_AFTER_CHUNKS"
KILL_AFTER_SHARDS = "MELANOMA_PREPARE_KILL_AFTER_SHARDS"


# ---------------------------------------------------------------- one image (kept for callers and tests)

def encode_image(path: str | Path, size: int, mode: str, quality: int, csv: str | Path = "",
                 line: int | None = None, max_pixels: int = 200_000_000) -> tuple[bytes, int, int]:
    """JPEG bytes of one image made square and resized, with its original width and height."""
    try:
        img, width, height = load_rgb(path, size, max_pixels)
    except (BadImage, OSError) as e:
        raise input_error(csv or path, f"cannot read image {path}: {e}", line) from None
    return to_jpeg(square(img, size, mode), quality), width, height


# ---------------------------------------------------------------- output through tf.io.gfile

def _remote(path: str) -> bool:
    return "://" in path


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if _remote(folder) else str(Path(folder) / name)


def _write_output(out: str, name: str, data: bytes) -> None:
    """Atomically write OUT/name, locally or on a gfile filesystem (gs://)."""
    import tensorflow as tf

    final = _join(out, name)
    tmp = _join(out, f".{name}.tmp")
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, final, overwrite=True)


def _sha256(path: str) -> str:
    import tensorflow as tf

    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _work_dir(out: str) -> Path:
    """Local scratch for the spool and plan: inside OUT when local, else in the temp folder (keyed by OUT)."""
    if not _remote(out):
        return Path(out) / WORK_DIR
    return Path(tempfile.gettempdir()) / f"melanoma-prepare-{hashlib.sha256(out.encode()).hexdigest()[:16]}"


def _kill_hook(var: str, done: int) -> None:
    limit = os.environ.get(var)
    if limit is not None and done >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- inputs

def _read_inputs(cfg: Config, data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list]:
    """train, test and one table of every image to decode (split, source, path, csv, line, metadata)."""
    pcfg = cfg.prepare
    train, test = read_train(data_dir, cfg.data.patient_id), read_test(data_dir, cfg.data.patient_id)
    parts = []
    for split, df in (("train", train), ("test", test)):
        if pcfg.on_bad_image == "fail":  # a missing file is an error up front, before any work
            check_images_exist(data_dir, split, df)
        part = df.copy()
        part["split"], part["source"] = split, ""
        part["path"] = [str(image_path(data_dir, split, n)) for n in df[ID]]
        part["csv"] = str(data_dir / f"{split}.csv")
        part["line"] = [csv_line(i) for i in df.index]
        parts.append(part)
    externals = []
    known = {n: str(data_dir / "train.csv") for n in train[ID]} | {n: str(data_dir / "test.csv") for n in test[ID]}
    for folder in pcfg.external:
        ext = read_external(folder)
        rows = ext.rows
        for name, line in zip(rows[ID], rows["line"]):
            if name in known:
                raise input_error(ext.csv, f"image_name '{name}' is also in {known[name]}", line)
            known[name] = str(ext.csv)
        if pcfg.on_bad_image == "fail":
            for p, line in zip(rows["path"], rows["line"]):
                if not os.path.isfile(p):
                    raise input_error(ext.csv, f"image {p} is listed but does not exist", line)
        part = rows.drop(columns=["line", "path"]).copy()
        part["split"], part["source"] = "train", ext.source
        part["path"], part["csv"], part["line"] = rows["path"].to_numpy(), str(ext.csv), rows["line"].to_numpy()
        parts.append(part)
        externals.append({"folder": str(folder), "source": ext.source, "images": len(rows),
                          "malignant": int(rows[TARGET].sum()), "groups": int(rows[PATIENT].nunique())})
    items = pd.concat(parts, ignore_index=True)
    return train, test, items, externals


# ---------------------------------------------------------------- phase 1: decode, hash, encode

def _decode_all(items: pd.DataFrame, settings: ImageSettings, work: Path, workers: int
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
    # In a log file rather than a terminal, redraw the bar every few seconds, not ten times a second.
    bar = tqdm(total=total, unit="img", desc="prepare: decode", dynamic_ncols=True,
               mininterval=0.2 if sys.stderr.isatty() else 5.0, disable=total == 0)
    done_count = [0]

    def on_done(j: int, index: dict) -> None:
        results[job_chunk[j]] = index["images"]
        bar.update(len(index["images"]))
        done_count[0] += 1
        _kill_hook(KILL_AFTER_CHUNKS, done_count[0])

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


# ---------------------------------------------------------------- phase 2: plan and write shards

def _drop_duplicates(train_idx: np.ndarray, items: pd.DataFrame, pairs: list[tuple[int, int]]) -> dict[int, int]:
    """{dropped item: kept item}: one image per duplicate group, a malignant one if any, else the first."""
    pos = {int(i): k for k, i in enumerate(train_idx)}
    linked = [(pos[a], pos[b]) for a, b in pairs]
    labels = union_groups([str(k) for k in range(len(train_idx))], linked)
    dropped = {}
    targets = items[TARGET].to_numpy()
    for label in np.unique(labels[np.isin(np.arange(len(train_idx)), np.array(linked).ravel())]) if linked else []:
        members = train_idx[labels == label]
        keep = max(members, key=lambda i: (targets[i], -i))
        dropped.update({int(m): int(keep) for m in members if m != keep})
    return dropped


def _sane_pairs(pairs: list[tuple[int, int]], n: int, max_group: int = 8) -> list[tuple[int, int]]:
    """Pairs outside implausibly large duplicate groups: the competition's duplicates come in pairs or
    triples, while a chain of dozens of "near-duplicates" means the hashes cannot tell those images apart
    (e.g. blank or very similar images); merging them would glue many patients into one fold group."""
    if not pairs:
        return pairs
    labels = union_groups([str(i) for i in range(n)], pairs)
    sizes = pd.Series(labels).value_counts()
    big = set(sizes.index[sizes > max_group])
    if big:
        log.warning("prepare: %d near-duplicate groups of more than %d images (largest %d) are not merged: "
                    "their hashes are too alike to trust; consider a lower prepare.dup_max_distance",
                    len(big), max_group, int(sizes.max()))
    return [(a, b) for a, b in pairs if labels[a] not in big]


def _split(idx: list[int], per_shard: int) -> list[list[int]]:
    if not idx:
        return []
    return [list(c) for c in np.array_split(np.array(idx), max(1, math.ceil(len(idx) / per_shard)))]


def _plan(items, decoded, fold_of_item, keep, n_folds, per_shard, upsample, seed, chunk_keys) -> list[dict]:
    """Every shard to write: split, index, fold, train_only, item indices, key (identity of its content)."""
    rng = np.random.default_rng(seed)
    groups: list[tuple[str, int, bool, list[int]]] = []
    is_train = (items["split"] == "train").to_numpy()
    external = (items["source"] != "").to_numpy()
    targets = items[TARGET].fillna(0).to_numpy()
    order = rng.permutation(len(items))  # shuffled within each fold: a shard is not a block of ids
    by_fold = {k: [int(i) for i in order if keep[i] and is_train[i] and not external[i] and fold_of_item[i] == k]
               for k in range(n_folds)}
    for k in range(n_folds):
        groups.append(("train", k, False, by_fold[k]))
    if upsample > 1:  # copies of malignant images, tagged with their fold: trained on by every other fold
        for k in range(n_folds):
            pos = [i for i in by_fold[k] if targets[i] == 1]
            groups.append(("train", k, True, [i for i in pos for _ in range(upsample - 1)]))
    ext = [int(i) for i in order if keep[i] and external[i]]
    ext += [i for i in ext if targets[i] == 1 for _ in range(upsample - 1)]
    groups.append(("train", -1, True, ext))
    test = [int(i) for i in np.flatnonzero(keep & ~is_train)]  # test shards keep test.csv order
    groups.append(("test", -1, False, test))

    shards, index = [], {"train": 0, "test": 0}
    for split, fold, train_only, idx in groups:
        for part in _split(idx, per_shard):
            h = hashlib.sha256(json.dumps([split, fold, train_only]).encode())
            for i in part:
                h.update(json.dumps([chunk_keys[decoded.at[i, "chunk"]], int(decoded.at[i, "offset"]),
                                     items.at[i, "fields"]], sort_keys=True).encode())
            shards.append({"file": shard_name(split, index[split], len(part)), "split": split, "fold": fold,
                           "count": len(part), "positives": int(targets[part].sum()) if split == "train" else 0,
                           "train_only": train_only, "key": h.hexdigest()[:32], "items": part})
            index[split] += 1
    return shards


def _write_shard(shard: dict, out: str, items: pd.DataFrame, decoded: pd.DataFrame, chunks_dir: Path,
                 progress, kill_at: int) -> dict:
    import tensorflow as tf

    final = _join(out, shard["file"])
    tmp = _join(out, f".{shard['file']}.tmp")
    chunk, offset, length = (decoded[c].to_numpy().astype(np.int64) for c in ("chunk", "offset", "length"))
    width, height, fields_of = decoded["w"].to_numpy(), decoded["h"].to_numpy(), items["fields"].to_numpy()
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for n, i in enumerate(shard["items"]):
                with open(chunks_dir / f"c{chunk[i]:05d}.bin", "rb") as f:
                    f.seek(offset[i])
                    data = f.read(length[i])
                fields = dict(fields_of[i], image=data, width=int(width[i]), height=int(height[i]))
                writer.write(serialize_example(fields, shard["split"]))
                progress(1)
                if n == 0:
                    _kill_hook(KILL_AFTER_SHARDS, kill_at)  # mid-shard: leaves a temporary file, as a kill would
        tf.io.gfile.rename(tmp, final, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
    return {"bytes": int(tf.io.gfile.stat(final).length), "sha256": _sha256(final)}


def _verified(shard: dict, record: dict | None, out: str) -> bool:
    import tensorflow as tf

    if not record or record.get("key") != shard["key"] or record.get("file") != shard["file"]:
        return False
    path = _join(out, shard["file"])
    return (tf.io.gfile.exists(path) and tf.io.gfile.stat(path).length == record.get("bytes")
            and _sha256(path) == record.get("sha256"))


def _previous_records(out: str, work: Path) -> dict[str, dict]:
    """Shards recorded as complete by an interrupted run (plan.json) or a finished one (manifest.json)."""
    import tensorflow as tf

    records: dict[str, dict] = {}
    for path in (_join(out, "manifest.json"), str(work / "plan.json")):
        if tf.io.gfile.exists(path):
            try:
                with tf.io.gfile.GFile(path) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            for s in doc.get("shards", []):
                if "sha256" in s:
                    records[s["file"]] = s
    return records


# ---------------------------------------------------------------- stage

def _settings(cfg: Config) -> ImageSettings:
    pcfg = cfg.prepare
    if pcfg.resize not in RESIZE_MODES:
        raise ConfigError(f"prepare.resize must be one of {RESIZE_MODES}, got {pcfg.resize!r}")
    if not 16 <= pcfg.size <= 4096:
        raise ConfigError(f"prepare.size must be between 16 and 4096, got {pcfg.size}")
    if pcfg.on_bad_image not in ("fail", "skip"):
        raise ConfigError(f"prepare.on_bad_image must be fail or skip, got {pcfg.on_bad_image!r}")
    if pcfg.upsample_malignant < 1:
        raise ConfigError(f"prepare.upsample_malignant must be at least 1, got {pcfg.upsample_malignant}")
    if not 0 <= pcfg.dup_max_distance <= 15:
        raise ConfigError(f"prepare.dup_max_distance must be between 0 and 15, got {pcfg.dup_max_distance}")
    if not 1 <= pcfg.quality <= 100:
        raise ConfigError(f"prepare.quality must be between 1 and 100, got {pcfg.quality}")
    return ImageSettings(pcfg.size, pcfg.resize, pcfg.quality, pcfg.max_pixels)


def prepare(cfg: Config, data_dir: str | Path, out_dir: str | Path, folds_path: str | Path | None = None
            ) -> dict:
    """The `prepare` stage. Returns the manifest it wrote to OUT/manifest.json."""
    pcfg = cfg.prepare
    settings = _settings(cfg)
    data_dir = Path(data_dir)
    out = str(out_dir).rstrip("/") or "/"
    train, test, items, externals = _read_inputs(cfg, data_dir)
    folds_given = read_folds(folds_path, train) if folds_path is not None else None
    n_patients = train[PATIENT].nunique()
    if folds_given is None and n_patients < cfg.n_folds:  # before any decoding, not after it
        raise input_error(data_dir / "train.csv", f"{n_patients} patients cannot fill {cfg.n_folds} folds: "
                                                  f"use --folds {n_patients} or fewer")
    csv_pairs = read_duplicates_csv(pcfg.duplicates) if pcfg.duplicates else None

    vocab = build_vocabularies(train, test, items)
    patient_codes = {p: i for i, p in enumerate(sorted(set(items[PATIENT])))}
    # Test rows have no target; the filled 0 is never written (test records carry neither target nor diagnosis).
    codes = encode_metadata(items.assign(**{TARGET: items[TARGET].fillna(0)}), vocab, patient_codes)
    is_train = (items["split"] == "train").to_numpy()
    train_only_fields = ("diagnosis", TARGET)
    items["fields"] = [{ID: n, **({"source": s} if t else {}),
                        **{k: int(v) for k, v in row.items() if t or k not in train_only_fields}}
                       for n, s, t, row in zip(items[ID], items["source"], is_train, codes.to_dict("records"))]

    work = _work_dir(out)
    lock = Path(out) / LOCK_NAME if not _remote(out) else work.with_name(work.name + ".lock")
    with claim_output(out, lock):  # one prepare per folder; a refused run leaves no folder it made
        return _run(cfg, data_dir, out, folds_path, settings, work, train, test, items, externals,
                    folds_given, csv_pairs, vocab)


def _run(cfg: Config, data_dir: Path, out: str, folds_path, settings: ImageSettings, work: Path,
         train: pd.DataFrame, test: pd.DataFrame, items: pd.DataFrame, externals: list, folds_given,
         csv_pairs, vocab: dict) -> dict:
    """prepare, once its inputs are valid and its output folder is claimed."""
    pcfg = cfg.prepare
    is_train = (items["split"] == "train").to_numpy()
    fresh_work = not work.exists()
    workers = pcfg.workers if pcfg.workers > 0 else (os.cpu_count() or 1)
    importlib.import_module("tensorflow")  # before the clock starts: importing it takes seconds

    start = time.perf_counter()
    try:
        decoded, chunk_keys = _decode_all(items, settings, work, workers)
        skipped = _bad_images(items, decoded, pcfg.on_bad_image)
    except InputError:
        if fresh_work:  # nothing of this run is left behind; a resumed run's earlier work is kept
            shutil.rmtree(work, ignore_errors=True)
        raise
    decode_seconds = time.perf_counter() - start
    ok = (decoded["error"].isna() & decoded["degenerate"].isna()).to_numpy()

    # ---- duplicates (content hashes from the decode pass, plus an optional CSV) and leakage
    images = pd.DataFrame({ID: items[ID], "split": np.where(items["source"] != "", "external", items["split"]),
                           "dhash": decoded["dhash"]})
    dups = find_duplicates(images, pcfg.dup_max_distance, csv_pairs)
    report = leakage_report(train, test, dups, pcfg.dup_max_distance)
    report["degenerate_images"] = degenerate_summary(items[ID], items["split"], decoded["degenerate"])
    log.info("prepare: leakage and quality report\n%s", format_report(report))
    pos_of = {n: i for i, n in enumerate(items[ID])}
    pair_idx = [(pos_of[a], pos_of[b]) for a, b in zip(dups["image_name_1"], dups["image_name_2"])]
    splits = images["split"].to_numpy()
    train_pairs = _sane_pairs([(a, b) for a, b in pair_idx if splits[a] == "train" and splits[b] == "train"],
                              len(items))
    # An external copy of a competition training image would be trained on while its twin is validated.
    ext_dup = {b if splits[b] == "external" else a for a, b in pair_idx
               if {splits[a], splits[b]} == {"train", "external"}}
    keep = ok.copy()
    keep[list(ext_dup)] = False
    if ext_dup:
        log.warning("prepare: %d external images duplicate competition training images: left out", len(ext_dup))

    # ---- folds: patients and duplicate images grouped, triple-stratified
    comp_train = np.flatnonzero(is_train & (items["source"] == "").to_numpy())
    if folds_given is not None:
        folds = folds_given
    else:
        local = {int(i): k for k, i in enumerate(comp_train)}
        groups = union_groups(items[PATIENT].to_numpy()[comp_train].tolist(),
                              [(local[a], local[b]) for a, b in train_pairs])
        try:
            folds = assign_folds(train, cfg.n_folds, cfg.seed, groups)
        except ValueError as e:
            raise input_error(data_dir / "train.csv", f"cannot make folds: {e} (patients linked by duplicate "
                                                      "images count as one)") from None
    fold_by_name = dict(zip(folds[ID], folds["fold"]))
    if folds_given is not None:
        split_pairs = sum(fold_by_name[items.at[a, ID]] != fold_by_name[items.at[b, ID]] for a, b in train_pairs)
        if split_pairs:
            log.warning("prepare: %d duplicate pairs are in different folds of %s (their validation leaks; "
                        "let prepare compute the folds to keep them together)", split_pairs, folds_path)
    n_folds = int(folds["fold"].max()) + 1
    fold_of_item = np.array([fold_by_name.get(n, -1) for n in items[ID]])

    dropped = _drop_duplicates(comp_train[ok[comp_train]], items,
                               [(a, b) for a, b in train_pairs if ok[a] and ok[b]]) if pcfg.drop_duplicates else {}
    keep[list(dropped)] = False

    in_shards = folds[folds[ID].isin(set(items[ID][keep]))]
    summary = fold_summary(in_shards)
    log.info("prepare: folds of the images in the shards\n%s", format_fold_table(summary))

    # ---- plan: shard sizes from the actual encoded sizes
    mean_bytes = float(decoded["length"][keep].mean()) if keep.any() else 1.0
    per_shard = max(1, int(pcfg.shard_mb * 1e6 // (mean_bytes + 100)))  # + the record's metadata
    plan = _plan(items, decoded, fold_of_item, keep, n_folds, per_shard, pcfg.upsample_malignant, cfg.seed,
                 chunk_keys)
    shards = _write_shards(plan, out, work, items, decoded)
    seconds = time.perf_counter() - start

    # ---- outputs, manifest last
    counts = {"train": int(sum(s["count"] for s in shards if s["split"] == "train" and not s["train_only"])),
              "test": int(sum(s["count"] for s in shards if s["split"] == "test"))}
    if externals or pcfg.upsample_malignant > 1:
        counts["train_only"] = int(sum(s["count"] for s in shards if s["train_only"]))
    manifest = {
        "format": "melanoma-tfrecords",
        "version": __version__,
        "image_size": pcfg.size,
        "resize": pcfg.resize,
        "quality": pcfg.quality,
        "n_folds": n_folds,
        "seed": cfg.seed,
        "counts": counts,
        "folds": {str(k): {c: _plain(row[c]) for c in summary.columns} for k, row in summary.iterrows()},
        "fold_balance": fold_balance(summary),
        "folds_from": str(folds_path) if folds_path is not None else "computed (triple-stratified)",
        "upsample_malignant": pcfg.upsample_malignant,
        "external": externals,
        "leakage": report,
        "skipped": skipped,
        "dropped_duplicates": [{"image_name": items.at[d, ID], "kept": items.at[k, ID]}
                               for d, k in sorted(dropped.items())],
        "external_duplicates_dropped": sorted(items.at[i, ID] for i in ext_dup),
        "shards": shards,
        "schema": {"train": schema("train"), "test": schema("test")},
        "vocab": vocab,
        "seconds": round(seconds, 1),
        "decode_seconds": round(decode_seconds, 1),
    }
    _write_output(out, "folds.csv", folds.to_csv(index=False).encode())
    _write_output(out, "duplicates.csv", dups.to_csv(index=False).encode())
    # Original sizes for the tabular stage (a strong feature: they tell the camera). Every decoded image, also
    # a duplicate left out of the shards: tabular needs a size for every row of train.csv and test.csv.
    sizes = pd.DataFrame({ID: items[ID], "split": images["split"], "width": decoded["w"], "height": decoded["h"]})
    _write_output(out, "image_sizes.csv", sizes[ok].to_csv(index=False).encode())
    _save_run_info(out, cfg)
    _write_output(out, "manifest.json", (json.dumps(manifest, indent=2, default=_plain) + "\n").encode())
    _remove_stale(out, {s["file"] for s in shards})
    shutil.rmtree(work, ignore_errors=True)
    n = len(items)
    log.info("prepare: wrote %d shards to %s in %.1f s (%.1f img/s)", len(shards), out, seconds,
             n / max(seconds, 1e-9))
    return json.loads(json.dumps(manifest, default=_plain))


def _bad_images(items: pd.DataFrame, decoded: pd.DataFrame, mode: str) -> list[dict]:
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


def _write_shards(plan: list[dict], out: str, work: Path, items: pd.DataFrame, decoded: pd.DataFrame
                  ) -> list[dict]:
    import tensorflow as tf

    previous = _previous_records(out, work)
    manifest_path = _join(out, "manifest.json")
    if tf.io.gfile.exists(manifest_path):  # the folder is changing: it is incomplete until the new manifest
        tf.io.gfile.remove(manifest_path)
    for stale in tf.io.gfile.glob(_join(out, ".*.tfrec.tmp")):  # left by a killed run
        tf.io.gfile.remove(stale)
    done: dict[str, dict] = {}
    todo = []
    for s in plan:
        if _verified(s, previous.get(s["file"]), out):
            done[s["file"]] = previous[s["file"]]
        else:
            todo.append(s)
    if len(done):
        log.info("prepare: resuming: %d of %d shards already complete and verified", len(done), len(plan))

    def save_plan() -> None:
        write_json(work / "plan.json", {"shards": [
            {k: v for k, v in s.items() if k != "items"} | done.get(s["file"], {}) for s in plan]})

    save_plan()
    bar = tqdm(total=sum(s["count"] for s in todo), unit="img", desc="prepare: write", dynamic_ncols=True,
               mininterval=0.2 if sys.stderr.isatty() else 5.0, disable=not todo)
    with bar:
        for n, s in enumerate(todo):
            info = _write_shard(s, out, items, decoded, work / "chunks", bar.update, n)
            done[s["file"]] = {"file": s["file"], "key": s["key"], **info}
            save_plan()
    return [{k: v for k, v in s.items() if k != "items"} | done[s["file"]] for s in plan]


def _remove_stale(out: str, keep: set[str]) -> None:
    """Drop shards of an earlier run that this run's manifest does not list, so readers never mix runs."""
    import tensorflow as tf

    for path in tf.io.gfile.glob(_join(out, "*.tfrec")):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if parse_shard_name(name) and name not in keep:
            tf.io.gfile.remove(path)


def _save_run_info(out: str, cfg: Config) -> None:
    if not _remote(out):
        save_run_info(out, cfg, "prepare")
        return
    with tempfile.TemporaryDirectory() as tmp:  # save_run_info writes locally: copy its files up
        save_run_info(tmp, cfg, "prepare")
        for f in Path(tmp).iterdir():
            _write_output(out, f.name, f.read_bytes())
