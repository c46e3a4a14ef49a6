"""`melanoma export RUN_DIR --out model/`: one inference artefact per trained image run.

model/ holds model.keras (the fold models averaged inside one graph, or one model with averaged weights),
model.json (input size, prepare's resize mode and JPEG settings, the metadata encoding, TTA, the calibrator
and thresholds of the report, versions), a TF SavedModel (`savedmodel/`, on the TensorFlow backend) and
model.onnx where tf2onnx converts the backbone. Everything is built in a staging folder and moved in at the
end, so a failed export leaves the previous one as it was.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np

from melanoma import __version__
from melanoma.config import Config, load_config, to_dict
from melanoma.data.schema import SEX, SITE
from melanoma.errors import ConfigError, input_error
from melanoma.files import read_json, staged_dir, write_json
from melanoma.data.manifest import load_manifest
from melanoma.data import metadata
from melanoma.data.records import VOCABULARIES
from melanoma.data.lesion import INFO_FILE as SEGMENTER_INFO, MODEL_FILE as SEGMENTER_FILE, file_sha256, \
    resolve_segmenter
from melanoma.serve.artifact import FORMAT_VERSION, INFO_FILE, MODEL_FILE

log = logging.getLogger(__name__)
DEFAULT_THRESHOLDS = {"p50": 0.5}  # when the report exported none: a label at probability 0.5
# what a previous export of ours left in model/
OWN = (MODEL_FILE, INFO_FILE, "model.onnx", "savedmodel", SEGMENTER_FILE, SEGMENTER_INFO)


def run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise input_error(run_dir, "no config.yaml: not a run folder written by `melanoma train`")
    return load_config(path)


def finished_folds(run_dir: Path, wanted: list[int] | None) -> dict[int, Path]:
    """fold -> its prediction weights (done.json names best or last), for the finished folds asked for."""
    done = {int(p.parent.name[4:]): p for p in run_dir.glob("fold*/done.json") if p.parent.name[4:].isdigit()}
    if not done:
        raise input_error(run_dir, "no finished fold (foldK/done.json): train the run first")
    folds = sorted(done) if wanted is None else wanted
    missing = [k for k in folds if k not in done]
    if missing:
        raise ConfigError(f"export.folds: fold {missing[0]} is not finished in {run_dir} "
                          f"(finished: {', '.join(map(str, sorted(done)))})")
    out = {}
    for k in folds:
        weights = done[k].parent / read_json(done[k]).get("weights", "best.weights.h5")
        if not weights.is_file():
            raise input_error(done[k], f"names {weights.name}, which does not exist")
        out[k] = weights
    return out


def check_metadata_layout(run_dir: Path, run_cfg: Config) -> None:
    """A metadata run trained before the current layout (run.json without it) is refused in one line: its
    models take a vector of another width (melanoma.data.metadata)."""
    if not run_cfg.train.meta.enabled:
        return
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    problem = metadata.layout_problem(info.get("metadata_layout"), run_dir)
    if problem:
        raise ConfigError(problem)


def input_spec(run_cfg: Config, tfrecords: str | None) -> tuple[dict, int | None, dict]:
    """(prepare settings, stored side, vocabularies) as the run's records were made.

    From the records' Manifest when the folder is ours; the public Kaggle TFRecords have no manifest.json, so
    the run config's prepare section stands in, and the train reader resized every record (stored side None).
    """
    p = run_cfg.prepare
    m = load_manifest(tfrecords) if tfrecords else None
    if m is not None and m.image_size is not None:
        prep = {"size": m.image_size, "resize": m.resize or p.resize, "quality": m.quality or p.quality,
                "max_pixels": p.max_pixels,
                "lesion": m.lesion or {"mode": "none"}}  # manifests before the lesion step had none
        return prep, m.image_size, {k: m.vocabulary(k) for k in (SEX, SITE)}
    log.warning("export: no manifest.json in %s: preprocessing taken from the run's prepare settings (%dpx, %s, "
                "quality %d); pass --tfrecords with the run's records folder to use theirs", tfrecords, p.size,
                p.resize, p.quality)
    segmenter, sha = resolve_segmenter(p.segmenter) if p.lesion != "none" else (None, None)
    prep = {"size": p.size, "resize": p.resize, "quality": p.quality, "max_pixels": p.max_pixels,
            "lesion": {"mode": p.lesion, "margin": p.lesion_margin, "segmenter": segmenter, "segmenter_sha256": sha}}
    return prep, None, {k: list(VOCABULARIES[k]) for k in (SEX, SITE)}


def ship_segmenter(lesion: dict, stage: Path) -> dict:
    """The lesion step for model.json: a trained segmenter is copied into the export folder (checked against
    the sha256 prepare recorded, so predictions use the very masks training saw) and named relative to it."""
    source = lesion.get("segmenter")
    if lesion.get("mode", "none") == "none" or not source:
        return lesion
    source = Path(source)
    if not source.is_file():
        raise input_error(source, "the segmenter prepare used (manifest.json, lesion) is gone: it must be "
                                  "exported with the model")
    if file_sha256(source) != lesion.get("segmenter_sha256"):
        raise input_error(source, "changed since prepare used it (sha256 differs from manifest.json): "
                                  "re-run prepare and train with it, or restore the file")
    shutil.copyfile(source, stage / SEGMENTER_FILE)
    shutil.copyfile(source.with_name(SEGMENTER_INFO), stage / SEGMENTER_INFO)
    return {**lesion, "segmenter": SEGMENTER_FILE, "segmenter_from": str(source)}


def load_fold_model(run_cfg: Config, weights: Path):
    """The fold's trained model, for inference: built as training built it, without the augmentation layer."""
    from melanoma.image.heads import head_classes
    from melanoma.image.models import build_model, melanoma_output
    from melanoma.data.metadata import META_DIM

    t = run_cfg.train
    meta_dim = META_DIM if t.meta.enabled else 0
    k, column = head_classes(t)  # a diagnosis head's (or residual metadata's) model outputs only that column
    fusion = t.meta.fusion
    try:
        return melanoma_output(build_model(t.model, t.size, str(weights), t.dropout, meta_dim=meta_dim, classes=k,
                                           meta_fusion=fusion), column)
    except ConfigError:
        # Trained with augmentation inside the model (GPU/TPU default): load it that way, then copy the
        # weights of every other layer into a model without it (Augment does nothing at inference anyway).
        trained = build_model(t.model, t.size, str(weights), t.dropout, meta_dim=meta_dim,
                              augment=to_dict(t.augment), classes=k, meta_fusion=fusion)
        model = build_model(t.model, t.size, None, t.dropout, meta_dim=meta_dim, classes=k, meta_fusion=fusion)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(trained.get_layer(layer.name).get_weights())
        return melanoma_output(model, column)


