"""Where the pipeline runs (a Kaggle notebook, Colab or elsewhere) and the paths that place implies.

| place  | detected by                                   | inputs                                    | outputs           |
|--------|-----------------------------------------------|-------------------------------------------|-------------------|
| kaggle | KAGGLE_KERNEL_RUN_TYPE set                    | /kaggle/input (see below)                 | /kaggle/working   |
| colab  | COLAB_RELEASE_TAG set or google.colab loaded  | kaggle.colab_root (kaggle.colab_tfrecords) | kaggle.colab_root |
| local  | otherwise                                     | the config's paths                        | the config's paths |

Kaggle mounts a notebook's inputs at /kaggle/input/competitions/<slug>/ and /kaggle/input/datasets/<owner>/<slug>/
today; older notebooks saw /kaggle/input/<slug>/. Both layouts are searched, the new one first; inside a real
Kaggle notebook `kagglehub` is asked last (it returns the mounted path of an attached input).

Only the `paths.*` keys left at their defaults are replaced: a path set in the config or on the command line
always wins (a key set to exactly its default value counts as left at the default). The TFRecords default to
the public dataset at `prepare.size` when it is attached, else to OUTPUTS/tfrecords (where `prepare` can write
them: /kaggle/input is read-only). `explain_paths` says where each value came from (`melanoma doctor`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melanoma.runtime.datasets import TFRECORD_DATASETS

log = logging.getLogger(__name__)

KAGGLE_ROOT = "/kaggle"  # the one place the Kaggle mount points are named


@dataclass(frozen=True)
class Place:
    name: str  # kaggle | colab | local
    inputs: str | None = None  # /kaggle/input, or the Colab root holding <competition>/
    outputs: str | None = None  # runs/ and submission.csv go here
    tfrecords: str | None = None  # an explicit TFRecords folder (Colab: a gs:// bucket)


def detect(cfg: Any, environ: Mapping[str, str] | None = None, modules: Mapping[str, Any] | None = None,
           kaggle_root: str | Path | None = None) -> Place:
    """The place we run in, with its roots (parameters, so tests can fake a Kaggle or Colab machine;
    MELANOMA_KAGGLE_ROOT moves /kaggle for a rehearsal of a notebook on another machine)."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        root = Path(kaggle_root or environ.get("MELANOMA_KAGGLE_ROOT") or KAGGLE_ROOT)
        return Place("kaggle", str(root / "input"), str(root / "working"))
    if environ.get("COLAB_RELEASE_TAG") or "google.colab" in modules:
        if cfg is None:  # the caller needs only the place's name
            return Place("colab")
        k = cfg.kaggle
        return Place("colab", k.colab_root, k.colab_root, k.colab_tfrecords)
    return Place("local")


# --------------------------------------------------------------------------------------------------------
# Kaggle's input mounts

def competition_candidates(inputs: Path, slug: str) -> list[tuple[Path, str]]:
    return [(inputs / "competitions" / slug, "kaggle mount (competitions/)"), (inputs / slug, "kaggle mount (old)")]


def dataset_candidates(inputs: Path, ref: str) -> list[tuple[Path, str]]:
    """ref = owner/slug."""
    owner, slug = ref.split("/")
    return [(inputs / "datasets" / owner / slug, "kaggle mount (datasets/)"), (inputs / slug, "kaggle mount (old)")]


def notebook_candidates(inputs: Path, ref: str) -> list[tuple[Path, str]]:
    """Where a notebook's output appears when it is attached as an input (kernel_sources); ref = owner/slug."""
    owner, slug = ref.split("/")
    return [(inputs / "notebooks" / owner / slug, "kaggle mount (notebooks/)"), (inputs / slug, "kaggle mount (old)")]


def first_dir(candidates: list[tuple[Path, str]]) -> tuple[Path, str] | None:
    return next(((p, why) for p, why in candidates if p.is_dir()), None)


Locator = Callable[[str, str], str | None]  # (kind: competition | dataset, ref) -> a mounted path or None


def kagglehub_locator(kind: str, ref: str) -> str | None:
    """Ask kagglehub for an attached input: inside Kaggle it returns the mount path without downloading."""
    try:
        import kagglehub
    except ImportError:
        return None
    fetch = kagglehub.competition_download if kind == "competition" else kagglehub.dataset_download
    try:
        return str(fetch(ref))
    except Exception as e:  # noqa: BLE001 - kagglehub raises many kinds; a miss here only means "not attached"
        log.debug("kagglehub could not find %s %s: %s", kind, ref, e)
        return None


