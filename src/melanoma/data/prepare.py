"""The `prepare` stage: competition layout (+ external data) -> resized, sharded TFRecords with patient folds.

Two phases, both resumable:

1. Decode (`decode.py`; parallel, `prepare.workers` spawned processes without TensorFlow). The images are cut into fixed
   chunks of 64; each chunk is decoded once (JPEG `draft` scaling: a 6000x4000 original is decoded at a
   fraction of the cost), hashed (dHash, for duplicates) and resized and encoded into a spool file in a
   work folder, with an index (offsets, original sizes, hashes, errors) written last as the chunk's
   completion mark. A worker holds one image at a time.
2. Folds and shards (`shards.py`). With the hashes known (`dedup.py`), duplicates are found (and a duplicates CSV added); patients and
   duplicate images are merged into groups and dealt into triple-stratified folds (`folds.make_folds`).
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
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.config import Config
from melanoma.data.competition import PROFILES, announce, resolve
from melanoma.data.check import degenerate_summary, format_leakage_report, leakage_report
from melanoma.data.decode import bad_images, decode_all
from melanoma.data.dedup import drop_duplicates, find_duplicates, read_duplicates_csv, trusted_pairs
from melanoma.data.isic2019 import read_external
from melanoma.data.folds import fold_balance, fold_summary, format_fold_table, make_folds, read_folds
from melanoma.data.images import RESIZE_MODES, ImageSettings
from melanoma.data.outlock import LOCK_NAME, claim_output
from melanoma.data.records import build_vocabularies, encode_metadata, schema
from melanoma.data.schema import ID, PATIENT, TARGET, check_images_exist, csv_line, image_path, read_test, read_train
from melanoma.data.shards import is_remote, plan_shards, remove_stale_shards, save_run_info_to, write_output, \
    write_shards
from melanoma.errors import ConfigError, InputError, input_error
from melanoma.data.lesion import lesion_record, resolve_segmenter
from melanoma.data.manifest import TFRECORDS, Manifest, Shard, write_manifest
from melanoma.files import _json_default as _plain
from melanoma.runtime.paths import RunPaths
from melanoma.runtime.stage import Result

log = logging.getLogger(__name__)

WORK_DIR = ".prepare-work"


def _work_dir(out: str) -> Path:
    """Local scratch for the spool and plan: inside OUT when local, else in the temp folder (keyed by OUT)."""
    if not is_remote(out):
        return Path(out) / WORK_DIR
    return Path(tempfile.gettempdir()) / f"melanoma-prepare-{hashlib.sha256(out.encode()).hexdigest()[:16]}"


def _read_inputs(cfg: Config, data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list]:
    """train, test and one table of every image to decode (split, source, path, csv, line, metadata)."""
    pcfg = cfg.prepare
    competition = resolve(cfg.competition, data_dir)
    train = read_train(data_dir, cfg.data.patient_id, competition)
    test = read_test(data_dir, cfg.data.patient_id, competition)
    parts = []
    for split, df in (("train", train), ("test", test)):
        if pcfg.on_bad_image == "fail":  # a missing file is an error up front, before any work
            check_images_exist(data_dir, split, df, competition)
        part = df.copy()
        part["split"], part["source"] = split, ""
        part["path"] = [image_path(data_dir, split, n, competition) for n in df[ID]]
        part["csv"] = str(competition.csv_path(data_dir, split))
        part["line"] = [csv_line(i) for i in df.index]
        parts.append(part)
    externals = []
    known = {n: str(competition.csv_path(data_dir, "train")) for n in train[ID]} | {
        n: str(competition.csv_path(data_dir, "test")) for n in test[ID]}
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
    segmenter, sha = resolve_segmenter(pcfg.segmenter) if pcfg.lesion != "none" else (None, None)
    return ImageSettings(pcfg.size, pcfg.resize, pcfg.quality, pcfg.max_pixels, lesion=pcfg.lesion,
                         lesion_margin=pcfg.lesion_margin, segmenter=segmenter, segmenter_sha256=sha)


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
        raise input_error(resolve(cfg.competition, data_dir).csv_path(data_dir, "train"),
                          f"{n_patients} patients cannot fill {cfg.n_folds} folds: use --n-folds {n_patients} or fewer")
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
    lock = Path(out) / LOCK_NAME if not is_remote(out) else work.with_name(work.name + ".lock")
    with claim_output(out, lock):  # one prepare per folder; a refused run leaves no folder it made
        return _run(cfg, data_dir, out, folds_path, settings, work, train, test, items, externals,
                    folds_given, csv_pairs, vocab)


@dataclass
class Dedup:
    """What the dedup step found: the pairs (duplicates.csv), the leakage report, and what it means for the
    folds and the shards (pairs are item positions)."""
    pairs: pd.DataFrame
    report: dict
    train_pairs: list[tuple[int, int]]  # within the competition's training images, trusted ones only
    external_dups: set[int]  # external images that copy a competition training image


def _run(cfg: Config, data_dir: Path, out: str, folds_path, settings: ImageSettings, work: Path,
         train: pd.DataFrame, test: pd.DataFrame, items: pd.DataFrame, externals: list, folds_given,
         csv_pairs, vocab: dict) -> dict:
    """prepare, once its inputs are valid and its output folder is claimed: decode, dedup, folds, shards."""
    pcfg = cfg.prepare
    announce(resolve(cfg.competition, data_dir))  # the folder is ours: the work starts
    importlib.import_module("tensorflow")  # before the clock starts: importing it takes seconds
    start = time.perf_counter()
    decoded, chunk_keys, skipped = _decode(cfg, items, settings, work)
    decode_seconds = time.perf_counter() - start
    ok = (decoded["error"].isna() & decoded["degenerate"].isna()).to_numpy()
    dedup = _dedup(cfg, train, test, items, decoded, csv_pairs)
    keep = ok.copy()
    keep[list(dedup.external_dups)] = False
    comp_train = np.flatnonzero(((items["split"] == "train") & (items["source"] == "")).to_numpy())
    folds = folds_given if folds_given is not None else _deal_folds(cfg, data_dir, train, comp_train, dedup)
    fold_by_name = dict(zip(folds[ID], folds["fold"]))
    if folds_given is not None:
        _warn_split_pairs(items, fold_by_name, dedup.train_pairs, folds_path)
    n_folds = int(folds["fold"].max()) + 1
    fold_of_item = np.array([fold_by_name.get(n, -1) for n in items[ID]])
    dropped = drop_duplicates(comp_train[ok[comp_train]], items, [(a, b) for a, b in dedup.train_pairs
                                                                  if ok[a] and ok[b]]) if pcfg.drop_duplicates else {}
    keep[list(dropped)] = False
    summary = fold_summary(folds[folds[ID].isin(set(items[ID][keep]))])
    log.info("prepare: folds of the images in the shards\n%s", format_fold_table(summary))

    # shard sizes from the actual encoded sizes (+ the record's metadata)
    mean_bytes = float(decoded["length"][keep].mean()) if keep.any() else 1.0
    per_shard = max(1, int(pcfg.shard_mb * 1e6 // (mean_bytes + 100)))
    plan = plan_shards(items, decoded, fold_of_item, keep, n_folds, per_shard, pcfg.upsample_malignant, cfg.seed,
                       chunk_keys)
    shards = write_shards(plan, out, work, items, decoded)
    seconds = time.perf_counter() - start
    run = {"data_dir": data_dir, "folds_path": folds_path, "n_folds": n_folds, "summary": summary, "externals": externals,
           "skipped": skipped, "dropped": dropped, "seconds": seconds, "decode_seconds": decode_seconds}
    manifest = _manifest(cfg, out, settings, shards, vocab, items, dedup, run)
    _write_outputs(cfg, out, folds, dedup, items, decoded, ok, manifest)
    shutil.rmtree(work, ignore_errors=True)
    log.info("prepare: wrote %d shards to %s in %.1f s (%.1f img/s)", len(shards), out, seconds,
             len(items) / max(seconds, 1e-9))
    return manifest.to_dict()


def _manifest(cfg: Config, out: str, settings: ImageSettings, shards: list[dict], vocab: dict,
              items: pd.DataFrame, dedup: Dedup, run: dict) -> Manifest:
    """What prepare wrote and why: the shards, the settings export repeats, the folds, the reports."""
    pcfg = cfg.prepare
    summary, dropped = run["summary"], run["dropped"]
    details = {
        "seed": cfg.seed,
        "competition": resolve(cfg.competition, run["data_dir"]).name,
        "counts": _counts(shards, bool(run["externals"]) or pcfg.upsample_malignant > 1),
        "folds": {str(k): {c: _plain(row[c]) for c in summary.columns} for k, row in summary.iterrows()},
        "fold_balance": fold_balance(summary),
        "folds_from": str(run["folds_path"]) if run["folds_path"] is not None else "computed (triple-stratified)",
        "upsample_malignant": pcfg.upsample_malignant,
        "dropped_duplicates": [{"image_name": items.at[d, ID], "kept": items.at[k, ID]}
                               for d, k in sorted(dropped.items())],
        "external_duplicates_dropped": sorted(items.at[i, ID] for i in dedup.external_dups),
        "schema": {"train": schema("train"), "test": schema("test")},
        "seconds": round(run["seconds"], 1),
        "decode_seconds": round(run["decode_seconds"], 1),
    }
    return Manifest(out, tuple(Shard.from_entry(out, s) for s in shards), pcfg.size, run["n_folds"], TFRECORDS,
                    vocab=vocab, resize=pcfg.resize, quality=pcfg.quality,
                    lesion=lesion_record(settings),  # export and predict apply the same lesion step
                    external=tuple(run["externals"]), leakage=dedup.report, skipped=tuple(run["skipped"]),
                    details=details)


def _decode(cfg: Config, items: pd.DataFrame, settings: ImageSettings, work: Path
            ) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """Phase 1 (decode.py): every image decoded once; the bad ones stop the run or are listed as skipped."""
    pcfg = cfg.prepare
    fresh_work = not work.exists()
    workers = pcfg.workers if pcfg.workers > 0 else (os.cpu_count() or 1)
    try:
        decoded, chunk_keys = decode_all(items, settings, work, workers)
        return decoded, chunk_keys, bad_images(items, decoded, pcfg.on_bad_image)
    except InputError:
        if fresh_work:  # nothing of this run is left behind; a resumed run's earlier work is kept
            shutil.rmtree(work, ignore_errors=True)
        raise


def _split_of(items: pd.DataFrame) -> np.ndarray:
    return np.where(items["source"] != "", "external", items["split"])


def _dedup(cfg: Config, train: pd.DataFrame, test: pd.DataFrame, items: pd.DataFrame, decoded: pd.DataFrame,
           csv_pairs) -> Dedup:
    """Duplicates (content hashes from the decode pass, plus an optional CSV) and the leakage report."""
    pcfg = cfg.prepare
    images = pd.DataFrame({ID: items[ID], "split": _split_of(items), "dhash": decoded["dhash"]})
    dups = find_duplicates(images, pcfg.dup_max_distance, csv_pairs)
    report = leakage_report(train, test, dups, pcfg.dup_max_distance)
    report["degenerate_images"] = degenerate_summary(items[ID], items["split"], decoded["degenerate"])
    log.info("prepare: leakage and quality report\n%s", format_leakage_report(report))
    pos_of = {n: i for i, n in enumerate(items[ID])}
    pair_idx = [(pos_of[a], pos_of[b]) for a, b in zip(dups["image_name_1"], dups["image_name_2"])]
    splits = images["split"].to_numpy()
    train_pairs = trusted_pairs([(a, b) for a, b in pair_idx if splits[a] == "train" and splits[b] == "train"],
                                len(items))
    # An external copy of a competition training image would be trained on while its twin is validated.
    ext_dup = {b if splits[b] == "external" else a for a, b in pair_idx
               if {splits[a], splits[b]} == {"train", "external"}}
    if ext_dup:
        log.warning("prepare: %d external images duplicate competition training images: left out", len(ext_dup))
    return Dedup(dups, report, train_pairs, ext_dup)


def _deal_folds(cfg: Config, data_dir: Path, train: pd.DataFrame, comp_train: np.ndarray, dedup: Dedup
                ) -> pd.DataFrame:
    """Folds by the one folds function, with the duplicate pairs as groups."""
    local = {int(i): k for k, i in enumerate(comp_train)}
    try:
        return make_folds(train, cfg.n_folds, cfg.seed, [(local[a], local[b]) for a, b in dedup.train_pairs])
    except ValueError as e:
        raise input_error(resolve(cfg.competition, data_dir).csv_path(data_dir, "train"),
                          f"cannot make folds: {e} (patients linked by duplicate images count as one)") from None


def _warn_split_pairs(items: pd.DataFrame, fold_by_name: dict, train_pairs: list, folds_path) -> None:
    split_pairs = sum(fold_by_name[items.at[a, ID]] != fold_by_name[items.at[b, ID]] for a, b in train_pairs)
    if split_pairs:
        log.warning("prepare: %d duplicate pairs are in different folds of %s (their validation leaks; "
                    "let prepare compute the folds to keep them together)", split_pairs, folds_path)


def _counts(shards: list[dict], train_only: bool) -> dict[str, int]:
    counts = {"train": int(sum(s["count"] for s in shards if s["split"] == "train" and not s["train_only"])),
              "test": int(sum(s["count"] for s in shards if s["split"] == "test"))}
    if train_only:
        counts["train_only"] = int(sum(s["count"] for s in shards if s["train_only"]))
    return counts


def _write_outputs(cfg: Config, out: str, folds: pd.DataFrame, dedup: Dedup, items: pd.DataFrame,
                   decoded: pd.DataFrame, ok: np.ndarray, manifest: Manifest) -> None:
    """folds.csv, duplicates.csv, image_sizes.csv, image_hashes.csv, the run info, and the manifest last (it
    marks completion)."""
    competition = PROFILES[manifest.details["competition"]]
    write_output(out, "folds.csv", competition.user_table(folds).to_csv(index=False).encode())
    write_output(out, "duplicates.csv", dedup.pairs.to_csv(index=False).encode())
    # Original sizes for the tabular stage (a strong feature: they tell the camera). Every decoded image, also
    # a duplicate left out of the shards: tabular needs a size for every row of train.csv and test.csv.
    sizes = pd.DataFrame({ID: items[ID], "split": _split_of(items), "width": decoded["w"], "height": decoded["h"]})
    write_output(out, "image_sizes.csv", sizes[ok].to_csv(index=False).encode())
    # Content hashes (dHash, 16 hex digits; empty for flat images): train.sources.external drops an external image
    # whose hash equals one of these competition images (image/external.py).
    hashes = pd.DataFrame({ID: items[ID], "split": _split_of(items), "image_hash": [
        f"{int(h):016x}" if h is not None and not pd.isna(h) else "" for h in decoded["dhash"]]})
    write_output(out, "image_hashes.csv", hashes[ok].to_csv(index=False).encode())
    save_run_info_to(out, cfg)
    write_manifest(manifest)
    remove_stale_shards(out, {manifest.file_of(s) for s in manifest.shards})


def run(cfg: Config, paths: RunPaths) -> Result:
    """The `prepare` stage (melanoma.runtime.stage): PATHS.data -> sharded TFRecords in PATHS.tfrecords, with the
    folds of PATHS.given_folds, or dealt here (with the duplicate pairs) when it is None."""
    manifest = prepare(cfg, paths.data, paths.tfrecords, paths.given_folds)
    return Result("prepare", {"tfrecords": paths.tfrecords}, detail=manifest)
