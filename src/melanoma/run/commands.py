"""`melanoma run`: its action (run/pipeline.py, imported when it runs) and its output plan: every stage's outputs
at the config's paths."""

from __future__ import annotations

from melanoma.config.command import Command, Plan, no_arguments
from melanoma.blend.commands import blend_outputs
from melanoma.data.commands import prepare_inputs, prepare_out
from melanoma.image.commands import train_inputs, train_out
from melanoma.outputs import folds_outputs
from melanoma.report.commands import report_out
from melanoma.runtime.paths import image_run_configs, resolve_paths
from melanoma.tabular.commands import tabular_out


def _run(args, load) -> None:
    cfg = load(args)
    from melanoma.run import format_summary, run_pipeline

    print(format_summary(run_pipeline(cfg)))


def _plan(args, cfg) -> Plan:
    p = resolve_paths(cfg)
    outputs = [prepare_out(p.tfrecords, "paths.tfrecords"), *folds_outputs(p.folds, "paths.runs"),
               *(train_out(d, "paths.runs") for _, d in image_run_configs(cfg, p)),
               tabular_out(p.tabular_run, "paths.runs"), *blend_outputs(p.submission, "paths.submission"),
               report_out(p.report, "report.out")]
    inputs = {**prepare_inputs(cfg, p), **train_inputs(cfg, None), "paths.sample_submission":
              cfg.paths.sample_submission, "paths.test_labels": p.test_labels}
    return outputs, inputs


COMMANDS = [
    Command("run", "chain the stages from one config", no_arguments, _run, plan=_plan, keras=True,
            devices=lambda cfg: "train" in cfg.stages),
]
