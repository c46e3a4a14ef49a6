"""The flags of `melanoma export`, `predict` and `serve` (the CLI runs them through export.py, predict.py, app.py)."""

from __future__ import annotations

from pathlib import Path

from melanoma.cliflags import common, folds_flag


def add_serving_parsers(sub) -> None:
    """`melanoma export`, `predict` and `serve` (melanoma.serve)."""
    p = sub.add_parser("export", help="a trained image run -> model/ (model.keras, model.json, SavedModel, ONNX)")
    common(p)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `melanoma train`")
    p.add_argument("--out", type=Path, required=True, help="artefact folder to write, e.g. model/")
    p.add_argument("--tfrecords", help="the run's TFRecords folder (its manifest.json; default: the run's paths)")
    p.add_argument("--report", help="report folder with calibrator.json / report.json (default: RUN_DIR/report)")
    p.add_argument("--combine", choices=["ensemble", "average"],
                   help="ensemble: fold models averaged in one graph (default); average: averaged weights")
    folds_flag(p, "--fold-ids", "folds to export, e.g. 0,1 (default: every finished fold)")
    p.add_argument("--backend", choices=["auto", "tensorflow", "jax"], help="Keras backend (train.backend)")

    p = sub.add_parser("predict", help="batch prediction on image files with an exported model")
    common(p)
    p.add_argument("--model", type=Path, required=True, help="folder written by `melanoma export`")
    p.add_argument("--images", type=Path, required=True,
                   help="a folder of images, or a CSV with image_name or path (and optional metadata columns)")
    p.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    p.add_argument("--image-dir", help="with a CSV of image_name: the folder of NAME.jpg (default: the CSV's)")
    p.add_argument("--batch-size", type=int, help="images per model call (default 32)")
    p.add_argument("--workers", type=int, help="image-reading threads (default 0 = one per core)")
    p.add_argument("--backend", choices=["auto", "tensorflow", "jax"], help="Keras backend (train.backend)")

    p = sub.add_parser("serve", help="REST service for an exported model (FastAPI under uvicorn)")
    common(p)
    p.add_argument("--model", type=Path, required=True, help="folder written by `melanoma export`")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--threshold", help="exported threshold name that sets `label` (default: the first)")
    p.add_argument("--backend", choices=["auto", "tensorflow", "jax"], help="Keras backend (train.backend)")
