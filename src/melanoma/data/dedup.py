"""Duplicate images: found by content hash (and a competition-style CSV), grouped, and thinned.

The one dedup step that `prepare`, `check` and the folds share: `find_duplicates` lists the pairs,
`trusted_pairs` drops implausibly large chains, `union_groups` links patients and duplicates (the folds'
groups), `drop_duplicates` keeps one image per group.

Duplicates are found with a 64-bit difference hash (`images.dhash`) of each decoded image: two images are
near-duplicates when their hashes differ in at most `max_distance` bits. The search is a multi-index one, not
all pairs: the 64 bits are cut into max_distance + 1 bands, and two hashes within max_distance bits must agree
exactly on at least one band (pigeonhole), so only hashes sharing a band value are compared. At 50,000 images
that is milliseconds. A competition-style duplicates CSV (image_name_1, image_name_2) adds pairs by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.schema import ID, TARGET
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


def drop_duplicates(train_idx: np.ndarray, items: pd.DataFrame, pairs: list[tuple[int, int]]) -> dict[int, int]:
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


def trusted_pairs(pairs: list[tuple[int, int]], n: int, max_group: int = 8) -> list[tuple[int, int]]:
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
