"""prepare, phase 2: plan the shards and write them from the spool, through tf.io.gfile (`gs://` works).

Each shard goes to a temporary name and is renamed when complete; its size and sha256 are recorded in the
work folder's plan.json, so a resumed run verifies and keeps it. TensorFlow is imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.config import Config, save_run_info
from melanoma.data.decode import kill_hook, stage_bar
from melanoma.data.manifest import MANIFEST, load_manifest
from melanoma.data.records import parse_shard_name, serialize_example, shard_name
from melanoma.data.schema import TARGET
from melanoma.errors import InputError
from melanoma.files import write_json

log = logging.getLogger("melanoma.data.prepare")  # one logger for the whole stage

# Test hook: kill this process (SIGKILL) in the middle of the Nth shard.
KILL_AFTER_SHARDS = "MELANOMA_PREPARE_KILL_AFTER_SHARDS"


# ---------------------------------------------------------------- output through tf.io.gfile


def is_remote(path: str) -> bool:
    return "://" in path



def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if is_remote(folder) else str(Path(folder) / name)



def write_output(out: str, name: str, data: bytes) -> None:
    """Atomically write OUT/name, locally or on a gfile filesystem (gs://)."""
    import tensorflow as tf

    final = join(out, name)
    tmp = join(out, f".{name}.tmp")
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, final, overwrite=True)



def sha256_of(path: str) -> str:
    import tensorflow as tf

    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- plan and write


def _split(idx: list[int], per_shard: int) -> list[list[int]]:
    if not idx:
        return []
    return [list(c) for c in np.array_split(np.array(idx), max(1, math.ceil(len(idx) / per_shard)))]



def plan_shards(items, decoded, fold_of_item, keep, n_folds, per_shard, upsample, seed, chunk_keys) -> list[dict]:
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

    final = join(out, shard["file"])
    tmp = join(out, f".{shard['file']}.tmp")
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
                    kill_hook(KILL_AFTER_SHARDS, kill_at)  # mid-shard: leaves a temporary file, as a kill would
        tf.io.gfile.rename(tmp, final, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
    return {"bytes": int(tf.io.gfile.stat(final).length), "sha256": sha256_of(final)}



def _verified(shard: dict, record: dict | None, out: str) -> bool:
    import tensorflow as tf

    if not record or record.get("key") != shard["key"] or record.get("file") != shard["file"]:
        return False
    path = join(out, shard["file"])
    return (tf.io.gfile.exists(path) and tf.io.gfile.stat(path).length == record.get("bytes")
            and sha256_of(path) == record.get("sha256"))



def _previous_records(out: str, work: Path) -> dict[str, dict]:
    """Shards recorded as complete by a finished run (manifest.json) or an interrupted one (plan.json)."""
    try:
        found = load_manifest(out)
    except InputError:  # damaged: its shards are verified anew (sha256) like any others
        found = None
    docs = [found.to_dict()] if found is not None else []
    plan = work / "plan.json"
    if plan.is_file():
        try:
            docs.append(json.loads(plan.read_text()))
        except (OSError, ValueError):
            pass
    records: dict[str, dict] = {}
    for doc in docs:
        for s in doc.get("shards", []):
            if "sha256" in s:
                records[s["file"]] = s
    return records



def write_shards(plan: list[dict], out: str, work: Path, items: pd.DataFrame, decoded: pd.DataFrame
                  ) -> list[dict]:
    import tensorflow as tf

    previous = _previous_records(out, work)
    manifest_path = join(out, MANIFEST)
    if tf.io.gfile.exists(manifest_path):  # the folder is changing: it is incomplete until the new manifest
        tf.io.gfile.remove(manifest_path)
    for stale in tf.io.gfile.glob(join(out, ".*.tfrec.tmp")):  # left by a killed run
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
    bar = stage_bar(sum(s["count"] for s in todo), "prepare: write")
    with bar:
        for n, s in enumerate(todo):
            info = _write_shard(s, out, items, decoded, work / "chunks", bar.update, n)
            done[s["file"]] = {"file": s["file"], "key": s["key"], **info}
            save_plan()
    return [{k: v for k, v in s.items() if k != "items"} | done[s["file"]] for s in plan]



def remove_stale_shards(out: str, keep: set[str]) -> None:
    """Drop shards of an earlier run that this run's manifest does not list, so readers never mix runs."""
    import tensorflow as tf

    for path in tf.io.gfile.glob(join(out, "*.tfrec")):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if parse_shard_name(name) and name not in keep:
            tf.io.gfile.remove(path)



def save_run_info_to(out: str, cfg: Config) -> None:
    if not is_remote(out):
        save_run_info(out, cfg, "prepare")
        return
    with tempfile.TemporaryDirectory() as tmp:  # save_run_info writes locally: copy its files up
        save_run_info(tmp, cfg, "prepare")
        for f in Path(tmp).iterdir():
            write_output(out, f.name, f.read_bytes())
