"""From a trained run to predictions on new images: `export`, `predict` and `serve`.

- export.py: RUN_DIR -> model/ (model.keras, model.json, a TF SavedModel, model.onnx where it converts)
- artifact.py: model.json and the loaded model: preprocessing, metadata encoding, calibration, thresholds
- predict.py: batch prediction on a folder or CSV of image files
- batching.py: the micro-batcher that groups concurrent requests into one model call
- multipart.py: an in-memory multipart/form-data parser (uploads never touch the disk)
- app.py: the FastAPI app that `serve` runs under uvicorn

Preprocessing is `melanoma.data.images.model_input`, the same steps `prepare` and the train reader apply.
Nothing here imports Keras or TensorFlow at module level, so the CLI can choose the backend first.
"""

from __future__ import annotations

import importlib.util

SERVE_MODULES = ("fastapi", "uvicorn")  # what `melanoma serve` imports from the `serve` extra


def require_extra(modules: tuple[str, ...] = SERVE_MODULES) -> None:
    """EnvironmentProblem (exit 3) naming the extra to install when a module of it is missing."""
    from melanoma.errors import EnvironmentProblem

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise EnvironmentProblem(f"`melanoma serve` needs the serve extra ({', '.join(missing)} not installed): "
                                 "pip install 'melanoma[serve]'")
