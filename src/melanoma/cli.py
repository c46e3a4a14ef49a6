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
from melanoma.config.flags import Parser, command, config_flags, config_values, folds_flag
from melanoma.errors import MelanomaError
from melanoma.kaggle.commands import add_kaggle_parsers, run_kaggle_command
from melanoma.segment.commands import add_segment_parsers, run_segment_command
from melanoma.pseudo.commands import add_pseudo_parsers, run_pseudo_command
from melanoma.serve.commands import add_serving_parsers
from melanoma.synth.commands import add_synth_parsers, run_synth_command
from melanoma.ablate import add_ablate_parsers, run_ablate_command

log = logging.getLogger("melanoma")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="melanoma", description="SIIM-ISIC melanoma pipeline: "
                                     "folds -> prepare -> train -> tabular -> blend")
    parser.add_argument("--version", action="version", version=f"melanoma {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = command(sub, "folds", "patient-level stratified folds: train.csv -> folds.csv")
    config_flags(p, "paths.data", "n_folds", "seed")
    p.add_argument("--out", type=Path, help="folds.csv to write")
    p.add_argument("--tfrecords", help="public Kaggle TFRecords whose train.csv has a `tfrecord` column: "
                                       "folds follow their files")

    p = command(sub, "prepare", "competition layout -> sharded TFRecords, folds.csv, manifest.json")
    config_flags(p, "paths.data", "paths.tfrecords", "prepare.size", "n_folds", "seed", "prepare.resize",
                 "prepare.quality", "prepare.workers", "prepare.on_bad_image", "prepare.external",
                 "prepare.duplicates", "prepare.drop_duplicates", "prepare.upsample_malignant", "prepare.lesion",
                 "prepare.segmenter", renames={"paths.tfrecords": "--out"})
    p.add_argument("--folds-file", type=Path, help="use this folds.csv instead of computing folds")

    p = command(sub, "check", "leakage report: patients in train and test, duplicate images by content")
    config_flags(p, "paths.data", "prepare.duplicates", "prepare.dup_max_distance", "prepare.workers",
                 renames={"prepare.dup_max_distance": "--max-distance"})
    p.add_argument("--out", type=Path, help="report.json to write (and REPORT.duplicates.csv beside it)")

    p = command(sub, "train", "image model, fold by fold: OOF and test predictions")
    config_flags(p, "paths.tfrecords", "train.model", "train.size", "train.epochs", "train.batch_size", "train.folds",
                 "train.weights", "train.tta", "train.oversample", "train.class_weight", "train.positive_share",
                 "train.loss", "train.tta_flips", "train.metadata", "train.precision", "train.backend",
                 "train.resume", "seed", renames={"train.resume": "--restart"},
                 helps={"train.resume": "start the run folder over instead of resuming it"})
    p.add_argument("--out", type=Path, help="run folder to write")

    p = command(sub, "tabular", "metadata model (SMOTE + MLP, logistic regression, boosting) on the "
                      "same folds")
    config_flags(p, "paths.data", "paths.tfrecords", "tabular.model", "seed")
    folds_flag(p, "--folds-file", "folds.csv (written by `folds` or `prepare`)", type=Path)
    p.add_argument("--out", type=Path, help="run folder to write")

    p = command(sub, "blend", "blend run folders on OOF AUC and write submission.csv")
    config_flags(p, "paths.submission", "paths.sample_submission", "blend.method", "blend.power",
                 "blend.tabular_weight", "blend.step", renames={"paths.submission": "--out"})
    p.add_argument("--runs", type=Path, nargs="+", help="run folders (each with oof.csv and test_pred.csv)")

    add_kaggle_parsers(sub)
    add_segment_parsers(sub)
    add_pseudo_parsers(sub)
    add_synth_parsers(sub)
    add_ablate_parsers(sub)

    p = command(sub, "augment-preview", "PNG grid of training images and augmented copies of each")
    config_flags(p, "paths.tfrecords", "train.size", "seed")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=8, help="images (rows), default 8")
    p.add_argument("--copies", type=int, default=4, help="augmented copies per image (columns), default 4")

    p = command(sub, "run", "chain the stages from one config")

    p = command(sub, "report", "evaluation report of runs or blends: report.html, report.json, PNGs")
    p.add_argument("runs", type=Path, nargs="*", metavar="RUN_DIR",
                   help="run folders, or a blend's folder / blend.json (default: the config's image and tabular "
                        "runs and blend, where they exist)")
    config_flags(p, "report.out", "paths.data", "paths.tfrecords", "paths.test_labels", "report.bootstrap",
                 "report.seed", "report.gradcam")

    p = command(sub, "compare", "paired OOF AUC difference of two runs: patient bootstrap and DeLong")
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    config_flags(p, "paths.data", "report.bootstrap", "report.seed")

    add_serving_parsers(sub)

    sub.add_parser("models", help="list the model names")

    p = command(sub, "doctor", "where this runs, resolved paths, backend and devices, versions, and what "
                      "the configured run lacks")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-devices", action="store_true", help="do not import the backend to list its devices")
    _add_force(sub)
    return parser


def _add_force(sub) -> None:
    """`--force` on every command that writes (those with a plan in melanoma.commandio)."""
    from melanoma.commandio import PLANS
    from melanoma.outputs import force_flag

    for name, p in sub.choices.items():
        actions = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        for action_name, q in (actions[0].choices.items() if actions else []):
            if f"{name} {action_name}" in PLANS:
                force_flag(q)
        if name in PLANS:
            force_flag(p)


# Commands that may import Keras: the backend is fixed before their first import of it.
KERAS_COMMANDS = {"train", "run", "augment-preview", "doctor", "report", "export", "predict", "serve"}


