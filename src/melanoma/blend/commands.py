"""`melanoma blend`: its flags, action and output plan (imports nothing heavy: SciPy loads in the action)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from melanoma.config.command import Command, Plan
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, existing, run_inputs, stage_of, with_run_info
from melanoma.runtime.paths import resolve_paths


def _arguments(p) -> None:
    config_flags(p, "paths.submission", "paths.sample_submission", "blend.method", "blend.power",
                 "blend.tabular_weight", "blend.step", renames={"paths.submission": "--out"})
    p.add_argument("--runs", type=Path, nargs="+", help="run folders (each with oof.csv and test_pred.csv)")


def _paths(args, cfg):
    p = resolve_paths(cfg)
    if not args.runs:
        return p
    # With explicit --runs, validate only against an explicitly named sample submission, never the one the
    # default data folder happens to hold.
    return dataclasses.replace(p, runs=tuple(args.runs), sample_submission=cfg.paths.sample_submission)


def _blend(args, load) -> None:
    from melanoma.blend.stage import run

    cfg = load(args)
    run(cfg, _paths(args, cfg))


def blend_outputs(path, flag: str = "--out") -> list[Out]:
    path = Path(path)
    own = lambda q: stage_of(q.parent) == "blend"  # noqa: E731  (blend.json and run.json beside it)
    return with_run_info(path, own, "blend", flag=flag) + [Out(path.parent / "blend.json", own=own, flag=flag)]


def _plan(args, cfg) -> Plan:
    p = _paths(args, cfg)
    runs = p.runs or [p.image_run, p.tabular_run]
    return blend_outputs(p.submission), {"--runs": run_inputs(runs), "--sample-submission": p.sample_submission,
                                         "blend.calibrate": existing(cfg.blend.calibrate)}


COMMANDS = [
    Command("blend", "blend run folders on OOF AUC and write submission.csv", _arguments, _blend, plan=_plan),
]
