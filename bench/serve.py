"""Served images per second over direct model.predict images per second, in one run.

An untrained backbone (weights none: the speed does not depend on the weights) is exported as `serve` loads
it; the direct figure is `Artifact.predict` on preprocessed batches of serve.max_batch; the served figure is
single-image POST /predict requests from concurrent clients against `melanoma serve` on localhost (decode,
HTTP and micro-batching included). Micro-batching should keep the ratio at 0.5 or more.

    .venv/bin/python bench/serve.py [--model efficientnet_b0] [--size 128] [--requests 600] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_artifact(name: str, size: int, out: Path) -> None:
    """model.keras + model.json for an untrained `name` at `size` px (the image-only layout of an export)."""
    from melanoma.files import write_json
    from melanoma.image.models import build_model
    from melanoma.data.records import VOCABULARIES
    from melanoma.serve.artifact import FORMAT_VERSION
    from melanoma.serve.export import combined_model

    model = combined_model([build_model(name, size, None)], "ensemble", False, size, False)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    write_json(out / "model.json", {
        "format_version": FORMAT_VERSION, "model_version": f"bench-{name}-{size}px",
        "input": {"size": size, "stored_size": size,
                  "prepare": {"size": size, "resize": "crop", "quality": 95, "max_pixels": 200_000_000}},
        "metadata": {"used": False, "vocab": {k: list(VOCABULARIES[k]) for k in
                                              ("sex", "anatom_site_general_challenge")}},
        "calibrator": None, "thresholds": {"p50": 0.5}, "tta": {"flips": False}})


def direct_rate(model_dir: Path, images: list[bytes], batch: int, seconds: float) -> float:
    from melanoma.serve.artifact import Artifact

    art = Artifact.load(model_dir)
    x = np.stack([art.preprocess(images[i % len(images)]) for i in range(batch)])
    art.predict(x)  # compile
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        art.predict(x)
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of the direct measurement")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from loadtest import rss_mb, run_load, start_server

    images = [p.read_bytes() for p in sorted((ROOT / "data" / "demo" / "jpeg" / "test").glob("*.jpg"))]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        make_artifact(args.model, args.size, model_dir)
        direct = direct_rate(model_dir, images, args.max_batch, args.seconds)
        print(f"direct model.predict: {direct:.1f} img/s (batches of {args.max_batch})", flush=True)
        with start_server(str(model_dir), extra=["--set", f"serve.max_batch={args.max_batch}"]) as (url, proc):
            run_load(url, images, 2 * args.clients, args.clients)  # warm-up: connections, thread pools
            before = rss_mb(proc.pid)
            res = run_load(url, images, args.requests, args.clients)
            after = rss_mb(proc.pid)
    served = res.ok / res.seconds
    print(f"served: {res.summary()}; server RSS {before:.0f} -> {after:.0f} MB")
    print(f"{args.model} {args.size}px, {args.clients} clients: served {served:.1f} img/s / direct {direct:.1f} "
          f"img/s = {served / direct:.2f} (target >= 0.5); cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