def combined_model(models: list, combine: str, flips: bool, size: int, meta: bool):
    """One inference graph: uint8 image (and metadata) in, the mean probability of every fold and view out."""
    import keras

    from melanoma.image.models import image_input
    from melanoma.image.augment import FLIP_VIEWS as FLIPS
    from melanoma.image.augment import Flip

    if combine == "average" and len(models) > 1:
        mean = [np.mean(ws, axis=0) for ws in zip(*(m.get_weights() for m in models))]
        models[0].set_weights(mean)
        models = models[:1]
    image = image_input(size)  # the models' own input: the same uint8 pixels as in training
    meta_in = keras.Input((models[0].inputs[1].shape[-1],), name="meta") if meta else None
    views = [image] + ([Flip(axes, name=name)(image) for name, axes in FLIPS.items()] if flips else [])
    preds = []
    for k, m in enumerate(models):
        fold = keras.Model(m.input, m.output, name=f"member{k}")  # unique names inside one graph
        preds += [fold({"image": v, "meta": meta_in} if meta else v) for v in views]
    out = keras.layers.Average(name="pred")(preds) if len(preds) > 1 else keras.layers.Identity(name="pred")(preds[0])
    return keras.Model({"image": image, "meta": meta_in} if meta else image, out, name="melanoma")


def report_extras(report_dir: Path | None, run_dir: Path) -> tuple[dict | None, dict[str, float], str | None]:
    """(calibrator, thresholds, where from) for the exported run, from its section of the report folder's
    report.json: the operating points' thresholds (chosen on the OOF) and the calibrator file it wrote."""
    from melanoma import calibration

    if report_dir is None or not (report_dir / "report.json").is_file():
        return None, {}, None
    report = read_json(report_dir / "report.json")
    target = run_dir.resolve()
    section = next((r for r in report.get("runs", []) if Path(r.get("path", "")).resolve() == target), None)
    if section is None:
        log.warning("export: %s/report.json has no section for %s: no thresholds or calibrator exported",
                    report_dir, run_dir)
        return None, {}, None
    thresholds = {op["name"]: float(op["threshold"]) for op in section.get("operating_points", [])
                  if op.get("threshold") is not None and 0 <= op["threshold"] <= 1}
    cal_info = section.get("calibration") or {}
    calibrator = calibration.load_calibrator(report_dir / cal_info["file"]) if cal_info.get("file") else None
    return calibrator, thresholds, str(report_dir)


