"""What each command reads and writes, resolved from its flags and config, for the output guard (outputs.py).

`check(args, cfg)` runs from the CLI's config loading, so every command is guarded before any work. A new
command that writes must get a plan here (the CLI test fails until it has one, or is listed in EXEMPT).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma.outputs import (DEBRIS, Out, beside, csv_with, folds_outputs, guard, json_with, run_folder, run_inputs, stage_of,
                              with_run_info)

Plan = tuple[list[Out], dict[str, Any]]

# Commands without a plan, and why: they write no file, or only fixed files they generate from the repository
# (the CLI test lists every command: each is planned or exempt).
EXEMPT = {
    "models": "prints the model names",
    "doctor": "prints a report",
    "serve": "serves requests; writes nothing",
    "kaggle status": "prints the notebook's status",
    "submit": "uploads a file; writes nothing",
    "kaggle notebook": "regenerates the fixed kernels/*.ipynb from kernels/notebook.ipy; no flag names an output",
}


def command_name(args: argparse.Namespace) -> str:
    """`folds`, or `kaggle wheels` / `segment mask` for the commands with actions."""
    action = getattr(args, "kaggle_command", None) or getattr(args, "segment_command", None)
    return f"{args.command} {action}" if args.command in ("kaggle", "segment") and action else args.command


def check(args: argparse.Namespace, cfg) -> None:
    """Refuse the command's outputs that would overwrite an input or something it did not write."""
    name = command_name(args)
    plan = PLANS.get(name)
    if plan is None:
        return
    outputs, inputs = plan(args, cfg)
    guard(name, outputs, inputs, force=bool(getattr(args, "force", False)))


def _paths(cfg):
    from melanoma.runtime.paths import resolve_paths

    return resolve_paths(cfg)


def _file(value) -> Path | None:
    """A config value that names a file or folder (not a keyword such as none/imagenet)."""
    return Path(value) if value and Path(value).exists() else None


def _png_titled(title: str) -> Callable[[Path], bool]:
    def own(p: Path) -> bool:
        from PIL import Image

        with Image.open(p) as im:
            return im.info.get("Title") == title
    return own


# ---------------------------------------------------------------- the stage commands

def _folds(args, cfg) -> Plan:
    p = _paths(cfg)
    return folds_outputs(args.out or p.folds), {"--data": p.data, "--tfrecords": args.tfrecords}


def _check(args, cfg) -> Plan:
    if args.out is None:  # prints only
        return [], {}
    out = Path(args.out)
    own = json_with("degenerate_images", "unreadable_images")
    # "", "." or "/": no file name, so no sidecar either (the guard refuses the folder as a file output)
    dups = [Out(out.with_name(f"{out.stem}.duplicates.csv"), own=beside(out, own))] if out.name else []
    return [Out(out, own=own), *dups], {
        "--data": _paths(cfg).data, "--duplicates": cfg.prepare.duplicates}


PREPARE_WRITES = ("folds.csv", "duplicates.csv", "image_sizes.csv", "image_hashes.csv", "manifest.json",
                  "config.yaml", "run.json")
TRAIN_WRITES = ("oof.csv", "test_pred.csv", "metrics.json", "config.yaml", "run.json", "resume.json")
TABULAR_WRITES = ("oof.csv", "test_pred.csv", "metrics.json", "config.yaml", "run.json", "features.csv",
                  "image_stats.csv")


def _prepare_out(path, flag="--out") -> Out:
    return Out(path, folder=True, flag=flag, own=run_folder("prepare", markers=(".prepare-work",)),
               writes=PREPARE_WRITES)


def _prepare_inputs(cfg, p) -> dict[str, Any]:
    pc = cfg.prepare
    return {"--data": p.data, "prepare.external": [_file(e) for e in pc.external],
            "prepare.duplicates": pc.duplicates, "prepare.segmenter": pc.segmenter}


def _prepare(args, cfg) -> Plan:
    p = _paths(cfg)
    return [_prepare_out(args.out or p.tfrecords)], {**_prepare_inputs(cfg, p), "--folds-file": args.folds_file}


def _train_out(path, flag="--out") -> Out:
    return Out(path, folder=True, flag=flag, own=run_folder("train", markers=("resume.json",)), writes=TRAIN_WRITES)


