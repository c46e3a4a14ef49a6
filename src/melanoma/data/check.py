"""Leakage report: patients in both train and test, and duplicate images found by content (`melanoma check`).

Duplicates come from `dedup` (the same step `prepare` uses); `melanoma check` runs its own parallel hashing
pass, while `prepare` takes the hashes from its one decoding pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from melanoma.data.schema import ID, PATIENT, TARGET
from melanoma.data.dedup import DUP_COLUMNS, find_duplicates, read_duplicates_csv

log = logging.getLogger(__name__)

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


def format_leakage_report(report: dict) -> str:
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
    from melanoma.data.images import ImageSettings, map_chunks

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
    from melanoma.data.schema import image_path, read_test, read_train
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
    print(format_leakage_report(report) + f"\nunreadable images: {len(bad)}")
    if out is not None:
        out = Path(out)
        write_json(out, report)
        write_csv(out.with_name(f"{out.stem}.duplicates.csv"), dups)
    return report
