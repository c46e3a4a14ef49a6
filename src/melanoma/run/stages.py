"""The stage registry: stage name -> its `run(cfg, paths) -> Result` (melanoma.runtime.stage), filled once.

The names are config.STAGES (declared there once; checked at import below). `melanoma run` chains the stages
through this registry (run/pipeline.py); the single-stage commands (`folds`, `prepare`, `train`, ...) call the same
`run` functions. No stage module imports TensorFlow or Keras at import time (the train stage imports them when it
runs, after the CLI has fixed the backend), so importing them all here costs scikit-learn's import only.
"""

from __future__ import annotations

from melanoma.blend import stage as blend
from melanoma.config import STAGES as NAMES
from melanoma.data import folds, prepare
from melanoma.image import stage as image
from melanoma.report import stage as report
from melanoma.runtime.stage import Stage
from melanoma.tabular import stage as tabular

STAGES: dict[str, Stage] = {"folds": folds.run, "prepare": prepare.run, "train": image.run, "tabular": tabular.run,
                            "blend": blend.run, "report": report.run}
if tuple(STAGES) != tuple(NAMES):  # one list of names: config.STAGES, in the order `melanoma run` chains them
    raise ImportError(f"melanoma.run.stages registers {tuple(STAGES)}, but config.STAGES is {tuple(NAMES)}")
