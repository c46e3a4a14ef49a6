"""The one stage protocol: every pipeline stage is `run(cfg: Config, paths: RunPaths) -> Result`.

The stages (data/folds.py, data/prepare.py, image/stage.py, tabular/stage.py, blend/stage.py, report/stage.py)
each expose `run`; melanoma/run/stages.py registers them once under the names of `config.STAGES`, and both
`melanoma run` and the single-stage commands call them. Everything a stage reads or writes is in `paths`
(a command's `--out` or `--folds-file` replaces the field it names: dataclasses.replace).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    stage: str
    outputs: dict[str, Path | str]  # its main outputs by name (folds.csv, the run folder, submission.csv)
    metrics: dict[str, Any] = field(default_factory=dict)  # headline numbers (oof_auc, blended_oof_auc)
    complete: bool = True  # False when the time budget stopped it with work left (train); `left` says what
    left: str | None = None
    detail: Any = None  # what the inner implementation returned (the folds table, the manifest, the blend)


Stage = Callable[[Any, Any], Result]  # run(cfg, paths)
