"""ISIC 2024 (issue 27): the feature builder and the tabular stage on 400,000 rows, and a streamed pass over
HDF5 tiles.

    .venv/bin/python bench/isic2024.py [--rows 400000] [--patients 1000] [--tiles 20000] [--seed 0]
        [--parts features,tabular,hdf5] [--model auto] [--test-rows 2000]

1. Features: synthetic training metadata from the demo generator's metadata part
   (scripts/make_isic2024_demo.py: 55 real columns, values drawn from the 100 real rows), scaled up to --rows
   rows of --patients patients (the real data: 401,059 tiles of 1,042 patients), then
   `ISIC2024Features().fit(train).transform(train)`: seconds, and the process's peak resident memory
   (ru_maxrss) before and after, so the difference bounds what the builder adds on top of the metadata.
2. HDF5: --tiles JPEG tiles (the demo generator's crops of the shipped demo images, 61-239 px) written with
   `write_tiles`, then one streamed pass `TileFile.chunks(size=1024)` -> JPEG bytes over all of them (the
   file was just written, so it is read from the page cache: the rate of h5py and the reader, not of a disk),
   and a PIL decode of the first 2,000 for scale. Projected to 401,059 and 500,000 tiles.
3. Tabular stage: the same training metadata (and --test-rows test rows of other patients) written as
   train-metadata.csv / test-metadata.csv, `melanoma folds` (5 patient folds), then `melanoma tabular` with the
   defaults for ISIC 2024 (--model: auto trains lgbm and hgb; 3 seeds, 20 negatives per positive): seconds of each
   step (CSV writing excluded) and the peak RSS; the OOF pAUC and AUC it reaches on this synthetic signal.
Runs in one process; nothing is written outside a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from melanoma.data.hdf5 import TileFile, write_tiles  # noqa: E402
from melanoma.tabular.isic2024 import ISIC2024Features  # noqa: E402


def _demo_module():
    spec = importlib.util.spec_from_file_location("make_isic2024_demo", ROOT / "scripts" / "make_isic2024_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def make_train(demo, rows: int, patients: int, seed: int, share: float = 0.001) -> pd.DataFrame:
    """`rows` rows of training metadata of about `patients` patients (the demo generator's metadata part)."""
    rng = np.random.default_rng(seed)
    # lognormal tiles per patient (sigma 0.5, clipped): mean about median * exp(0.125); the last patient is cut
    median = rows / patients / np.exp(0.125)
    train = demo.make_metadata(demo.load_template(), rng, patients, median, share)
    while len(train) < rows:
        median *= 1.05
        train = demo.make_metadata(demo.load_template(), rng, patients, median, share)
    return train.iloc[:rows].reset_index(drop=True)


def bench_features(demo, rows: int, patients: int, seed: int) -> None:
    start = time.perf_counter()
    train = make_train(demo, rows, patients, seed)
    made = time.perf_counter() - start
    before = peak_rss_gb()
    meta_gb = train.memory_usage(deep=True).sum() / 1024**3
    print(f"metadata: {len(train):,} rows x {train.shape[1]} columns, {train.patient_id.nunique():,} patients, "
          f"{int(train.target.sum())} malignant; made in {made:.1f} s; {meta_gb:.2f} GB in memory; "
          f"peak RSS so far {before:.2f} GB")
    start = time.perf_counter()
    f = ISIC2024Features().fit(train)
    fitted = time.perf_counter() - start
    out = f.transform(train)
    seconds = time.perf_counter() - start
    after = peak_rss_gb()
    print(f"features: fit {fitted:.2f} s, fit + transform {seconds:.1f} s -> {out.shape[0]:,} x {out.shape[1]} "
          f"({out.memory_usage(deep=True).sum() / 1024**3:.2f} GB); peak RSS {after:.2f} GB "
          f"(+{after - before:.2f} GB over the metadata)")


def bench_tabular(demo, rows: int, patients: int, test_rows: int, seed: int, model: str, folder: Path) -> None:
    from melanoma.config import Config, apply_overrides
    from melanoma.data.folds import run_folds
    from melanoma.tabular.stage import run_tabular

    train = make_train(demo, rows, patients, seed)
    test = make_train(demo, test_rows, max(1, test_rows // 400), seed + 1)
    test = test[~test.patient_id.isin(train.patient_id) & ~test.isic_id.isin(train.isic_id)]
    data = folder / "data"
    data.mkdir()
    train.to_csv(data / "train-metadata.csv", index=False)
    test.loc[:, list(demo.TEST_COLUMNS)].to_csv(data / "test-metadata.csv", index=False)
    cfg = apply_overrides(Config(), {"tabular.model": model})
    before = peak_rss_gb()
    start = time.perf_counter()
    run_folds(cfg, data, folder / "folds.csv")
    folds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = run_tabular(cfg, data, folder / "folds.csv", folder / "tabular")
    seconds = time.perf_counter() - start
    print(f"tabular: {len(train):,} training rows ({int(train.target.sum())} malignant), {len(test):,} test rows; "
          f"folds {folds:.1f} s; tabular (--model {model}: {', '.join(metrics.get('models', {}))}) {seconds:.0f} s "
          f"-> OOF pAUC {metrics['oof_pauc']:.4f}, AUC {metrics['oof_auc']:.4f} ({metrics['model']}); peak RSS "
          f"{peak_rss_gb():.2f} GB (before {before:.2f} GB)")
    for name in metrics.get("models", {}):
        sub = folder / "tabular" / name / "metrics.json"
        if sub.is_file():
            import json

            m = json.loads(sub.read_text())
            print(f"  {name}: {m['seconds']:.0f} s, OOF pAUC {m['oof_pauc']:.4f}, AUC {m['oof_auc']:.4f}, rounds per "
                  f"fold and seed {[f['rounds'] for f in m['folds'].values()]}")


def bench_hdf5(demo, n: int, seed: int, folder: Path) -> None:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"isic_id": [f"ISIC_{i:07d}" for i in range(n)],
                         "target": (rng.random(n) < 0.05).astype(int)})
    path = folder / "train-image.hdf5"
    start = time.perf_counter()
    write_tiles(path, demo.make_tiles(meta, demo.image_pools()["train"], rng))
    written = time.perf_counter() - start
    size_mb = path.stat().st_size / 1024**2
    print(f"hdf5: wrote {n:,} tiles ({size_mb:.0f} MB, {size_mb * 1024 / n:.1f} kB per tile) in {written:.1f} s "
          "(JPEG encoding included)")
    start = time.perf_counter()
    with TileFile(path) as tiles:
        ids = tiles.ids()
        listed = time.perf_counter() - start
        total = 0
        for chunk in tiles.chunks(ids, 1024):
            total += sum(len(b) for _, b in chunk)
        seconds = time.perf_counter() - start
        first = [b for _, b in next(tiles.chunks(ids[:2000], 2000))]
    rate = n / seconds
    print(f"hdf5: open + list ids {listed:.2f} s; streamed pass {seconds:.2f} s for {total / 1024**2:.0f} MB = "
          f"{rate:,.0f} tiles/s -> {401_059 / rate:.0f} s for 401,059 tiles, {500_000 / rate:.0f} s for 500,000")
    start = time.perf_counter()
    for b in first:
        with Image.open(io.BytesIO(b)) as im:
            im.convert("RGB").load()
    decode = len(first) / (time.perf_counter() - start)
    print(f"decode (PIL, for scale): {decode:,.0f} tiles/s on one core")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--tiles", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="features,tabular,hdf5", help="which of features, tabular, hdf5 to run")
    ap.add_argument("--model", default="auto", help="tabular.model of the tabular part")
    ap.add_argument("--test-rows", type=int, default=2000, help="test rows of the tabular part")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    demo = _demo_module()
    if "tabular" in parts:  # the stage's own log lines: per fold and model, pAUC, rows kept and rounds
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if "features" in parts:
        bench_features(demo, args.rows, args.patients, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if "tabular" in parts:
            (Path(tmp) / "tab").mkdir()
            bench_tabular(demo, args.rows, args.patients, args.test_rows, args.seed, args.model, Path(tmp) / "tab")
        if "hdf5" in parts:
            bench_hdf5(demo, args.tiles, args.seed, Path(tmp))
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
