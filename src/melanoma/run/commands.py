"""`melanoma run`: its action (run/pipeline.py, imported when it runs) and its output plan: every stage's outputs
at the config's paths."""

from __future__ import annotations

from pathlib import Path

from melanoma.config.command import Command, Plan, no_arguments
from melanoma.blend.commands import blend_outputs
from melanoma.data.commands import prepare_inputs, prepare_out
from melanoma.image.commands import train_inputs, train_out
from melanoma.outputs import folds_outputs, run_inputs
from melanoma.report.commands import report_out
from melanoma.runtime.paths import image_run_configs, resolve_paths
from melanoma.tabular.commands import tabular_out


def _run(args, load) -> None:
    cfg = load(args)
    from melanoma.run import format_summary, run_pipeline

    print(format_summary(run_pipeline(cfg)))


def _plan(args, cfg) -> Plan:
    """The outputs of the stages in cfg.stages; what a stage left out would have written is an input instead
    (`stages: [train, blend]` reads the TFRecords folder and folds.csv of an earlier run)."""
    p = resolve_paths(cfg)
    stages = set(cfg.stages)
    outputs = [*([prepare_out(p.tfrecords, "paths.tfrecords")] if "prepare" in stages else []),
               *(folds_outputs(p.folds, "paths.runs") if "folds" in stages else []),
               *(train_out(d, "paths.runs") for _, d in image_run_configs(cfg, p) if "train" in stages),
               *([tabular_out(p.tabular_run, "paths.runs")] if "tabular" in stages else []),
               *(blend_outputs(p.submission, "paths.submission") if "blend" in stages else []),
               *([report_out(p.report, "report.out")] if "report" in stages else [])]
    inputs = {**prepare_inputs(cfg, p), **train_inputs(cfg, None),
              "paths.tfrecords": None if "prepare" in stages else p.tfrecords,
              "paths.folds": None if "folds" in stages else p.folds,
              "paths.sample_submission": cfg.paths.sample_submission, "paths.test_labels": p.test_labels,
              "tabular.image_runs": _image_run_inputs(cfg, p, stages)}
    return outputs, inputs


def _image_run_inputs(cfg, p, stages: set[str]) -> list:
    """What tabular reads of tabular.image_runs, less the image runs this run trains (outputs of its train)."""
    if "tabular" not in stages:
        return []
    trained = {str(d.resolve()) for _, d in image_run_configs(cfg, p)} if "train" in stages else set()
    return run_inputs([r for r in cfg.tabular.image_runs if str(Path(r).resolve()) not in trained])


COMMANDS = [
    Command("run", "chain the stages from one config", no_arguments, _run, plan=_plan, keras=True,
            devices=lambda cfg: "train" in cfg.stages),
]
