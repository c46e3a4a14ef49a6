"""`melanoma tabular`: its flags, action and output plan (imports nothing heavy: scikit-learn loads in the action)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from melanoma.config.command import Command, Plan
from melanoma.config.flags import config_flags, folds_flag
from melanoma.outputs import Out, run_folder, run_inputs
from melanoma.runtime.paths import resolve_paths

TABULAR_WRITES = ("oof.csv", "test_pred.csv", "metrics.json", "config.yaml", "run.json", "features.csv",
                  "image_stats.csv")


def _arguments(p) -> None:
    config_flags(p, "paths.data", "paths.tfrecords", "tabular.model", "seed", "tabular.image_runs",
                 nargs={"tabular.image_runs": ("+", "RUN")})
    folds_flag(p, "--folds-file", "folds.csv (written by `folds` or `prepare`)", type=Path)
    p.add_argument("--out", type=Path, help="run folder to write")


def _paths(args, cfg):
    from melanoma.config import is_explicit

    p = resolve_paths(cfg)
    # Image sizes only from a TFRecords folder that was asked for, never one that merely exists by default.
    return dataclasses.replace(p, folds=args.folds_file or p.folds, tabular_run=args.out or p.tabular_run,
                               tfrecords=p.tfrecords if is_explicit(cfg, "paths.tfrecords") else None)


def _tabular(args, load) -> None:
    from melanoma.tabular.stage import run

    cfg = load(args)
    run(cfg, _paths(args, cfg))


def tabular_out(path, flag: str = "--out") -> Out:
    return Out(path, folder=True, flag=flag, own=run_folder("tabular"), writes=TABULAR_WRITES)


def _plan(args, cfg) -> Plan:
    p = _paths(args, cfg)
    return [tabular_out(p.tabular_run)], {"--data": p.data, "--folds-file": p.folds, "--tfrecords": p.tfrecords,
                                          "--image-runs": run_inputs(cfg.tabular.image_runs)}


COMMANDS = [
    Command("tabular", "metadata model on the same folds (siim2020: SMOTE + MLP, logistic regression, boosting; "
                       "isic2024: boosted trees on the lesion measurements), optionally on image runs' predictions",
            _arguments,
            _tabular, plan=_plan),
]
