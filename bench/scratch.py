"""Scratch-recipe benchmark (issue 18): one fold trained without pretrained weights on ISIC 2017, scored on
the 150 images of its validation set.

    .venv/bin/python bench/scratch.py            # weights none: train.recipe auto picks the scratch recipe
    .venv/bin/python bench/scratch.py --set train.model=small_cnn_64 --set train.epochs=20 --name cnn64

Steps:
  1. `melanoma prepare` of ../shared/data/isic2017_trainval (train.csv = the 2,000 ISIC 2017 training images,
     test.csv = the 150 validation images) into TFRecords at --prep-size px, cached in --records (outside the
     repository: the ISIC 2017 images must not be copied into it) and reused by later runs. The set has no
     patient ids (one patient per image) and one striped, non-dermoscopic image, which is left out.
  2. `melanoma train` of ONE fold (--fold; trained on the other four of five), `--weights none`, the --set
     overrides on top of the configured defaults, predicting test.csv (test_pred.csv).
  3. The AUC of test_pred.csv against test_labels.csv (30 melanoma in 150), printed with the fold's
     validation AUC, the wall time of the training command and the load average (the machine is shared).
The issue's bar: AUC >= 0.75 within 15 minutes (--budget) on 2 cores with the default recipe.
`--jsonl FILE` appends one line per run (settings and figures) for bench/RESULTS.md.

Do not set TF_ENABLE_ONEDNN_OPTS=0 here: it cuts CPU training speed by about 40%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isic2017_trainval"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="ISIC 2017 in the competition layout")
    p.add_argument("--records", type=Path, default=Path("/tmp/isic2017-rec"),
                   help="cache of prepared TFRecords, one subfolder per size (outside the repository)")
    p.add_argument("--runs", type=Path, default=Path("/tmp/isic2017-runs"), help="run folders go here")
    p.add_argument("--name", default="default", help="run folder name under --runs")
    p.add_argument("--prep-size", type=int, default=128, help="stored image side of the records")
    p.add_argument("--train-size", default="recipe",
                   help="train.size: 'recipe' (default: the recipe's or the config's), 'records' (= --prep-size), "
                        "or pixels")
    p.add_argument("--fold", type=int, default=0, help="the validation fold; the other four are trained on")
    p.add_argument("--config", type=Path, help="YAML config passed to `melanoma train`")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for `melanoma train` (repeatable)")
    p.add_argument("--budget", type=float, default=900.0, help="seconds the training may take (the issue's 15 min)")
    p.add_argument("--min-auc", type=float, default=0.75, help="AUC on the 150 validation images to reach")
    p.add_argument("--jsonl", type=Path, help="append the run's settings and figures to this file")
    return p.parse_args(argv)


def melanoma(*args: str, log: Path | None = None, timeout: float | None = None) -> float:
    """Runs the CLI in a child process (it picks the Keras backend before Keras loads); returns the wall time."""
    cmd = [sys.executable, "-m", "melanoma", *args]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
    if rc != 0:
        tail = log.read_text().splitlines()[-5:] if log else []
        sys.exit(f"scratch: `melanoma {args[0]}` failed (exit {rc})" + "".join(f"\n  {t}" for t in tail))
    return time.perf_counter() - t0


def prepared(args: argparse.Namespace) -> Path:
    """The records at --prep-size, prepared once (a manifest.json marks a finished `prepare`)."""
    out = args.records / str(args.prep_size)
    if (out / "manifest.json").exists():
        return out
    args.records.mkdir(parents=True, exist_ok=True)
    secs = melanoma("prepare", "--data", str(args.data), "--out", str(out), "--size", str(args.prep_size),
                    "--folds", "5", "--seed", "42", "--on-bad-image", "skip",
                    "--set", "data.patient_id=per_image", log=args.records / f"prepare-{args.prep_size}.log")
    print(f"prepared {out} in {secs:.0f} s")
    return out


def auc(run: Path, labels: Path) -> tuple[float, float, int]:
    """(AUC on the validation images, AUC of the fold's own out-of-fold predictions, images scored)."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    pred = pd.read_csv(run / "test_pred.csv").rename(columns={"target": "pred"})
    truth = pd.read_csv(labels)[["image_name", "target"]]
    both = truth.merge(pred, on="image_name", how="inner")
    if len(both) != len(truth):
        sys.exit(f"scratch: {run / 'test_pred.csv'} scores {len(both)} of the {len(truth)} labelled images")
    oof = pd.read_csv(run / "oof.csv")
    return (float(roc_auc_score(both["target"], both["pred"])),
            float(roc_auc_score(oof["target"], oof["pred"])), len(both))


def best_epoch(run: Path, fold: int) -> str:
    """'best/total' epochs by validation AUC from the fold's history.csv ('?' when absent)."""
    import pandas as pd

    hist = run / f"fold{fold}" / "history.csv"
    if not hist.exists():
        return "?"
    h = pd.read_csv(hist)
    col = next((c for c in h.columns if c.startswith("val_") and "auc" in c), None)
    return f"{int(h[col].idxmax()) + 1}/{len(h)}" if col else f"?/{len(h)}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rec = prepared(args)
    run = args.runs / args.name
    run.parent.mkdir(parents=True, exist_ok=True)
    sets = ["train.weights=none", "train.tensorboard=false"]
    if args.train_size == "records":
        sets.append(f"train.size={args.prep_size}")
    elif args.train_size != "recipe":
        sets.append(f"train.size={int(args.train_size)}")
    sets += args.sets  # later --set wins
    train_args = ["train", "--tfrecords", str(rec), "--out", str(run), "--folds", str(args.fold), "--restart"]
    if args.config:
        train_args += ["--config", str(args.config)]
    for s in sets:
        train_args += ["--set", s]
    load0 = os.getloadavg()
    # Over budget is a result too: allow 2x before giving up, so a slow run still gets its figure.
    secs = melanoma(*train_args, log=run.with_suffix(".log"), timeout=2 * args.budget)
    load1 = os.getloadavg()
    test_auc, val_auc, n = auc(run, args.data / "test_labels.csv")
    best = best_epoch(run, args.fold)
    ok = test_auc >= args.min_auc and secs <= args.budget
    print(f"{args.name}: AUC {test_auc:.4f} on {n} validation images (fold {args.fold} OOF AUC {val_auc:.4f}, "
          f"best epoch {best}), training {secs:.0f} s, load average {load0[0]:.1f} -> {load1[0]:.1f}: "
          f"{'PASS' if ok else 'FAIL'} (AUC >= {args.min_auc}, <= {args.budget:.0f} s)")
    if args.jsonl:
        row = {"utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M"), "name": args.name,
               "sets": sets, "auc": round(test_auc, 4), "oof_auc": round(val_auc, 4), "best_epoch": best,
               "seconds": round(secs), "load": [round(load0[0], 1), round(load1[0], 1)], "pass": ok}
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
