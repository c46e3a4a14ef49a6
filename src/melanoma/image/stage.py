"""The `train` stage (melanoma.runtime.stage): one image model on PATHS.tfrecords into PATHS.image_run.

`melanoma run` calls it once per variant, each with its own image_run (runtime.paths.image_run_configs).
TensorFlow is imported when the stage runs, never at import: the CLI fixes the backend first.
"""

from __future__ import annotations

from melanoma.config import Config
from melanoma.runtime.paths import RunPaths
from melanoma.runtime.stage import Result


def run(cfg: Config, paths: RunPaths) -> Result:
    from melanoma.image.train import train

    metrics = train(cfg, paths.tfrecords, paths.image_run)
    return Result("train", {"run": paths.image_run}, {"oof_auc": metrics.get("oof_auc")},
                  complete=metrics.get("complete") is not False, left=metrics.get("left"), detail=metrics)
