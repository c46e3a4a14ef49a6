"""`melanoma export`, `predict`, `infer` and `serve`: their flags, actions (export.py, predict.py, app.py, imported when the
command runs) and output plans."""

from __future__ import annotations

from pathlib import Path

from melanoma.config.command import Command, Plan
from melanoma.config.flags import config_flags
from melanoma.errors import input_error
from melanoma.outputs import Out, csv_with, json_with, run_inputs


def _export_arguments(p) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `melanoma train`")
    p.add_argument("--out", type=Path, required=True, help="artefact folder to write, e.g. model/")
    config_flags(p, "export.tfrecords", "export.report", "export.combine", "export.folds", "train.devices.backend")


def _export(args, load) -> None:
    from melanoma.serve.export import export

    print(export(load(args), args.run_dir, args.out)["model_version"])


def _export_plan(args, cfg) -> Plan:
    from melanoma.runtime.paths import resolve_paths
    from melanoma.serve.export import OWN

    own = lambda q: json_with("format_version", "model_version")(q / "model.json")  # noqa: E731
    e = cfg.export
    return [Out(args.out, folder=True, own=own, writes=OWN)], {
        "RUN_DIR": run_inputs([args.run_dir]), "--tfrecords": e.tfrecords or resolve_paths(cfg).tfrecords,
        "--report": e.report}


def _predict_arguments(p) -> None:
    p.add_argument("--model", type=Path, required=True, help="folder written by `melanoma export`")
    p.add_argument("--images", type=Path, required=True,
                   help="a folder of images, or a CSV with image_name or path (and optional metadata columns)")
    p.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    config_flags(p, "predict.image_dir", "predict.batch_size", "predict.workers", "train.devices.backend")


def _predict(args, load) -> None:
    from melanoma.serve.predict import run_predict

    run_predict(load(args), args.model, args.images, args.out)


def _predict_plan(args, cfg) -> Plan:
    images: list[Path] = [args.images]
    if Path(args.images).is_file():  # a CSV: the images it lists are inputs too (bad CSVs stop here, one line)
        from melanoma.data.hdf5 import TILE_SEP
        from melanoma.serve.predict import PATH, list_images

        listed = list_images(args.images, cfg.predict.image_dir)[PATH]
        images += sorted({Path(q.split(TILE_SEP)[0] if TILE_SEP in q else q) for q in listed})  # tiles: their file
    from melanoma.data.competition import ID_COLUMNS

    ours = [csv_with(idc, "path", "probability") for idc in ID_COLUMNS]  # image_name, or ISIC 2024's isic_id
    return [Out(args.out, own=lambda p: any(own(p) for own in ours))], {
        "--model": args.model, "--images": images, "--image-dir": cfg.predict.image_dir}


def _infer_arguments(p) -> None:
    p.add_argument("--bundle", type=Path, required=True,
                   help="the folder `melanoma kaggle upload-models` builds (bundle.json, image models, tabular models)")
    p.add_argument("--data", type=Path, required=True, help="the folder of test-metadata.csv and test-image.hdf5")
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write (isic_id,target)")
    config_flags(p, "predict.batch_size", "predict.workers", "train.devices.backend")


def _infer(args, load) -> None:
    from melanoma.serve.infer import run_infer

    run_infer(load(args), args.bundle, args.data, args.out)


def _infer_plan(args, cfg) -> Plan:
    from melanoma.serve.infer import timing_path

    out = Path(args.out)
    if not out.name or out.is_dir():  # the timing file is named after it: OUT must be a file
        raise input_error(out, "is a folder: give the submission file to write, e.g. --out submission.csv")
    return [Out(out, own=csv_with("isic_id", "target")),
            Out(timing_path(out), own=json_with("projected_tiles", "steps"))], {
        "--bundle": [args.bundle, Path(args.bundle) / "bundle.json"], "--data": args.data}


def _serve_arguments(p) -> None:
    p.add_argument("--model", type=Path, required=True, help="folder written by `melanoma export`")
    config_flags(p, "serve.host", "serve.port", "serve.threshold", "train.devices.backend")


def _serve(args, load) -> None:
    cfg = load(args)
    from melanoma.serve import require_extra

    require_extra()  # before FastAPI is imported: a missing extra is one line (exit 3), never an ImportError
    from melanoma.serve.app import serve

    serve(args.model, cfg.serve)


COMMANDS = [
    Command("export", "a trained image run -> model/ (model.keras, model.json, SavedModel, ONNX)", _export_arguments,
            _export, plan=_export_plan, keras=True),
    Command("predict", "batch prediction on image files with an exported model", _predict_arguments, _predict,
            plan=_predict_plan, keras=True),
    Command("infer", "ISIC 2024 inference: a bundle's image and tabular models on test-metadata.csv + "
            "test-image.hdf5 -> submission.csv", _infer_arguments, _infer, plan=_infer_plan, keras=True),
    Command("serve", "REST service for an exported model (FastAPI under uvicorn)", _serve_arguments, _serve,
            exempt="serves requests; writes nothing", keras=True),
]
