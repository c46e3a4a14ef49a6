"""The flags of `melanoma export`, `predict` and `serve` (the CLI runs them through export.py, predict.py, app.py)."""

from __future__ import annotations

from pathlib import Path

from melanoma.config.flags import common, config_flags


def add_serving_parsers(sub) -> None:
    """`melanoma export`, `predict` and `serve` (melanoma.serve)."""
    p = sub.add_parser("export", help="a trained image run -> model/ (model.keras, model.json, SavedModel, ONNX)")
    common(p)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `melanoma train`")
    p.add_argument("--out", type=Path, required=True, help="artefact folder to write, e.g. model/")
    config_flags(p, "export.tfrecords", "export.report", "export.combine", "export.folds", "train.backend")

    p = sub.add_parser("predict", help="batch prediction on image files with an exported model")
    common(p)
    p.add_argument("--model", type=Path, required=True, help="folder written by `melanoma export`")
    p.add_argument("--images", type=Path, required=True,
                   help="a folder of images, or a CSV with image_name or path (and optional metadata columns)")
    p.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    config_flags(p, "predict.image_dir", "predict.batch_size", "predict.workers", "train.backend")

    p = sub.add_parser("serve", help="REST service for an exported model (FastAPI under uvicorn)")
    common(p)
    p.add_argument("--model", type=Path, required=True, help="folder written by `melanoma export`")
    config_flags(p, "serve.host", "serve.port", "serve.threshold", "train.backend")
