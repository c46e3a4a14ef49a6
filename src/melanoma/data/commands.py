"""`melanoma folds`, `prepare` and `check`: their flags, actions and output plans (melanoma.config.command)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from melanoma.config.command import Command, Plan
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, beside, existing, folds_outputs, json_with, run_folder
from melanoma.runtime.paths import resolve_paths

PREPARE_WRITES = ("folds.csv", "duplicates.csv", "image_sizes.csv", "image_hashes.csv", "manifest.json",
                  "config.yaml", "run.json")


# ---------------------------------------------------------------- folds

def _folds_arguments(p) -> None:
    config_flags(p, "paths.data", "n_folds", "seed")
    p.add_argument("--out", type=Path, help="folds.csv to write")
    p.add_argument("--tfrecords", help="public Kaggle TFRecords whose train.csv has a `tfrecord` column: "
                                       "folds follow their files")


def _folds(args, load) -> None:
    from melanoma.data.folds import run

    cfg = load(args)
    paths = resolve_paths(cfg)
    run(cfg, dataclasses.replace(paths, folds=args.out or paths.folds, tfrecords=args.tfrecords))


def _folds_plan(args, cfg) -> Plan:
    p = resolve_paths(cfg)
    return folds_outputs(args.out or p.folds), {"--data": p.data, "--tfrecords": args.tfrecords}


# ---------------------------------------------------------------- prepare

def _prepare_arguments(p) -> None:
    config_flags(p, "paths.data", "paths.tfrecords", "prepare.size", "n_folds", "seed", "prepare.resize",
                 "prepare.quality", "prepare.workers", "prepare.on_bad_image", "prepare.external",
                 "prepare.duplicates", "prepare.drop_duplicates", "prepare.upsample_malignant", "prepare.lesion",
                 "prepare.segmenter", renames={"paths.tfrecords": "--out"})
    p.add_argument("--folds-file", type=Path, help="use this folds.csv instead of computing folds")


def _prepare(args, load) -> None:
    from melanoma.data.prepare import run

    cfg = load(args)
    paths = resolve_paths(cfg)
    # --out as given (a str): a Path would fold gs://bucket into gs:/bucket.
    run(cfg, dataclasses.replace(paths, tfrecords=args.out or paths.tfrecords, given_folds=args.folds_file))


def prepare_out(path, flag: str = "--out") -> Out:
    return Out(path, folder=True, flag=flag, own=run_folder("prepare", markers=(".prepare-work",)),
               writes=PREPARE_WRITES)


def prepare_inputs(cfg, paths) -> dict[str, Any]:
    pc = cfg.prepare
    return {"--data": paths.data, "prepare.external": [existing(e) for e in pc.external],
            "prepare.duplicates": pc.duplicates, "prepare.segmenter": pc.segmenter}


def _prepare_plan(args, cfg) -> Plan:
    p = resolve_paths(cfg)
    return [prepare_out(args.out or p.tfrecords)], {**prepare_inputs(cfg, p), "--folds-file": args.folds_file}


# ---------------------------------------------------------------- check

def _check_arguments(p) -> None:
    config_flags(p, "paths.data", "prepare.duplicates", "prepare.dup_max_distance", "prepare.workers",
                 renames={"prepare.dup_max_distance": "--max-distance"})
    p.add_argument("--out", type=Path, help="report.json to write (and REPORT.duplicates.csv beside it)")


def _check(args, load) -> None:
    from melanoma.data.check import run_check

    cfg = load(args)
    run_check(cfg, resolve_paths(cfg).data, cfg.prepare.duplicates, args.out)


def _check_plan(args, cfg) -> Plan:
    if args.out is None:  # prints only
        return [], {}
    out = Path(args.out)
    own = json_with("degenerate_images", "unreadable_images")
    # "", "." or "/": no file name, so no sidecar either (the guard refuses the folder as a file output)
    dups = [Out(out.with_name(f"{out.stem}.duplicates.csv"), own=beside(out, own))] if out.name else []
    return [Out(out, own=own), *dups], {"--data": resolve_paths(cfg).data, "--duplicates": cfg.prepare.duplicates}


COMMANDS = [
    Command("folds", "patient-level stratified folds: train.csv -> folds.csv", _folds_arguments, _folds,
            plan=_folds_plan),
    Command("prepare", "competition layout -> sharded TFRecords, folds.csv, manifest.json", _prepare_arguments,
            _prepare, plan=_prepare_plan),
    Command("check", "leakage report: patients in train and test, duplicate images by content", _check_arguments,
            _check, plan=_check_plan),
]
