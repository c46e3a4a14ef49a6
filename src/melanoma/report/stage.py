"""The `report` stage (melanoma.runtime.stage): the runs of PATHS.runs (default: the config's image and tabular
runs and its blend, where they exist) -> PATHS.report (report.out, default PATHS.runs/report)."""

from __future__ import annotations

from melanoma.config import Config
from melanoma.report.defaults import default_report_runs
from melanoma.runtime.paths import RunPaths
from melanoma.runtime.stage import Result


def run(cfg: Config, paths: RunPaths) -> Result:
    from melanoma.report.build import report

    summary = report(cfg, list(paths.runs) if paths.runs else default_report_runs(cfg, paths), paths.report)
    return Result("report", {"report": paths.report / "report.html"}, detail=summary)
