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