def _train_inputs(cfg, tfrecords) -> dict[str, Any]:
    t = cfg.train
    return {"--tfrecords": tfrecords, "--weights": _file(t.weights), "train.pseudo": t.pseudo,
            "train.synthetic": t.synthetic, "train.external": [_file(e) for e in t.external]}


def _train(args, cfg) -> Plan:
    p = _paths(cfg)
    return [_train_out(args.out or p.image_run)], _train_inputs(cfg, p.tfrecords)


def _tabular_out(path, flag="--out") -> Out:
    return Out(path, folder=True, flag=flag, own=run_folder("tabular"), writes=TABULAR_WRITES)


def _tabular(args, cfg) -> Plan:
    from melanoma.config import is_explicit

    p = _paths(cfg)
    return [_tabular_out(args.out or p.tabular_run)], {
        "--data": p.data, "--folds-file": args.folds_file or p.folds,
        "--tfrecords": p.tfrecords if is_explicit(cfg, "paths.tfrecords") else None}


def _blend_outputs(path, flag="--out") -> list[Out]:
    path = Path(path)
    own = lambda q: stage_of(q.parent) == "blend"  # noqa: E731  (blend.json and run.json beside it)
    return with_run_info(path, own, "blend", flag=flag) + [Out(path.parent / "blend.json", own=own, flag=flag)]


def _blend(args, cfg) -> Plan:
    p = _paths(cfg)
    runs = args.runs or [p.image_run, p.tabular_run]
    sample = p.sample_submission if not args.runs else cfg.paths.sample_submission
    return _blend_outputs(p.submission), {"--runs": run_inputs(runs), "--sample-submission": sample,
                                          "blend.calibrate": _file(cfg.blend.calibrate)}


def _preview(args, cfg) -> Plan:
    from melanoma.plots import PREVIEW_TITLE

    return [Out(args.out, own=_png_titled(PREVIEW_TITLE))], {"--tfrecords": _paths(cfg).tfrecords}


def _report_out(path, flag="--out") -> Out:
    return Out(path, folder=True, flag=flag, own=lambda q: json_with("runs", "figures", "settings")(q / "report.json"),
               writes=("report.json", "report.html", "calibrator.json"))


def _report(args, cfg) -> Plan:
    from melanoma.report.defaults import default_report_runs, report_dir

    p = _paths(cfg)
    runs = args.runs or default_report_runs(cfg)
    return [_report_out(report_dir(cfg))], {"RUN_DIR": run_inputs(runs), "--data": p.data,
                                            "--tfrecords": p.tfrecords, "--test-labels": p.test_labels}


def _compare(args, cfg) -> Plan:
    return [Out(args.out, own=json_with("run_a", "run_b", "diff"))], {
        "RUN_A": run_inputs([args.run_a]), "RUN_B": run_inputs([args.run_b]), "--data": _paths(cfg).data}


def _export(args, cfg) -> Plan:
    from melanoma.serve.export import OWN

    own = lambda q: json_with("format_version", "model_version")(q / "model.json")  # noqa: E731
    e = cfg.export
    return [Out(args.out, folder=True, own=own, writes=OWN)], {
        "RUN_DIR": run_inputs([args.run_dir]), "--tfrecords": e.tfrecords or _paths(cfg).tfrecords,
        "--report": e.report}


def _predict(args, cfg) -> Plan:
    images: list[Path] = [args.images]
    if Path(args.images).is_file():  # a CSV: the images it lists are inputs too (bad CSVs stop here, one line)
        from melanoma.serve.predict import PATH, list_images

        images += [Path(q) for q in list_images(args.images, cfg.predict.image_dir)[PATH]]
    return [Out(args.out, own=csv_with("image_name", "path", "probability"))], {
        "--model": args.model, "--images": images, "--image-dir": cfg.predict.image_dir}


def _run(args, cfg) -> Plan:
    from melanoma.report.defaults import report_dir
    from melanoma.runtime.paths import image_run_configs

    p = _paths(cfg)
    outputs = [_prepare_out(p.tfrecords, "paths.tfrecords"), *folds_outputs(p.folds, "paths.runs"),
               *(_train_out(d, "paths.runs") for _, d in image_run_configs(cfg, p)),
               _tabular_out(p.tabular_run, "paths.runs"), *_blend_outputs(p.submission, "paths.submission"),
               _report_out(report_dir(cfg), "report.out")]
    inputs = {**_prepare_inputs(cfg, p), **_train_inputs(cfg, None), "paths.sample_submission":
              cfg.paths.sample_submission, "paths.test_labels": p.test_labels}
    return outputs, inputs


