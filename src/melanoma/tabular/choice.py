"""What every tabular recipe shares: one model's predictions (`ModelRun`), the choice among several on the
competition's metric, and the cleanup of model folders an earlier `auto`/`all` run left."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.files import read_json

log = logging.getLogger("melanoma.tabular")


@dataclasses.dataclass
class ModelRun:
    """One model's out-of-fold and test predictions and its metrics.json extras; `oof_auc` is its OOF score on
    the metric the choice is made on (AUC for siim2020, the competition's metric otherwise)."""

    name: str
    oof: pd.DataFrame
    test_pred: pd.DataFrame
    extra: dict[str, Any]
    oof_auc: float | None
    members: list[Any] = dataclasses.field(default_factory=list)  # the fitted models behind test_pred (isic2024)


def best_of(names: list[str], scores: dict[str, float | None]) -> str:
    """The name with the highest score (a missing score is the lowest; the first of equals wins)."""
    return max(names, key=lambda n: -np.inf if scores[n] is None else scores[n])


def remove_stale_model_dirs(out_dir: Path, keep: list[str], every: list[str]) -> None:
    """Drop RUN/<model>/ folders (of the `every` names) an earlier `all` or `auto` run left, so a run folder
    never mixes two runs."""
    for name in every:
        sub = out_dir / name
        if name in keep or not (sub / "run.json").is_file():
            continue
        try:
            if read_json(sub / "run.json").get("stage") == "tabular":
                shutil.rmtree(sub)
                log.info("tabular: removed %s from an earlier run", sub)
        except (OSError, ValueError):
            log.warning("tabular: %s is from an earlier run and could not be removed", sub)
