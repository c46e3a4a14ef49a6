"""The `melanoma` command: a thin layer that turns flags into config values and calls one stage.

Every command takes `--config FILE` and repeatable `--set key.path=value`; its own flags are shortcuts for
config keys and win over both. Errors in input or config print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from melanoma import __version__
from melanoma.cliflags import Parser, command, folds_flag
from melanoma.errors import MelanomaError
from melanoma.kaggle.commands import add_kaggle_parsers, run_kaggle_command
from melanoma.serve.commands import add_serving_parsers

log = logging.getLogger("melanoma")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="melanoma", description="SIIM-ISIC melanoma pipeline: "
                                     "folds -> prepare -> train -> tabular -> blend")
    parser.add_argument("--version", action="version", version=f"melanoma {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = command(sub, "folds", "patient-level stratified folds: train.csv -> folds.csv")
    p.add_argument("--data", type=Path, help="folder with train.csv (competition layout)")
    p.add_argument("--out", type=Path, help="folds.csv to write")
    p.add_argument("--tfrecords", help="public Kaggle TFRecords whose train.csv has a `tfrecord` column: "
                                       "folds follow their files")
    folds_flag(p, "--n-folds", "number of folds (default 5)", type=int)
    p.add_argument("--seed", type=int)

    p = command(sub, "prepare", "competition layout -> sharded TFRecords, folds.csv, manifest.json")
    p.add_argument("--data", type=Path, help="folder with train.csv, test.csv, jpeg/train, jpeg/test")
    p.add_argument("--out", help="output folder for the shards (a gs:// path works)")
    p.add_argument("--size", type=int, help="stored image side in pixels")
    folds_flag(p, "--n-folds", "number of folds (ignored with --folds-file)", type=int)
    p.add_argument("--folds-file", type=Path, help="use this folds.csv instead of computing folds")
    p.add_argument("--seed", type=int)
    p.add_argument("--resize", choices=["crop", "pad", "stretch"], help="how to make images square")
    p.add_argument("--quality", type=int, help="JPEG quality of the stored images")
    p.add_argument("--workers", type=int, help="parallel image decoders (default 0 = one per core)")
    p.add_argument("--on-bad-image", choices=["fail", "skip"],
                   help="an unreadable image: fail (default, one line naming file and row) or skip (logged, "
                        "listed in manifest.json)")
    p.add_argument("--external", action="append", metavar="DIR",
                   help="extra training data (ISIC 2019 or competition layout), train-only (repeatable)")
    p.add_argument("--duplicates", help="duplicates CSV (image_name_1,image_name_2), added to those found by hash")
    p.add_argument("--drop-duplicates", action="store_true", default=None,
                   help="keep one image per duplicate group (default: duplicates share a fold)")
    p.add_argument("--upsample-malignant", type=int, metavar="K",
                   help="K copies of each malignant training image, in train-only shards (default 1)")

    p = command(sub, "check", "leakage report: patients in train and test, duplicate images by content")
    p.add_argument("--data", type=Path, help="folder with train.csv, test.csv, jpeg/train, jpeg/test")
    p.add_argument("--duplicates", help="duplicates CSV (image_name_1,image_name_2), added to those found by hash")
    p.add_argument("--out", type=Path, help="report.json to write (and REPORT.duplicates.csv beside it)")
    p.add_argument("--max-distance", type=int, help="near-duplicate dHash distance in bits (default 4)")
    p.add_argument("--workers", type=int, help="parallel image decoders (default 0 = one per core)")

    p = command(sub, "train", "image model, fold by fold: OOF and test predictions")
    p.add_argument("--tfrecords", type=Path, help="folder written by `prepare`, or the public Kaggle TFRecords")
    p.add_argument("--out", type=Path, help="run folder to write")
    p.add_argument("--model", help="e.g. efficientnet_b0 ... b7, efficientnet_v2_s, inception_resnet_v2 "
                                   "(`melanoma models` lists them)")
    p.add_argument("--size", type=int, help="model input side in pixels")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per replica")
    folds_flag(p, "--fold-ids", "folds to train, e.g. 0,1,2 (default: all)")
    p.add_argument("--weights", help="none | imagenet | path to a weights file")
    p.add_argument("--tta", type=int, help="augmented prediction passes")
    p.add_argument("--oversample", type=float, help="draw malignant images this many times as often")
    p.add_argument("--class-weight", choices=["none", "balanced", "sqrt"])
    p.add_argument("--positive-share", type=float, help="draw malignant images at this share (sets the oversampling)")
    p.add_argument("--loss", choices=["bce", "focal"])
    p.add_argument("--tta-flips", action="store_true", default=None, help="also average three flipped passes")
    p.add_argument("--metadata", action="store_true", default=None, help="site, sex and age into the network")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--backend", choices=["auto", "tensorflow", "jax"],
                   help="Keras backend (default auto: jax on a TPU that TensorFlow cannot drive, else tensorflow)")
    p.add_argument("--restart", action="store_true", help="start the run folder over instead of resuming it")
    p.add_argument("--seed", type=int)

    p = command(sub, "tabular", "metadata model (SMOTE + MLP, logistic regression, boosting) on the "
                      "same folds")
    p.add_argument("--data", type=Path, help="folder with train.csv and test.csv")
    folds_flag(p, "--folds-file", "folds.csv (written by `folds` or `prepare`)", type=Path)
    p.add_argument("--tfrecords", help="folder with image_sizes.csv or the public TFRecords' train.csv/test.csv, "
                                       "for image width/height")
    p.add_argument("--out", type=Path, help="run folder to write")
    p.add_argument("--model", choices=["auto", "mlp_smote", "logreg", "gbm", "lgbm", "hgb", "all"],
                   help="metadata model (auto, the default: tabular.auto_models; all: every one; either keeps "
                        "the best OOF AUC at the top of the run folder)")
    p.add_argument("--seed", type=int)

    p = command(sub, "blend", "blend run folders on OOF AUC and write submission.csv")
    p.add_argument("--runs", type=Path, nargs="+", help="run folders (each with oof.csv and test_pred.csv)")
    p.add_argument("--out", type=Path, help="submission.csv to write")
    p.add_argument("--sample-submission", type=Path, help="the competition's sample_submission.csv")
    p.add_argument("--method", choices=["weighted", "rank", "power"],
                   help="weighted: weights fitted on OOF AUC (default); rank: rank average; power: power mean")
    p.add_argument("--power", type=float, help="exponent of --method power (default 2)")
    p.add_argument("--tabular-weight", type=float,
                   help="fix the total weight of the metadata (tabular) runs, e.g. 0.25 (default: as found)")
    p.add_argument("--step", type=float, help="grid step of the weight search (default 0.05)")

    add_kaggle_parsers(sub)

    p = command(sub, "augment-preview", "PNG grid of training images and augmented copies of each")
    p.add_argument("--tfrecords", type=Path, help="folder written by `prepare`, or the public Kaggle TFRecords")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=8, help="images (rows), default 8")
    p.add_argument("--copies", type=int, default=4, help="augmented copies per image (columns), default 4")
    p.add_argument("--size", type=int, help="image side in pixels (default: train.size)")
    p.add_argument("--seed", type=int)

    p = command(sub, "run", "chain the stages from one config")

    p = command(sub, "report", "evaluation report of runs or blends: report.html, report.json, PNGs")
    p.add_argument("runs", type=Path, nargs="*", metavar="RUN_DIR",
                   help="run folders, or a blend's folder / blend.json (default: the config's image and tabular "
                        "runs and blend, where they exist)")
    p.add_argument("--out", type=Path, help="report folder (default: report.out, else PATHS.runs/report)")
    p.add_argument("--data", type=Path, help="folder with train.csv/test.csv: patient ids and metadata subgroups")
    p.add_argument("--tfrecords", help="TFRecords folder: thumbnails of the error gallery, image sizes")
    p.add_argument("--test-labels", type=Path, help="image_name,target of the held-out test set")
    p.add_argument("--bootstrap", type=int, help="patient resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=int, help="bootstrap seed (default: the config's seed)")
    p.add_argument("--no-gradcam", action="store_true", help="no heat maps in the error gallery")

    p = command(sub, "compare", "paired OOF AUC difference of two runs: patient bootstrap and DeLong")
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    p.add_argument("--data", type=Path, help="folder with train.csv: patient ids for the bootstrap")
    p.add_argument("--bootstrap", type=int, help="patient resamples (default 1000)")
    p.add_argument("--seed", type=int, help="bootstrap seed (default: the config's seed)")

    add_serving_parsers(sub)

    sub.add_parser("models", help="list the model names")

    p = command(sub, "doctor", "where this runs, resolved paths, backend and devices, versions, and what "
                      "the configured run lacks")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-devices", action="store_true", help="do not import the backend to list its devices")
    return parser


# Commands that may import Keras: the backend is fixed before their first import of it.
KERAS_COMMANDS = {"train", "run", "augment-preview", "doctor", "report", "export", "predict", "serve"}


def _load(args: argparse.Namespace, values: dict):
    from melanoma.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config, args.overrides), values)
    if args.command in KERAS_COMMANDS:
        from melanoma.image.backend import use_backend

        use_backend(cfg.train.backend, cfg.train.cpu_replicas)
    return cfg


def _explicit(args: argparse.Namespace, key: str) -> bool:
    """Whether the config file or a --set names `key` (rather than the key keeping its default)."""
    import yaml

    if any(o.partition("=")[0].strip() == key for o in args.overrides):
        return True
    node = yaml.safe_load(args.config.read_text()) if args.config is not None else None
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_out(path, folder: bool) -> None:
    """Refuse an output that cannot be written before any work: a file where a folder is wanted (or the
    reverse), or a location the user may not write. Remote (gs://) outputs are left to the stage."""
    from melanoma.errors import ConfigError

    if "://" in str(path):
        return
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is a file, not a folder: choose another --out")
    if not folder and path.is_dir():
        raise ConfigError(f"{path}: is a folder; the output here is a file: choose another --out")
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{parent}: is a file, so {path} cannot be created: choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{parent}: not writable, so {path} cannot be written: choose another --out "
                          "or change the folder's permissions")


