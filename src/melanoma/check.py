"""Leakage report: patients in both train and test, and duplicate images found by content.

Duplicates are found with a 64-bit difference hash (`images.dhash`) of each decoded image: two images are
near-duplicates when their hashes differ in at most `max_distance` bits. The search is a multi-index one, not
all pairs: the 64 bits are cut into max_distance + 1 bands, and two hashes within max_distance bits must agree
exactly on at least one band (pigeonhole), so only hashes sharing a band value are compared. At 50,000 images
that is milliseconds. A competition-style duplicates CSV (image_name_1, image_name_2) adds pairs by name.

`melanoma check` runs its own parallel hashing pass; `prepare` takes the hashes from its one decoding pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data import ID, PATIENT, TARGET
from melanoma.errors import input_error

log = logging.getLogger(__name__)

DUP_COLUMNS = ("image_name_1", "image_name_2")


def _bands(max_distance: int) -> list[tuple[int, int]]:
    n = max_distance + 1
    edges = np.linspace(0, 64, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j for every pair of hashes within max_distance bits; hashes: uint64 array."""
    if not 0 <= max_distance <= 15:
        raise ValueError(f"max_distance must be between 0 and 15 bits, got {max_distance}")
    h = np.asarray(hashes, dtype=np.uint64)
    found: dict[tuple[int, int], int] = {}
    for lo, hi in _bands(max_distance):
        band = (h >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(band, kind="stable")
        sorted_band = band[order]
        starts = np.flatnonzero(np.r_[True, sorted_band[1:] != sorted_band[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            members = np.sort(order[s:e])
            for a in range(len(members) - 1):
                i = members[a]
                rest = members[a + 1:]
                dist = np.bitwise_count(h[rest] ^ h[i])
                for j, d in zip(rest[dist <= max_distance], dist[dist <= max_distance]):
                    found[(int(i), int(j))] = int(d)
    return sorted((i, j, d) for (i, j), d in found.items())


def read_duplicates_csv(path: str | Path) -> pd.DataFrame:
    """A competition-style duplicates list: image_name_1, image_name_2 (other columns are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "duplicates file not found")
    df = pd.read_csv(path, dtype="string")
    for col in DUP_COLUMNS:
        if col not in df.columns:
            raise input_error(path, f"missing column '{col}' (expected {', '.join(DUP_COLUMNS)})", 1)
    df = df[list(DUP_COLUMNS)].apply(lambda s: s.str.strip())
    bad = df.isna().any(axis=1).to_numpy()
    if bad.any():
        raise input_error(path, "empty image name", int(np.flatnonzero(bad)[0]) + 2)
    return df


def union_groups(keys: list[str], pairs: list[tuple[int, int]]) -> np.ndarray:
    """Connected components (union-find) over items that share a key or are linked by a pair: a label each.

    Used to keep a patient's images and all duplicates of an image in one fold.
    """
    parent = list(range(len(keys)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        union(first.setdefault(k, i), i)
    for a, b in pairs:
        union(a, b)
    return np.array([find(i) for i in range(len(keys))], dtype=np.int64)


def find_duplicates(images: pd.DataFrame, max_distance: int, csv_pairs: pd.DataFrame | None = None
                    ) -> pd.DataFrame:
    """Duplicate pairs among `images` (columns image_name, split, dhash; dhash may be missing).

    Returns image_name_1, image_name_2, split_1, split_2, distance (-1 when only the CSV lists the pair),
    found_by (hash, csv or hash+csv); train rows first within a pair.
    """
    names = images[ID].to_numpy()
    splits = images["split"].to_numpy()
    has = images["dhash"].notna().to_numpy()
    idx = np.flatnonzero(has)
    hashes = np.array([int(v) for v in images["dhash"].to_numpy()[idx]], dtype=np.uint64)
    pairs: dict[tuple[int, int], list] = {}
    for a, b, d in near_duplicate_pairs(hashes, max_distance):
        pairs[(int(idx[a]), int(idx[b]))] = [d, "hash"]
    if csv_pairs is not None and len(csv_pairs):
        pos = {n: i for i, n in enumerate(names)}
        unknown = 0
        for n1, n2 in zip(csv_pairs[DUP_COLUMNS[0]], csv_pairs[DUP_COLUMNS[1]]):
            if n1 not in pos or n2 not in pos:
                unknown += 1
                continue
            key = tuple(sorted((pos[n1], pos[n2])))
            if key[0] == key[1]:
                continue
            if key in pairs:
                pairs[key][1] = "hash+csv"
            else:
                pairs[key] = [-1, "csv"]
        if unknown:
            log.info("duplicates CSV: %d pairs name images not in this data set (ignored)", unknown)
    rows = []
    for (a, b), (d, by) in sorted(pairs.items()):
        if splits[a] != "train" and splits[b] == "train":
            a, b = b, a
        rows.append({DUP_COLUMNS[0]: names[a], DUP_COLUMNS[1]: names[b], "split_1": splits[a],
                     "split_2": splits[b], "distance": d, "found_by": by})
    return pd.DataFrame(rows, columns=[*DUP_COLUMNS, "split_1", "split_2", "distance", "found_by"])


def leakage_report(train: pd.DataFrame, test: pd.DataFrame, duplicates: pd.DataFrame, max_distance: int) -> dict:
    """Patients in both sets and duplicate pairs within train / across train and test, as a JSON-able dict."""
    both = sorted(set(train[PATIENT]) & set(test[PATIENT]))
    within = duplicates[(duplicates.split_1 == "train") & (duplicates.split_2 == "train")]
    across = duplicates[(duplicates.split_1 == "train") & (duplicates.split_2 == "test")]
    within_test = duplicates[(duplicates.split_1 == "test") & (duplicates.split_2 == "test")]
    target = dict(zip(train[ID], train[TARGET]))
    conflicting = int(sum(target.get(a) != target.get(b) for a, b in zip(within[DUP_COLUMNS[0]],
                                                                          within[DUP_COLUMNS[1]])))
    return {
        "patients_in_train_and_test": {"count": len(both), "examples": both[:20]},
        "duplicates": {
            "max_distance_bits": max_distance,
            "within_train": int(len(within)),
            "train_test": int(len(across)),
            "within_test": int(len(within_test)),
            "within_train_with_different_targets": conflicting,
            "examples": duplicates.head(20).to_dict("records"),
        },
    }


def degenerate_summary(names, splits, reasons) -> dict:
    """The quality part of the report: every image flagged by images.degenerate (stripes, one colour, ...)."""
    images = [{"image_name": n, "split": s, "reason": r} for n, s, r in zip(names, splits, reasons)
              if isinstance(r, str)]
    return {"count": len(images), "images": images}


def format_report(report: dict) -> str:
    p, d = report["patients_in_train_and_test"], report["duplicates"]
    lines = [f"patients in both train and test: {p['count']}" + (f" (e.g. {p['examples'][0]})" if p["count"] else ""),
             f"duplicate images (dHash within {d['max_distance_bits']} bits, or listed): {d['within_train']} pairs "
             f"within train ({d['within_train_with_different_targets']} with different targets), "
             f"{d['train_test']} train/test, {d['within_test']} within test"]
    bad = report.get("degenerate_images")
    if bad is not None:  # every name, on one line: the list to remove or to review
        names = ", ".join(e["image_name"] for e in bad["images"])
        lines.append(f"degenerate images (stripes, a single colour, no detail): {bad['count']}"
                     + (f": {names}" if names else ""))
    return "\n".join(lines)


def hash_images(paths: list[str], size: int, max_pixels: int, workers: int, chunk: int = 64,
                progress=None) -> tuple[list[int | None], list[str | None], list[str | None]]:
    """dHash of every image (None where unreadable, with the reason) and why it is degenerate (None: it is
    not), decoded in parallel processes."""
    from melanoma.images import ImageSettings, map_chunks

    settings = ImageSettings(size=size, max_pixels=max_pixels, encode=False)
    jobs = [(paths[i:i + chunk], settings, None, "") for i in range(0, len(paths), chunk)]
    hashes: list[int | None] = [None] * len(paths)
    errors: list[str | None] = [None] * len(paths)
    flags: list[str | None] = [None] * len(paths)

    def done(j: int, index: dict) -> None:
        for k, entry in enumerate(index["images"]):
            hashes[j * chunk + k] = entry.get("dhash")
            errors[j * chunk + k] = entry.get("error")
            flags[j * chunk + k] = entry.get("degenerate")
        if progress is not None:
            progress(len(index["images"]))

    map_chunks(jobs, workers, done)
    return hashes, errors, flags


def run_check(cfg, data_dir: str | Path, duplicates_csv: str | Path | None, out: str | Path | None) -> dict:
    """The `check` command: the leakage report of a competition-layout folder (printed; JSON with --out)."""
    from melanoma.data import image_path, read_test, read_train
    from melanoma.files import write_csv, write_json
    from melanoma.progress import progress_bar

    pcfg = cfg.prepare
    train, test = read_train(data_dir, cfg.data.patient_id), read_test(data_dir, cfg.data.patient_id)
    images = pd.concat([train[[ID]].assign(split="train"), test[[ID]].assign(split="test")], ignore_index=True)
    paths = [str(image_path(data_dir, s, n)) for n, s in zip(images[ID], images["split"])]
    exists = [os.path.isfile(p) for p in paths]
    workers = pcfg.workers if pcfg.workers > 0 else (os.cpu_count() or 1)
    with progress_bar(sum(exists), "check") as bar:
        todo = [p for p, e in zip(paths, exists) if e]
        hashes, errors, flags = hash_images(todo, pcfg.size, pcfg.max_pixels, workers, progress=bar.update)
    it = iter(zip(hashes, errors, flags))
    full = [next(it) if e else (None, "file does not exist", None) for e in exists]
    images["dhash"] = pd.array([h for h, _, _ in full], dtype="object")
    csv_pairs = read_duplicates_csv(duplicates_csv) if duplicates_csv else None
    dups = find_duplicates(images, pcfg.dup_max_distance, csv_pairs)
    report = leakage_report(train, test, dups, pcfg.dup_max_distance)
    report["degenerate_images"] = degenerate_summary(images[ID], images["split"], [f for _, _, f in full])
    bad = [{"image_name": n, "split": s, "reason": r} for n, s, (_, r, _) in zip(images[ID], images["split"], full)
           if r]
    report["unreadable_images"] = {"count": len(bad), "images": bad}
    print(format_report(report) + f"\nunreadable images: {len(bad)}")
    if out is not None:
        out = Path(out)
        write_json(out, report)
        write_csv(out.with_name(f"{out.stem}.duplicates.csv"), dups)
    return report
