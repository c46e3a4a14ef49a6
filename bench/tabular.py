"""Time the `tabular` stage with every model on competition-shaped metadata and compare their OOF AUCs.

Data: `melanoma.data.fake_metadata.competition_like` resamples the patients of a generated test.csv-like table
(`metadata_template`: the real test.csv's published shape, no real rows) into 33,000 training rows with original
image sizes and a target from a realistic risk model (age, sex, site, images per patient, camera, "ugly
duckling" images, a hidden patient effect), plus 10,982 test rows; 5 patient-grouped, triple-stratified folds
(melanoma.data.folds). No images, so no colour statistics. Runs `tabular.model: all` (every model, each in
RUN/<model>/) and prints each model's OOF AUC and seconds, the model `auto` (the default) picks, its margin over
mlp_smote, and the wall time of the whole stage (the issue's limit: 3 minutes on 2 cores).

    .venv/bin/python bench/tabular.py [--rows 33000] [--test-rows 10982] [--seed 0] [--model all]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from melanoma.config import Config, TabularConfig  # noqa: E402
from melanoma.data.schema import read_train  # noqa: E402
from melanoma.files import write_csv  # noqa: E402
from melanoma.data.folds import assign_folds  # noqa: E402
from melanoma.tabular import model_names, run_tabular  # noqa: E402
from melanoma.data.fake_metadata import competition_like, metadata_template  # noqa: E402


def make_data(root: Path, rows: int, test_rows: int, seed: int) -> Path:
    template = metadata_template()
    root.mkdir(parents=True, exist_ok=True)
    competition_like(template, rows, seed=seed).to_csv(root / "train.csv", index=False)
    competition_like(template, test_rows, seed=seed + 1, labelled=False, prefix="T").to_csv(root / "test.csv",
                                                                                           index=False)
    write_csv(root / "folds.csv", assign_folds(read_train(root), 5, seed))
    return root / "folds.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=33000)
    ap.add_argument("--test-rows", type=int, default=10982)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="all", help="tabular.model for the timed run (default all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        folds = make_data(root / "data", args.rows, args.test_rows, args.seed)
        train = pd.read_csv(root / "data" / "train.csv")
        print(f"data: {len(train)} training rows, {train['patient_id'].nunique()} patients, "
              f"{int(train['target'].sum())} malignant ({train['target'].mean():.2%}); "
              f"{args.test_rows} test rows; made in {time.perf_counter() - start:.1f} s")
        cfg = Config(seed=args.seed, tabular=TabularConfig(model=args.model))
        start = time.perf_counter()
        metrics = run_tabular(cfg, root / "data", folds, root / "run")
        wall = time.perf_counter() - start
        print(f"tabular --model {args.model}: {wall:.1f} s wall ({os.cpu_count()} cores)")
        for name, auc in metrics["models"].items():
            sub = root / "run" / name / "metrics.json" if len(metrics["models"]) > 1 else root / "run" / "metrics.json"
            seconds = pd.read_json(sub, typ="series")["seconds"]
            print(f"  {name:<10s} OOF AUC {auc:.4f}  ({seconds:.1f} s)")
        auto = model_names(TabularConfig(model="auto"))
        scores = {n: metrics["models"][n] for n in auto if n in metrics["models"]}
        if scores and "mlp_smote" in metrics["models"]:
            pick = max(scores, key=scores.get)
            print(f"default (auto over {', '.join(auto)}): {pick}, OOF AUC {scores[pick]:.4f}; mlp_smote "
                  f"{metrics['models']['mlp_smote']:.4f}; margin {scores[pick] - metrics['models']['mlp_smote']:+.4f}")


if __name__ == "__main__":
    main()
