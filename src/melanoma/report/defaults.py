"""What `melanoma report` reports on by default: the config's image and tabular runs and its blend (the report
goes to RunPaths.report: report.out, default PATHS.runs/report)."""

from __future__ import annotations

from pathlib import Path


from melanoma.config import Config
from melanoma.errors import input_error
from melanoma.runtime.paths import RunPaths, image_run_configs, resolve_paths


def default_report_runs(cfg: Config, paths: RunPaths | None = None) -> list[Path]:
    """The config's image and tabular runs and its blend (blend.json beside the submission), where they exist."""
    paths = resolve_paths(cfg) if paths is None else paths
    candidates = [r for _, r in image_run_configs(cfg, paths)] + [paths.tabular_run]
    runs = [d for d in candidates if (d / "oof.csv").is_file()]
    blend = paths.submission.parent / "blend.json"
    if blend.is_file() and paths.submission.is_file():
        runs.append(blend)
    if not runs:
        raise input_error(paths.image_run.parent, "no run to report on (no oof.csv in the image or tabular run "
                                                  "folder, no blend.json): give RUN_DIR arguments")
    return runs