def export(cfg: Config, run_dir: str | Path, out: str | Path) -> dict:
    """The `export` command. Returns the model.json it wrote."""
    import keras

    run_dir, out, ecfg = Path(run_dir), Path(out), cfg.export
    run_cfg = run_config(run_dir)
    t = run_cfg.train
    weights = finished_folds(run_dir, ecfg.folds)
    check_metadata_layout(run_dir, run_cfg)
    prep, stored, vocab = input_spec(run_cfg, ecfg.tfrecords or run_cfg.paths.tfrecords)
    prep["max_pixels"] = cfg.prepare.max_pixels  # the limit is the server's policy, not the run's
    flips = t.tta_flips if ecfg.tta_flips is None else ecfg.tta_flips
    if t.tta and not flips:
        log.info("export: the run averaged %d random TTA passes; random passes are not exported", t.tta)
    models = [load_fold_model(run_cfg, w) for w in weights.values()]
    model = combined_model(models, ecfg.combine, flips, t.size, t.meta.enabled)
    # default: the report `melanoma run` writes beside the run (PATHS.runs/report), or one inside the run folder
    report_dir = Path(ecfg.report) if ecfg.report else next(
        (d for d in (run_dir / "report", run_dir.parent / "report") if d.is_dir()), None)
    calibrator, thresholds, report_from = report_extras(report_dir, run_dir)
    if ecfg.report and report_from is None:
        raise input_error(ecfg.report, "export.report: folder not found")
    config_text = (run_dir / "config.yaml").read_bytes()
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    info = {
        "format_version": FORMAT_VERSION,
        "model_version": f"{t.model}-{t.size}px-{hashlib.sha256(config_text).hexdigest()[:8]}"
                         f"-f{''.join(map(str, weights))}",
        "package": {"name": "melanoma", "version": __version__, "keras": keras.__version__,
                    "backend": keras.backend.backend()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": {"dir": str(run_dir), "config_sha256": hashlib.sha256(config_text).hexdigest(),
                "run_json": read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else None,
                "oof_auc": metrics.get("oof_auc"), "oof_auc_no_tta": metrics.get("oof_auc_no_tta")},
        "model": {"name": t.model, "folds": list(weights), "combine": ecfg.combine,
                  "weights": [str(w.relative_to(run_dir)) for w in weights.values()]},
        "input": {"size": t.size, "stored_size": stored, "prepare": prep, "layout": "NHWC", "dtype": "uint8",
                  "range": [0, 255], "note": "melanoma.data.images.model_input(bytes, prepare, size, stored_size)"},
        "metadata": {**metadata.info(t.meta.enabled, vocab), "fusion": t.meta.fusion if t.meta.enabled else None,
                     "dropout": {"field": t.meta.field_dropout, "row": t.meta.row_dropout} if t.meta.enabled else None},
        "tta": {"flips": bool(flips), "random_passes_in_training": t.tta},
        "calibrator": calibrator,
        "thresholds": thresholds or dict(DEFAULT_THRESHOLDS),
        "thresholds_from": report_from if thresholds else "default (no report thresholds)",
        "formats": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    with staged_dir(out, "export") as stage:
        model.save(stage / MODEL_FILE)
        info["formats"]["keras"] = MODEL_FILE
        info["formats"]["savedmodel"] = _savedmodel(model, stage) if ecfg.savedmodel else "off"
        info["formats"]["onnx"] = _onnx(model, stage, t.size, t.meta.enabled) if ecfg.onnx else "off"
        prep["lesion"] = ship_segmenter(prep["lesion"], stage)
        write_json(stage / INFO_FILE, info)
        _remove_previous(out)
    log.info("export: %s (%s, folds %s, %s) -> %s; savedmodel: %s; onnx: %s", run_dir, t.model, list(weights),
             ecfg.combine, out, info["formats"]["savedmodel"], info["formats"]["onnx"])
    return info


def _remove_previous(out: Path) -> None:
    """Our own earlier artefacts only (a folder with our model.json), so a stale file never outlives its export."""
    if not (out / INFO_FILE).is_file():
        return
    for name in OWN:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _savedmodel(model, stage: Path) -> str:
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"skipped: the {keras.backend.backend()} backend (export on TensorFlow for a SavedModel)"
    model.export(str(stage / "savedmodel"), format="tf_saved_model", verbose=False)
    return "savedmodel"


def _onnx(model, stage: Path, size: int, meta: bool) -> str:
    """model.onnx through tf2onnx, checked against Keras on a random batch; any failure is reported, not raised."""
    import importlib.util

    if importlib.util.find_spec("tf2onnx") is None:
        return "skipped: tf2onnx is not installed (pip install 'melanoma[onnx]')"
    path = stage / "model.onnx"
    try:
        model.export(str(path), format="onnx", verbose=False)
    except Exception as e:  # a converter failure (unsupported op, version clash) must not cost the export
        path.unlink(missing_ok=True)
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return _check_onnx(model, path, size, meta)


def _check_onnx(model, path: Path, size: int, meta: bool) -> str:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "model.onnx (not verified: onnxruntime is not installed)"
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (2, size, size, 3)).astype(np.uint8)}
    if meta:
        x["meta"] = np.zeros((2, model.inputs[1].shape[-1]), np.float32)
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        if len(names) != len(x):  # e.g. constants the converter turned into inputs: not usable as it stands
            raise ValueError(f"the ONNX graph has {len(names)} inputs ({', '.join(names)[:150]}), "
                             f"the model {len(x)}")
        feeds = {n: x["meta" if "meta" in n else "image"] for n in names}
        got = np.asarray(sess.run(None, feeds)[0]).reshape(-1)
    except Exception as e:  # onnxruntime raises its own types for graphs it cannot load or run
        path.unlink()
        return f"failed: onnxruntime cannot run it: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    want = np.asarray(model.predict_on_batch(x if meta else x["image"])).reshape(-1)
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        path.unlink()
        return f"failed: ONNX output differs from Keras by {err:.2g}"
    return "model.onnx"