def _real_kaggle(place: Place) -> bool:
    return place.name == "kaggle" and place.inputs == str(Path(KAGGLE_ROOT) / "input")


def locate(place: Place, kind: str, ref: str, locator: Locator | None = None) -> tuple[Path, str] | None:
    """The folder of an attached competition or dataset, and how it was found; None when it is not attached."""
    inputs = Path(place.inputs or ".")
    found = first_dir(competition_candidates(inputs, ref) if kind == "competition" else dataset_candidates(inputs, ref))
    if found:
        return found
    locator = locator if locator is not None else (kagglehub_locator if _real_kaggle(place) else None)
    hit = locator(kind, ref) if locator else None
    return (Path(hit), "kagglehub") if hit and Path(hit).is_dir() else None


# --------------------------------------------------------------------------------------------------------
# paths

def place_paths(cfg: Any, place: Place, locator: Locator | None = None) -> dict[str, tuple[str, str]]:
    """The paths.* values the place implies, each with where it came from (empty for local)."""
    if place.inputs is None or place.outputs is None:
        return {}
    inputs, outputs = Path(place.inputs), Path(place.outputs)
    slug = cfg.kaggle.competition
    if place.name == "kaggle":
        found = locate(place, "competition", slug, locator)
        # Not attached: name today's mount point, so the error message shows where Kaggle would put it.
        data = found or (competition_candidates(inputs, slug)[0][0], "kaggle mount (not attached)")
    else:
        data = (inputs / slug, f"{place.name} root")
    dataset = TFRECORD_DATASETS.get(cfg.prepare.size)
    public = locate(place, "dataset", dataset, locator) if dataset and place.name == "kaggle" else None
    if place.tfrecords:
        tfrecords = (place.tfrecords, f"{place.name} setting (kaggle.colab_tfrecords)")
    elif public:
        tfrecords = (str(public[0]), f"{public[1]}: {dataset}")
    else:
        tfrecords = (str(outputs / "tfrecords"), f"{place.name} outputs (no public TFRecords attached)")
    return {"data": (str(data[0]), data[1]), "tfrecords": tfrecords,
            "runs": (str(outputs / "runs"), f"{place.name} outputs"),
            "submission": (str(outputs / "submission.csv"), f"{place.name} outputs")}


def explain_paths(cfg: Any, place: Place | None = None, locator: Locator | None = None) -> dict[str, dict[str, str]]:
    """Every paths.* value after detection, with its source: config, default, or the place's rule."""
    place = detect(cfg) if place is None else place
    defaults = type(cfg.paths)()
    implied = place_paths(cfg, place, locator)
    out = {}
    for f in dataclasses.fields(cfg.paths):
        value, default = getattr(cfg.paths, f.name), getattr(defaults, f.name)
        if value == default and f.name in implied:
            value, source = implied[f.name]
        else:
            source = "default" if value == default else "config"
        out[f.name] = {"value": value, "source": source}
    return out


def auto_paths(cfg: Any, place: Place | None = None, locator: Locator | None = None) -> Any:
    """cfg.paths with the keys left at their defaults replaced by the place's paths."""
    place = detect(cfg) if place is None else place
    defaults = type(cfg.paths)()
    changed = {key: value for key, (value, _) in place_paths(cfg, place, locator).items()
               if getattr(cfg.paths, key) == getattr(defaults, key)}
    if changed:
        log.info("paths: running on %s; default paths set to %s", place.name,
                 ", ".join(f"{k}={v}" for k, v in changed.items()))
    return dataclasses.replace(cfg.paths, **changed)


def previous_runs(place: Place, slug: str) -> Path | None:
    """The runs/ folder of this notebook's previous version when it is attached as an input (kernel_sources):
    /kaggle/input/notebooks/<owner>/<slug>/runs today, /kaggle/input/<slug>/runs before."""
    if place.name != "kaggle" or place.inputs is None:
        return None
    inputs = Path(place.inputs)
    for folder in [*sorted(inputs.glob(f"notebooks/*/{slug}")), inputs / slug]:
        if (folder / "runs").is_dir():
            return folder / "runs"
    return None
