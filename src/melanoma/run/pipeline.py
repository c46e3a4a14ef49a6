"""`melanoma run`: folds -> prepare -> train -> tabular -> blend -> report from one config, each stage called through
the stage registry (run/stages.py) with the same RunPaths.

Outputs land in the config's paths: PATHS.runs/folds.csv, PATHS.tfrecords/, PATHS.runs/image/,
PATHS.runs/tabular/, PATHS.submission (with blend.json beside it) and PATHS.runs/report/ (report.out). Every
stage reads the same folds.csv. A failing report is logged and named in the summary; it never undoes the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from melanoma.config import STAGES, Config
from melanoma.data.competition import ID_COLUMNS, internal_ids
from melanoma.data.schema import ID, TARGET
from melanoma.runtime.place import detect, previous_runs
from melanoma.errors import ConfigError, input_error
from melanoma.data.runs import read_metrics
from melanoma.scoring import METRICS, fmt_auc
from melanoma.run.stages import STAGES as STAGE_RUNS
from melanoma.runtime.paths import RunPaths, image_run_configs, resolve_paths
from melanoma.runtime.stage import Result

log = logging.getLogger("melanoma.run")


def test_auc(submission: Path, labels: Path, metric: str = "auc") -> float | None:
    """AUC (or `metric`: pauc) of a submission against held-out labels (image_name,target or ISIC 2024's
    isic_id,target), joined by id."""
    if not labels.is_file():
        raise input_error(labels, "test labels file not found")
    ids = {c: "string" for c in ID_COLUMNS}
    sub = internal_ids(pd.read_csv(submission, dtype=ids))
    truth = internal_ids(pd.read_csv(labels, dtype=ids))
    if ID not in truth.columns:
        raise input_error(labels, f"missing column '{ID}' (expected {ID},{TARGET} or isic_id,{TARGET})", 1)
    joined = truth.merge(sub, on=ID, suffixes=("_true", "_pred"), validate="one_to_one")
    if len(joined) != len(truth):
        raise input_error(labels, f"only {len(joined)} of its {len(truth)} ids are in {submission}")
    return METRICS[metric](joined[f"{TARGET}_true"], joined[f"{TARGET}_pred"])


def adopt_finished_folds(previous: Path, run_dir: Path) -> list[str]:
    """Copy the folds of an earlier session's image run (read-only, e.g. an attached notebook output) that
    this run folder lacks, so `train` resumes from them. Copies only: nothing here is changed or replaced."""
    if not (previous / "resume.json").is_file():
        return []
    run_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for fold in sorted(previous.glob("fold*")):
        target = run_dir / fold.name
        if not fold.is_dir() or target.exists():
            continue
        tmp = run_dir / f".tmp-{fold.name}"
        shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from an interrupted copy
        shutil.copytree(fold, tmp)
        os.replace(tmp, target)
        copied.append(fold.name)
    for name in ("resume.json", "config.yaml"):
        if (previous / name).is_file() and not (run_dir / name).exists():
            shutil.copy2(previous / name, run_dir / name)
    return copied


def adopt_previous_session(previous: Path, run_dirs: list[Path]) -> dict[str, list[str]]:
    """Each image run folder takes the finished folds of its namesake in an earlier session's runs/ (per folder,
    so chained Kaggle sessions continue across variants). Returns the folds copied per folder."""
    copied = {}
    for run_dir in run_dirs:
        copied[run_dir.name] = adopt_finished_folds(previous / run_dir.name, run_dir)
        log.info("== train: continuing the attached earlier session %s (%s)", previous / run_dir.name,
                 f"copied {', '.join(copied[run_dir.name])}" if copied[run_dir.name] else "nothing new to copy")
    return copied


def run_pipeline(cfg: Config) -> dict:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
    paths = resolve_paths(cfg)
    if "train" in cfg.stages:  # a TPU that is not there: refused before the first stage, not hours later
        from melanoma.runtime.backend import resolve_backend
        from melanoma.runtime.devices import check_devices

        dev = cfg.train.devices
        check_devices(dev.tpu, dev.allow_cpu_fallback, resolve_backend(dev.backend)[0])
    timings: dict[str, float] = {}
    active = list(cfg.stages)  # the stages still to run (a time-budget stop drops the ones after train)
    from melanoma.runtime.hosts import barrier, is_writer

    if not is_writer():  # the other hosts of a pod slice (docs/pods.md) train with process 0 and write nothing
        active[:] = [s for s in active if s == "train"]

    def timed(stage: str, fn, *args):
        if stage not in active:
            log.info("== %s: skipped (not in stages)", stage)
            return None
        log.info("== %s", stage)
        start = time.perf_counter()
        result = fn(*args)
        timings[stage] = round(time.perf_counter() - start, 1)
        log.info("== %s done in %.0f s", stage, timings[stage])
        return result

    if "folds" in cfg.stages and "prepare" in cfg.stages:
        log.info("== folds: dealt by prepare, which sees duplicate images")
        timed("prepare", _prepare_with_folds, cfg, paths)
    else:
        timed("folds", STAGE_RUNS["folds"], cfg, paths)
        # prepare alone reads the folds.csv an earlier run wrote
        timed("prepare", STAGE_RUNS["prepare"], cfg, dataclasses.replace(paths, given_folds=paths.folds))
    barrier("run: records prepared")  # on several hosts: process 0's records are there before any host reads
    image_runs = image_run_configs(cfg, paths)  # (config, folder): one, or one per variant
    if "train" in cfg.stages:
        previous = previous_runs(detect(cfg), cfg.kaggle.slug)
        if previous is not None and is_writer():
            adopt_previous_session(previous, [r for _, r in image_runs])
        barrier("run: earlier session adopted")
    left = timed("train", _train_images, paths, image_runs)
    if left and not cfg.blend.partial:
        # Blending the finished folds would make a submission that looks final; the next session finishes them.
        active[:] = [s for s in active if s not in ("tabular", "blend", "report")]
        log.warning("== tabular, blend, report: skipped: training stopped at train.checkpoints.time_budget with folds "
                    "left (%s); blend.partial=true blends the finished folds anyway", left)
    blend, report_error = _after_training(cfg, paths, image_runs, timed)
    summary = _summary(cfg, paths, image_runs, blend, timings)
    if left:
        summary["stopped"] = (f"training stopped at the time budget; {left}. Run the same command again (or the "
                              "next chained session) to finish" + ("" if cfg.blend.partial else
                                                                 "; no submission was written"))
    if "report" in active:
        summary["report"] = f"failed ({report_error})" if report_error else str(paths.report / "report.html")
    return summary


def _summary(cfg: Config, paths: RunPaths, image_runs: list, blend: Result | None, timings: dict) -> dict:
    summary = {"seconds": timings, "submission": str(paths.submission) if blend else None}
    for name, run_dir in (("image", paths.image_run), ("tabular", paths.tabular_run)):
        metrics = read_metrics(run_dir)
        summary[f"{name}_oof_auc"] = metrics.get("oof_auc")
        if metrics.get("metric") == "pauc":  # ISIC 2024: its metric first
            summary[f"{name}_oof_pauc"] = metrics.get("oof_pauc")
    if cfg.variants:
        summary.pop("image_oof_auc")
        summary["variants_oof_auc"] = {r.name: read_metrics(r).get("oof_auc") for _, r in image_runs}
    if blend:
        summary["blend_oof_auc"] = blend.metrics.get("blended_oof_auc")
        if blend.metrics.get("blended_oof_pauc") is not None:  # ISIC 2024: its metric first
            summary["blend_oof_pauc"] = blend.metrics["blended_oof_pauc"]
        if paths.test_labels is not None:
            summary["test_auc"] = test_auc(paths.submission, paths.test_labels)
            if "blend_oof_pauc" in summary:
                summary["test_pauc"] = test_auc(paths.submission, paths.test_labels, "pauc")
    return summary


def _prepare_with_folds(cfg: Config, paths: RunPaths) -> Result:
    """prepare hashes every image, so when it runs it deals the folds itself (make_folds with the duplicate
    pairs): duplicate images then land in one fold. Its folds.csv becomes the one every later stage reads."""
    from melanoma.data.folds import copy_prepared_folds

    result = STAGE_RUNS["prepare"](cfg, dataclasses.replace(paths, given_folds=None))
    copy_prepared_folds(paths.tfrecords, paths.folds, cfg)
    return result


def _train_images(paths: RunPaths, image_runs: list[tuple[Config, Path]]) -> str | None:
    """Train each image model (the train stage with its own image_run); None when every fold of every one is
    done, else what the time budget left (the models after it are not started)."""
    for i, (vcfg, run_dir) in enumerate(image_runs):
        if len(image_runs) > 1:
            log.info("== train: variant %d of %d -> %s", i + 1, len(image_runs), run_dir)
        result = STAGE_RUNS["train"](vcfg, dataclasses.replace(paths, image_run=run_dir))
        if not result.complete:
            return f"{run_dir.name}: {result.left}"
    return None


def _after_training(cfg: Config, paths: RunPaths, image_runs: list, timed) -> tuple[Result | None, str | None]:
    """tabular, blend and report (each only when in cfg.stages): the blend's result and the report's error."""
    timed("tabular", STAGE_RUNS["tabular"], cfg, paths)
    runs = [r for _, r in image_runs] if "train" in cfg.stages else []
    runs += [paths.tabular_run] if "tabular" in cfg.stages else []
    blend = timed("blend", STAGE_RUNS["blend"], cfg, dataclasses.replace(paths, runs=tuple(runs)))
    report_error = None
    try:
        timed("report", STAGE_RUNS["report"], cfg, paths)
    except Exception as e:  # noqa: BLE001 - the report reads what earlier stages wrote; it must never lose them
        log.exception("== report failed; the outputs of the other stages are complete and kept")
        report_error = f"{type(e).__name__}: {e}"
    return blend, report_error


def format_summary(summary: dict) -> str:
    lines = ["", "Summary"]
    for key, label in (("image_oof_pauc", "image model OOF pAUC"), ("image_oof_auc", "image model OOF AUC"),
                       ("tabular_oof_pauc", "tabular model OOF pAUC"), ("tabular_oof_auc", "tabular model OOF AUC"),
                       ("blend_oof_pauc", "blended OOF pAUC"),
                       ("blend_oof_auc", "blended OOF AUC"), ("test_pauc", "held-out test pAUC"),
                       ("test_auc", "held-out test AUC")):
        if key in summary:
            lines.append(f"  {label:<24} {fmt_auc(summary[key])}")
    for name, value in summary.get("variants_oof_auc", {}).items():
        lines.append(f"  {name + ' OOF AUC':<24} {fmt_auc(value)}")
    if summary.get("submission"):
        lines.append(f"  {'submission':<24} {summary['submission']}")
    if summary.get("stopped"):
        lines.append(f"  {'not finished':<24} {summary['stopped']}")
    if summary.get("report"):
        lines.append(f"  {'report':<24} {summary['report']}")
    total = sum(summary.get("seconds", {}).values())
    lines.append(f"  {'time':<24} {total / 60:.1f} min ({', '.join(f'{k} {v:.0f}s' for k, v in summary['seconds'].items())})")
    return "\n".join(lines)
