"""Time `melanoma report` on a competition-sized OOF: 33,000 images of about 2,000 patients, 1,000 resamples.

Synthetic predictions with a patient effect, metadata for every subgroup family (site, sex, age, image size,
fold) and a labelled test set of 10,000 images; no TFRecords, so the gallery has no thumbnails (that part
costs reading the records and a few Grad-CAM passes, not the bootstrap). Prints the seconds taken.

    .venv/bin/python bench/report.py [--rows 33000] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.config import apply_overrides, Config
from melanoma.report import report


def synthetic(root: Path, rows: int, n_test: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    counts = np.clip(np.round(rng.lognormal(np.log(12), 0.77, rows // 12)), 2, 115).astype(int)
    pid = np.repeat(np.arange(len(counts)), counts)[:rows]
    pid = np.r_[pid, np.arange(rows - len(pid)) + len(counts)]
    n_p = pid.max() + 1
    y = (rng.random(rows) < 0.0176 * (1 + rng.random(n_p)[pid])).astype(int)
    score = 1 / (1 + np.exp(-(-4 + 2.0 * y + rng.normal(size=n_p)[pid] + rng.normal(size=rows))))
    names = [f"ISIC_{i:07d}" for i in range(rows + n_test)]
    sites = np.array(["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", None], dtype=object)
    sizes = np.array([[6000, 4000], [1872, 1053], [640, 480], [5184, 3456], [1024, 1024]])
    size_of = sizes[rng.integers(0, len(sizes), n_p)][np.r_[pid, np.zeros(n_test, int)]]
    data = root / "data"
    data.mkdir(parents=True)
    meta = pd.DataFrame({"image_name": names, "patient_id": [f"IP_{p}" for p in pid] + [f"IPT_{i // 10}" for i in range(n_test)],
                         "sex": rng.choice(["male", "female"], rows + n_test),
                         "age_approx": rng.integers(2, 18, rows + n_test) * 5.0,
                         "anatom_site_general_challenge": sites[rng.integers(0, len(sites), rows + n_test)],
                         "width": size_of[:, 0], "height": size_of[:, 1]})
    meta.iloc[:rows].assign(target=y).to_csv(data / "train.csv", index=False)
    meta.iloc[rows:].to_csv(data / "test.csv", index=False)
    run = root / "image"
    run.mkdir()
    pd.DataFrame({"image_name": names[:rows], "target": y, "pred": score, "fold": pid % 5}).to_csv(run / "oof.csv", index=False)
    yt = (rng.random(n_test) < 0.02).astype(int)
    st = 1 / (1 + np.exp(-(-4 + 2.0 * yt + rng.normal(size=n_test))))
    pd.DataFrame({"image_name": names[rows:], "target": st}).to_csv(run / "test_pred.csv", index=False)
    pd.DataFrame({"image_name": names[rows:], "target": yt}).to_csv(root / "test_labels.csv", index=False)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=33_000)
    ap.add_argument("--test", type=int, default=10_000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = synthetic(root, args.rows, args.test)
        cfg = apply_overrides(Config(), {"paths.data": str(root / "data"), "paths.tfrecords": str(root / "none"),
                                         "paths.test_labels": str(root / "test_labels.csv"),
                                         "report.bootstrap": args.bootstrap})
        start = time.perf_counter()
        rep = report(cfg, [run], root / "report")
        seconds = time.perf_counter() - start
        oof = rep["runs"][0]["oof"]
        print(f"report: {args.rows} OOF rows ({oof['units']} patients, {oof['positives']} malignant) + "
              f"{args.test} test rows, {args.bootstrap} patient resamples: {seconds:.1f} s "
              f"(OOF AUC {oof['auc']['value']:.4f} [{oof['auc']['ci'][0]:.4f}, {oof['auc']['ci'][1]:.4f}])")


if __name__ == "__main__":
    main()
