"""Where the pipeline runs (a Kaggle notebook, Colab or elsewhere) and the paths that place implies.

| place  | detected by                                   | inputs                                   | outputs         |
|--------|-----------------------------------------------|------------------------------------------|-----------------|
| kaggle | KAGGLE_KERNEL_RUN_TYPE set                    | /kaggle/input/<competition>, <tfrecords> | /kaggle/working |
| colab  | COLAB_RELEASE_TAG set or google.colab loaded  | kaggle.colab_root (kaggle.colab_tfrecords)| kaggle.colab_root |
| local  | otherwise                                     | the config's paths                       | the config's paths |

Only the `paths.*` keys left at their defaults are replaced: a path set in the config or on the command
line always wins (a key set to exactly its default value counts as left at the default). The inputs
folder has the layout `melanoma kaggle download` writes: <competition>/ and melanoma-SxS/ side by side.
The TFRecords default to the public dataset at `prepare.size` when that folder exists, else to
OUTPUTS/tfrecords (where `prepare` can write them: /kaggle/input is read-only).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melanoma.kaggle import TFRECORD_DATASETS

log = logging.getLogger(__name__)

KAGGLE_ROOT = "/kaggle"  # the one place the Kaggle mount points are named


@dataclass(frozen=True)
class Place:
    name: str  # kaggle | colab | local
    inputs: str | None = None  # folder holding <competition>/ and the TFRecord dataset folders
    outputs: str | None = None  # runs/ and submission.csv go here
    tfrecords: str | None = None  # an explicit TFRecords folder (Colab: a gs:// bucket)


def detect(cfg: Any, environ: Mapping[str, str] | None = None, modules: Mapping[str, Any] | None = None,
           kaggle_root: str | Path = KAGGLE_ROOT) -> Place:
    """The place we run in, with its roots (parameters, so tests can fake a Kaggle or Colab machine)."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        root = Path(kaggle_root)
        return Place("kaggle", str(root / "input"), str(root / "working"))
    if environ.get("COLAB_RELEASE_TAG") or "google.colab" in modules:
        k = cfg.kaggle
        return Place("colab", k.colab_root, k.colab_root, k.colab_tfrecords)
    return Place("local")


def place_paths(cfg: Any, place: Place) -> dict[str, str]:
    """The paths.* values the place implies (empty for local)."""
    if place.inputs is None or place.outputs is None:
        return {}
    inputs, outputs = Path(place.inputs), Path(place.outputs)
    dataset = TFRECORD_DATASETS.get(cfg.prepare.size)
    public = inputs / dataset.split("/")[1] if dataset else None
    tfrecords = place.tfrecords or str(public if public is not None and public.is_dir() else outputs / "tfrecords")
    return {"data": str(inputs / cfg.kaggle.competition), "tfrecords": tfrecords, "runs": str(outputs / "runs"),
            "submission": str(outputs / "submission.csv")}


def auto_paths(cfg: Any, place: Place | None = None) -> Any:
    """cfg.paths with the keys left at their defaults replaced by the place's paths."""
    place = detect(cfg) if place is None else place
    defaults = type(cfg.paths)()
    changed = {key: value for key, value in place_paths(cfg, place).items()
               if getattr(cfg.paths, key) == getattr(defaults, key)}
    if changed:
        log.info("paths: running on %s; default paths set to %s", place.name,
                 ", ".join(f"{k}={v}" for k, v in changed.items()))
    return dataclasses.replace(cfg.paths, **changed)