def _dispatch(args: argparse.Namespace) -> None:
    from melanoma.run import format_summary, resolve_paths, run_pipeline

    cmd = args.command
    if cmd == "models":
        from melanoma.image.models import MODELS

        print("\n".join(MODELS))
        return
    seed = getattr(args, "seed", None)
    if cmd == "folds":
        from melanoma.data.folds import run_folds

        cfg = _load(args, {"n_folds": args.n_folds, "seed": seed, "paths.data": args.data})
        paths = resolve_paths(cfg)
        _check_out(args.out or paths.folds, folder=False)
        run_folds(cfg, paths.data, args.out or paths.folds, args.tfrecords)
    elif cmd == "prepare":
        from melanoma.data.prepare import prepare

        cfg = _load(args, {"n_folds": args.n_folds, "seed": seed, "paths.data": args.data,
                           "paths.tfrecords": args.out, "prepare.size": args.size, "prepare.resize": args.resize,
                           "prepare.quality": args.quality, "prepare.workers": args.workers,
                           "prepare.on_bad_image": args.on_bad_image, "prepare.external": args.external,
                           "prepare.duplicates": args.duplicates, "prepare.drop_duplicates": args.drop_duplicates,
                           "prepare.upsample_malignant": args.upsample_malignant})
        paths = resolve_paths(cfg)
        # --out as given (a str): a Path would fold gs://bucket into gs:/bucket.
        _check_out(args.out or paths.tfrecords, folder=True)
        prepare(cfg, paths.data, args.out or paths.tfrecords, args.folds_file)
    elif cmd == "check":
        from melanoma.data.check import run_check

        cfg = _load(args, {"paths.data": args.data, "prepare.duplicates": args.duplicates,
                           "prepare.dup_max_distance": args.max_distance, "prepare.workers": args.workers})
        paths = resolve_paths(cfg)
        if args.out is not None:
            _check_out(args.out, folder=False)
        run_check(cfg, paths.data, cfg.prepare.duplicates, args.out)
    elif cmd == "train":
        cfg = _load(args, {"seed": seed, "paths.tfrecords": args.tfrecords, "train.model": args.model,
                           "train.size": args.size, "train.epochs": args.epochs,
                           "train.batch_size": args.batch_size, "train.folds": args.fold_ids,
                           "train.weights": args.weights, "train.tta": args.tta,
                           "train.oversample": args.oversample, "train.class_weight": args.class_weight,
                           "train.positive_share": args.positive_share, "train.loss": args.loss,
                           "train.tta_flips": args.tta_flips, "train.metadata": args.metadata,
                           "train.precision": args.precision, "train.resume": False if args.restart else None,
                           "train.backend": args.backend})
        paths = resolve_paths(cfg)
        from melanoma.image.train import train  # after the config is valid: a bad value never waits for TensorFlow

        _check_out(args.out or paths.image_run, folder=True)
        train(cfg, paths.tfrecords, args.out or paths.image_run)
    elif cmd == "tabular":
        from melanoma.tabular import run_tabular

        cfg = _load(args, {"seed": seed, "paths.data": args.data, "tabular.model": args.model,
                           "paths.tfrecords": args.tfrecords})
        paths = resolve_paths(cfg)
        _check_out(args.out or paths.tabular_run, folder=True)
        # Image sizes only from a TFRecords folder that was asked for, never one that merely exists by default.
        sizes_dir = paths.tfrecords if args.tfrecords or _explicit(args, "paths.tfrecords") else None
        run_tabular(cfg, paths.data, args.folds_file or paths.folds, args.out or paths.tabular_run, sizes_dir)
    elif cmd == "blend":
        from melanoma.blend import run_blend

        cfg = _load(args, {"paths.submission": args.out, "paths.sample_submission": args.sample_submission,
                           "blend.method": args.method, "blend.power": args.power,
                           "blend.tabular_weight": args.tabular_weight, "blend.step": args.step})
        paths = resolve_paths(cfg)
        # With explicit --runs, validate only against an explicitly named sample submission, never the one
        # the default data folder happens to hold.
        sample = paths.sample_submission if not args.runs else cfg.paths.sample_submission
        _check_out(paths.submission, folder=False)
        run_blend(cfg, args.runs or [paths.image_run, paths.tabular_run], paths.submission, sample)
    elif cmd == "augment-preview":
        from melanoma.image.preview import augment_preview

        cfg = _load(args, {"seed": seed, "paths.tfrecords": args.tfrecords, "train.size": args.size})
        print(augment_preview(cfg, resolve_paths(cfg).tfrecords, args.out, args.n, args.copies))
    elif cmd in ("kaggle", "submit"):
        run_kaggle_command(args, _load)
    elif cmd == "doctor":
        import json

        from melanoma.kaggle.doctor import doctor, format_report

        report = doctor(_load(args, {}), devices=not args.no_devices)
        print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    elif cmd == "report":
        from melanoma.report import report
        from melanoma.run import default_report_runs, report_dir

        cfg = _load(args, {"paths.data": args.data, "paths.tfrecords": args.tfrecords,
                           "paths.test_labels": args.test_labels, "report.bootstrap": args.bootstrap,
                           "report.seed": args.seed, "report.gradcam": False if args.no_gradcam else None,
                           "report.out": args.out})
        out = report_dir(cfg)
        _check_out(out, folder=True)
        report(cfg, args.runs or default_report_runs(cfg), out)
        print(out / "report.html")
    elif cmd == "compare":
        from melanoma.report import compare, format_compare

        cfg = _load(args, {"paths.data": args.data, "report.bootstrap": args.bootstrap, "report.seed": args.seed})
        if args.out is not None:
            _check_out(args.out, folder=False)
        print(format_compare(compare(cfg, args.run_a, args.run_b, args.out)))
    elif cmd == "export":
        from melanoma.serve.export import export

        cfg = _load(args, {"train.backend": args.backend, "export.tfrecords": args.tfrecords,
                           "export.report": args.report, "export.combine": args.combine, "export.folds": args.fold_ids})
        _check_out(args.out, folder=True)
        print(export(cfg, args.run_dir, args.out)["model_version"])
    elif cmd == "predict":
        from melanoma.serve.predict import run_predict

        cfg = _load(args, {"train.backend": args.backend, "predict.image_dir": args.image_dir,
                           "predict.batch_size": args.batch_size, "predict.workers": args.workers})
        _check_out(args.out, folder=False)
        run_predict(cfg, args.model, args.images, args.out)
    elif cmd == "serve":
        from melanoma.serve.app import serve

        cfg = _load(args, {"train.backend": args.backend, "serve.host": args.host, "serve.port": args.port,
                           "serve.threshold": args.threshold})
        serve(args.model, cfg.serve)
    elif cmd == "run":
        cfg = _load(args, {})
        paths = resolve_paths(cfg)
        for out, folder in ((paths.tfrecords, True), (paths.folds.parent, True), (paths.submission, False)):
            _check_out(out, folder)
        print(format_summary(run_pipeline(cfg)))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (status 2, one line already printed), or --help / --version (0)
        return e.code if isinstance(e.code, int) else 2
    # Quiet TensorFlow's C++ start-up logging and Keras' dataset notices before either is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    try:
        _dispatch(args)
    except MelanomaError as e:
        print(f"melanoma: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused (read-only folder, a file where a folder should be, disk full)
        where = f"{e.filename}: " if e.filename else ""
        print(f"melanoma: error: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melanoma: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(message) -> str:
    """Errors print as one line, whatever text (a pandas parser message, a path) went into them."""
    return " ".join(str(message).split())


if __name__ == "__main__":
    sys.exit(main())
