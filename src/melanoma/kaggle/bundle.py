"""`melanoma kaggle upload-models RUNS... --out BUNDLE`: the models of an ISIC 2024 submission in one folder, and
that folder as a private Kaggle dataset, for the internet-off inference notebook (`melanoma infer --bundle`).

RUNS are image runs (`melanoma train`) and at most one ISIC 2024 tabular run (`melanoma tabular`, which keeps its
models in RUN/models/). BUNDLE gets:

    imageK/          each image run exported (melanoma.serve.export; Keras file only: no SavedModel, no ONNX)
    tabular/         the tabular run's models/, config.yaml, run.json, metrics.json
    bundle.json      what is inside (image_models in the order the tabular models take their predictions, the
                     runs they came from, the package version); written last: a bundle without it is unfinished
    dataset-metadata.json   the dataset's id and title for the Kaggle API

A tabular run stacked on image runs (tabular --image-runs) brings those runs along in its order (imageK is its
image_runK), whether or not RUNS lists them; an image run in RUNS that it was not stacked on is refused, since its
predictions would be computed and never used. Without a tabular run, `infer` averages the image models.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
from pathlib import Path
from typing import Any

from melanoma import __version__
from melanoma.errors import ConfigError, input_error
from melanoma.files import read_json, staged_dir, write_json
from melanoma.outputs import stage_of
from melanoma.serve.infer import BUNDLE_FILE, BUNDLE_FORMAT

log = logging.getLogger("melanoma.kaggle")
TABULAR_FILES = ("config.yaml", "run.json", "metrics.json")


def split_runs(runs: list[Path]) -> tuple[list[Path], Path | None]:
    """(image runs, the tabular run) of RUNS, each checked in one line."""
    from melanoma.tabular.saved import INFO, MODELS_DIR

    images, tabular = [], []
    for run in runs:
        stage = stage_of(run)
        if stage == "train":
            images.append(run)
        elif stage == "tabular" and (run / MODELS_DIR / INFO).is_file():
            tabular.append(run)
        elif stage == "tabular":
            raise input_error(run, f"a tabular run without {MODELS_DIR}/{INFO}: only ISIC 2024 tabular runs of "
                                   "this version keep their models (re-run `melanoma tabular`)")
        else:
            raise input_error(run, "not an image run (`melanoma train`) or a tabular run (`melanoma tabular`): "
                                   "no run.json naming either")
    if len(tabular) > 1:
        raise ConfigError(f"upload-models: {len(tabular)} tabular runs ({', '.join(map(str, tabular))}): a bundle "
                          "holds one (blend them into one run first, or choose one)")
    return images, tabular[0] if tabular else None


def image_models(images: list[Path], tabular: Path | None) -> list[Path]:
    """The image runs to export, in the order the tabular models take their predictions."""
    if tabular is None:
        if not images:
            raise ConfigError("upload-models: no run given: name image runs, a tabular run, or both")
        return images
    from melanoma.tabular.saved import INFO, MODELS_DIR

    stacked = [Path(r["path"]) for r in read_json(tabular / MODELS_DIR / INFO)["image_runs"]]
    for run in stacked:
        if stage_of(run) != "train":
            raise input_error(tabular / MODELS_DIR / INFO, f"names image run {run}, which is not there (run "
                                                           "upload-models from where `tabular` ran)")
    known = {r.resolve() for r in stacked}
    extra = [r for r in images if r.resolve() not in known]
    if extra:
        raise ConfigError(f"upload-models: {extra[0]} is not an image run of {tabular} (its image runs: "
                          f"{', '.join(map(str, stacked)) or 'none'}): its predictions would never be used")
    added = [r for r in stacked if r.resolve() not in {i.resolve() for i in images}]
    if added:
        log.info("upload-models: %s brings its image run(s) %s", tabular, ", ".join(map(str, added)))
    return stacked


def _remove_previous(out: Path) -> None:
    """An earlier bundle here: bundle.json first (so a half-replaced bundle reads as unfinished), then the
    folders it named."""
    path = out / BUNDLE_FILE
    if not path.is_file():
        return
    old = read_json(path)
    path.unlink()
    for rel in [*(old.get("image_models") or []), *([old["tabular"]] if old.get("tabular") else [])]:
        shutil.rmtree(out / rel, ignore_errors=True)


def build_bundle(cfg: Any, runs: list[Path], out: Path, ref: str) -> dict[str, Any]:
    """Write BUNDLE (see the module docstring) for the dataset OWNER/SLUG `ref`; returns bundle.json."""
    import dataclasses

    from melanoma.serve.export import export

    images, tabular = split_runs([Path(r) for r in runs])
    exported = image_models(images, tabular)
    # The notebook needs the Keras file only: a SavedModel or ONNX copy would double the upload.
    ecfg = dataclasses.replace(cfg.export, savedmodel=False, onnx=False)
    cfg = dataclasses.replace(cfg, export=ecfg)
    names = [f"image{i}" for i in range(len(exported))]
    out.mkdir(parents=True, exist_ok=True)
    with staged_dir(out, "bundle") as stage:
        for name, run in zip(names, exported):
            export(cfg, run, stage / name)
        if tabular is not None:
            from melanoma.tabular.saved import MODELS_DIR

            shutil.copytree(tabular / MODELS_DIR, stage / "tabular" / MODELS_DIR)
            for name in TABULAR_FILES:
                if (tabular / name).is_file():
                    shutil.copy2(tabular / name, stage / "tabular" / name)
        write_json(stage / "dataset-metadata.json", {"title": ref.split("/")[1], "id": ref,
                                                     "licenses": [{"name": "other"}]})
        _remove_previous(out)
    info = {"format_version": BUNDLE_FORMAT, "competition": "isic2024", "dataset": ref,
            "package": {"name": "melanoma", "version": __version__},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "image_models": names, "image_runs": [str(r) for r in exported],
            "tabular": "tabular" if tabular is not None else None,
            "tabular_run": str(tabular) if tabular is not None else None,
            "tabular_model": read_json(tabular / "metrics.json").get("model") if tabular is not None and
            (tabular / "metrics.json").is_file() else None}
    write_json(out / BUNDLE_FILE, info)  # last: the bundle is complete
    log.info("upload-models: %s: %d image model(s)%s", out, len(names),
             f" and the tabular models of {tabular}" if tabular is not None else "")
    return info
