"""What `melanoma report` reports on by default: the config's image and tabular runs and its blend, into
report.out (default PATHS.runs/report)."""

from __future__ import annotations

from pathlib import Path


from melanoma.config import Config
from melanoma.runtime.place import auto_paths
from melanoma.errors import input_error
from melanoma.runtime.paths import image_run_configs, resolve_paths


def report_dir(cfg: Config) -> Path:
    """Where the report goes: report.out, else PATHS.runs/report."""
    return Path(cfg.report.out) if cfg.report.out else Path(auto_paths(cfg).runs) / "report"


def default_report_runs(cfg: Config) -> list[Path]:
    """The config's image and tabular runs and its blend (blend.json beside the submission), where they exist."""
    paths = resolve_paths(cfg)
    candidates = [r for _, r in image_run_configs(cfg, paths)] + [paths.tabular_run]
    runs = [d for d in candidates if (d / "oof.csv").is_file()]
    blend = paths.submission.parent / "blend.json"
    if blend.is_file() and paths.submission.is_file():
        runs.append(blend)
    if not runs:
        raise input_error(paths.image_run.parent, "no run to report on (no oof.csv in the image or tabular run "
                                                  "folder, no blend.json): give RUN_DIR arguments")
    return runs


def report_stage(cfg: Config) -> dict:
    from melanoma.report import report

    return report(cfg, default_report_runs(cfg), report_dir(cfg))