def _load(args: argparse.Namespace, values: dict | None = None):
    """The config: defaults, --config, --set, then the command's flags (config_values) and any `values`."""
    from melanoma.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config, args.overrides), {**config_values(args), **(values or {})})
    from melanoma.commandio import check

    check(args, cfg)  # the outputs against the inputs, before any work (melanoma.outputs)
    if args.command in KERAS_COMMANDS:
        from melanoma.runtime.backend import use_backend
        from melanoma.runtime.devices import check_devices

        backend = use_backend(cfg.train.backend, cfg.train.cpu_replicas)
        if args.command == "train" or (args.command == "run" and "train" in cfg.stages):
            # A TPU that is not there is refused here, in seconds, before TensorFlow or any stage is loaded.
            check_devices(cfg.train.tpu, cfg.train.allow_cpu_fallback, backend)
    return cfg


def resolve_paths(cfg):
    """melanoma.runtime.paths.resolve_paths, imported when first needed (it loads pandas: slow next to a refusal)."""
    from melanoma.runtime.paths import resolve_paths as resolve

    return resolve(cfg)


def _dispatch(args: argparse.Namespace) -> None:
    cmd = args.command
    if cmd == "models":
        from melanoma.image.models import MODELS

        print("\n".join(MODELS))
        return
    if cmd == "folds":
        from melanoma.data.folds import run_folds

        cfg = _load(args)
        paths = resolve_paths(cfg)
        run_folds(cfg, paths.data, args.out or paths.folds, args.tfrecords)
    elif cmd == "prepare":
        from melanoma.data.prepare import prepare

        cfg = _load(args)
        paths = resolve_paths(cfg)
        # --out as given (a str): a Path would fold gs://bucket into gs:/bucket.
        prepare(cfg, paths.data, args.out or paths.tfrecords, args.folds_file)
    elif cmd == "check":
        from melanoma.data.check import run_check

        cfg = _load(args)
        paths = resolve_paths(cfg)
        run_check(cfg, paths.data, cfg.prepare.duplicates, args.out)
    elif cmd == "train":
        cfg = _load(args)
        paths = resolve_paths(cfg)
        from melanoma.image.train import train  # after the config is valid: a bad value never waits for TensorFlow

        train(cfg, paths.tfrecords, args.out or paths.image_run)
    elif cmd == "tabular":
        from melanoma.config import is_explicit
        from melanoma.tabular import run_tabular

        cfg = _load(args)
        paths = resolve_paths(cfg)
        # Image sizes only from a TFRecords folder that was asked for, never one that merely exists by default.
        sizes_dir = paths.tfrecords if is_explicit(cfg, "paths.tfrecords") else None
        run_tabular(cfg, paths.data, args.folds_file or paths.folds, args.out or paths.tabular_run, sizes_dir)
    elif cmd == "blend":
        from melanoma.blend import run_blend

        cfg = _load(args)
        paths = resolve_paths(cfg)
        # With explicit --runs, validate only against an explicitly named sample submission, never the one
        # the default data folder happens to hold.
        sample = paths.sample_submission if not args.runs else cfg.paths.sample_submission
        run_blend(cfg, args.runs or [paths.image_run, paths.tabular_run], paths.submission, sample)
    elif cmd == "augment-preview":
        cfg = _load(args)
        from melanoma.image.preview import augment_preview  # TensorFlow: after the config and outputs are checked

        print(augment_preview(cfg, resolve_paths(cfg).tfrecords, args.out, args.n, args.copies))
    elif cmd in ("kaggle", "submit"):
        run_kaggle_command(args, _load)
    elif cmd == "segment":
        run_segment_command(args, _load)
    elif cmd == "pseudo":
        run_pseudo_command(args, _load)
    elif cmd == "synth":
        run_synth_command(args, _load)
    elif cmd == "ablate":
        run_ablate_command(args, _load)
    elif cmd == "doctor":
        import json

        from melanoma.kaggle.doctor import doctor, format_report

        report = doctor(_load(args), devices=not args.no_devices)
        print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    elif cmd == "report":
        from melanoma.report import report
        from melanoma.report.defaults import default_report_runs, report_dir

        cfg = _load(args)
        out = report_dir(cfg)
        report(cfg, args.runs or default_report_runs(cfg), out)
        print(out / "report.html")
    elif cmd == "compare":
        from melanoma.report import compare, format_compare

        cfg = _load(args)
        print(format_compare(compare(cfg, args.run_a, args.run_b, args.out)))
    elif cmd == "export":
        from melanoma.serve.export import export

        cfg = _load(args)
        print(export(cfg, args.run_dir, args.out)["model_version"])
    elif cmd == "predict":
        from melanoma.serve.predict import run_predict

        cfg = _load(args)
        run_predict(cfg, args.model, args.images, args.out)
    elif cmd == "serve":
        cfg = _load(args)
        from melanoma.serve import require_extra

        require_extra()  # before FastAPI is imported: a missing extra is one line (exit 3), never an ImportError
        from melanoma.serve.app import serve

        serve(args.model, cfg.serve)
    elif cmd == "run":
        from melanoma.run import format_summary, run_pipeline

        cfg = _load(args)
        paths = resolve_paths(cfg)
        print(format_summary(run_pipeline(cfg)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    nul = next((a for a in argv if "\x00" in a), None)
    if nul is not None:  # no path or value may hold one (the file system would raise ValueError)
        print(f"melanoma: error: argument {nul!r} holds a NUL character", file=sys.stderr)
        return 2
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
        return e.exit_status  # 2: input or config; 3: the environment (melanoma.errors)
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
