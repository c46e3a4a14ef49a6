"""`melanoma report` and `compare`: their flags, actions and output plans (SciPy and scikit-learn load in the
actions, never at import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from melanoma.config.command import Command, Plan
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, json_with, run_inputs
from melanoma.runtime.paths import resolve_paths


def _report_arguments(p) -> None:
    p.add_argument("runs", type=Path, nargs="*", metavar="RUN_DIR",
                   help="run folders, or a blend's folder / blend.json (default: the config's image and tabular "
                        "runs and blend, where they exist)")
    config_flags(p, "report.out", "paths.data", "paths.tfrecords", "paths.test_labels", "report.bootstrap",
                 "report.seed", "report.gradcam")


def _report(args, load) -> None:
    from melanoma.report.stage import run

    cfg = load(args)
    result = run(cfg, dataclasses.replace(resolve_paths(cfg), runs=tuple(args.runs) or None))
    print(result.outputs["report"])


def report_out(path, flag: str = "--out") -> Out:
    return Out(path, folder=True, flag=flag, own=lambda q: json_with("runs", "figures", "settings")(q / "report.json"),
               writes=("report.json", "report.html", "calibrator.json"))


def _report_plan(args, cfg) -> Plan:
    from melanoma.report.defaults import default_report_runs

    p = resolve_paths(cfg)
    runs = args.runs or default_report_runs(cfg, p)
    return [report_out(p.report)], {"RUN_DIR": run_inputs(runs), "--data": p.data, "--tfrecords": p.tfrecords,
                                    "--test-labels": p.test_labels}


def _compare_arguments(p) -> None:
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    config_flags(p, "paths.data", "report.bootstrap", "report.seed")


def _compare(args, load) -> None:
    from melanoma.report.build import compare, format_compare

    cfg = load(args)
    print(format_compare(compare(cfg, args.run_a, args.run_b, args.out)))


def _compare_plan(args, cfg) -> Plan:
    return [Out(args.out, own=json_with("run_a", "run_b", "diff"))], {
        "RUN_A": run_inputs([args.run_a]), "RUN_B": run_inputs([args.run_b]), "--data": resolve_paths(cfg).data}


COMMANDS = [
    Command("report", "evaluation report of runs or blends: report.html, report.json, PNGs", _report_arguments,
            _report, plan=_report_plan, keras=True),
    Command("compare", "paired OOF AUC difference of two runs: patient bootstrap and DeLong", _compare_arguments,
            _compare, plan=_compare_plan),
]