# ---------------------------------------------------------------- commands registered by their packages

def _segment_train(args, cfg) -> Plan:
    return [Out(args.out, folder=True, own=run_folder("segment"), writes=("segmenter.keras", "segmenter.json"))], \
        {"--images": args.images, "--masks": args.masks}


def _segment_mask(args, cfg) -> Plan:
    from melanoma.segment.masks import MARKER

    return [Out(args.out, folder=True, own=lambda q: (q / MARKER).is_file())], \
        {"--images": args.images, "--segmenter": args.segmenter}


def _pseudo(args, cfg) -> Plan:
    return [Out(args.out, folder=True, own=run_folder("pseudo"), writes=("manifest.json", "pseudo_labels.csv"))], \
        {"--runs": run_inputs(args.runs), "--tfrecords": _paths(cfg).tfrecords}


SYNTH_SETTINGS = "settings.json"  # synth/stage.py SETTINGS (not imported: that module imports Keras)


def _synth(args, cfg) -> Plan:
    out = cfg.synth.out or cfg.train.synthetic
    return [Out(out, folder=True, own=run_folder("synth", markers=(SYNTH_SETTINGS,)),
                writes=(SYNTH_SETTINGS, "manifest.json"))], \
        {"--tfrecords": _paths(cfg).tfrecords}


def _ablate(args, cfg) -> Plan:
    out = args.out or Path(cfg.paths.runs) / "ablate"
    p = _paths(cfg)
    own = lambda q: (q / "ablate.json").is_file() or (q / "folds.run.json").is_file()  # noqa: E731
    return [Out(out, folder=True, own=own, writes=("ablate.csv", "ablate.md", "ablate.json", "folds.csv"))], \
        {**_prepare_inputs(cfg, p), **_train_inputs(cfg, None)}


def _kaggle_download(args, cfg) -> Plan:
    from melanoma.runtime.datasets import TFRECORD_DATASETS

    out = Path(args.out)
    own = lambda q: (out / ".done").is_dir()  # noqa: E731  (the download's own markers)
    folders = [] if args.no_competition else [out / cfg.kaggle.competition]
    if args.tfrecords in TFRECORD_DATASETS:
        folders.append(out / TFRECORD_DATASETS[args.tfrecords].split("/")[1])
    return [Out(f, folder=True, own=own) for f in folders], {}


def _kaggle_push(args, cfg) -> Plan:
    return [Out(args.out, folder=True, own=lambda q: (q / "kernel-metadata.json").is_file())], \
        {"--kernels": args.kernels}


def _kaggle_output(args, cfg) -> Plan:
    from melanoma.kaggle.commands import OUTPUT_MARKER

    if args.out is None:  # runs/kaggle/SLUG: a name the command owns
        return [], {}
    return [Out(args.out, folder=True, own=lambda q: (q / OUTPUT_MARKER).is_file())], {}


def _kaggle_wheels(args, cfg) -> Plan:
    own = lambda q: all(f.suffix == ".whl" or f.name == "dataset-metadata.json" or DEBRIS.match(f.name)  # noqa: E731
                        for f in q.iterdir())
    return [Out(args.out, folder=True, own=own)], {"the repository": [Path.cwd(), Path.cwd() / "requirements.txt",
                                                                       Path.cwd() / "pyproject.toml"]}


PLANS: dict[str, Callable[[argparse.Namespace, Any], Plan]] = {
    "folds": _folds, "prepare": _prepare, "check": _check, "train": _train, "tabular": _tabular, "blend": _blend,
    "augment-preview": _preview, "report": _report, "compare": _compare, "export": _export, "predict": _predict,
    "run": _run, "segment train": _segment_train, "segment mask": _segment_mask, "pseudo": _pseudo,
    "synth": _synth, "ablate": _ablate, "kaggle download": _kaggle_download, "kaggle push": _kaggle_push,
    "kaggle output": _kaggle_output, "kaggle wheels": _kaggle_wheels,
}

