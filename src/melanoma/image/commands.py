"""`melanoma train`, `augment-preview` and `models`: their flags, actions and output plans."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from melanoma.config.command import Command, Plan, no_arguments
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, existing, png_titled, run_folder
from melanoma.runtime.paths import resolve_paths

TRAIN_WRITES = ("oof.csv", "test_pred.csv", "metrics.json", "config.yaml", "run.json", "resume.json")


def _train_arguments(p) -> None:
    config_flags(p, "paths.tfrecords", "train.model", "train.size", "train.epochs", "train.batch_size", "train.folds",
                 "train.weights", "train.tta", "train.imbalance.oversample", "train.imbalance.class_weight",
                 "train.imbalance.positive_share", "train.imbalance.loss", "train.tta_flips", "train.meta.enabled",
                 "train.devices.precision", "train.devices.backend", "train.checkpoints.resume", "seed",
                 renames={"train.checkpoints.resume": "--restart"},
                 helps={"train.checkpoints.resume": "start the run folder over instead of resuming it"})
    p.add_argument("--out", type=Path, help="run folder to write")


def _train(args, load) -> None:
    cfg = load(args)
    paths = resolve_paths(cfg)
    from melanoma.image.stage import run  # TensorFlow only inside: a bad value never waits for it

    run(cfg, dataclasses.replace(paths, image_run=args.out or paths.image_run))


def train_out(path, flag: str = "--out") -> Out:
    return Out(path, folder=True, flag=flag, own=run_folder("train", markers=("resume.json",)), writes=TRAIN_WRITES)


def train_inputs(cfg, tfrecords) -> dict[str, Any]:
    src = cfg.train.sources
    return {"--tfrecords": tfrecords, "--weights": existing(cfg.train.weights), "train.sources.pseudo": src.pseudo,
            "train.sources.synthetic": src.synthetic, "train.sources.external": [existing(e) for e in src.external]}


def _train_plan(args, cfg) -> Plan:
    p = resolve_paths(cfg)
    return [train_out(args.out or p.image_run)], train_inputs(cfg, p.tfrecords)


def _preview_arguments(p) -> None:
    config_flags(p, "paths.tfrecords", "train.size", "seed")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=8, help="images (rows), default 8")
    p.add_argument("--copies", type=int, default=4, help="augmented copies per image (columns), default 4")


def _preview(args, load) -> None:
    cfg = load(args)
    from melanoma.image.preview import augment_preview  # TensorFlow: after the config and outputs are checked

    print(augment_preview(cfg, resolve_paths(cfg).tfrecords, args.out, args.n, args.copies))


def _preview_plan(args, cfg) -> Plan:
    from melanoma.plots import PREVIEW_TITLE

    return [Out(args.out, own=png_titled(PREVIEW_TITLE))], {"--tfrecords": resolve_paths(cfg).tfrecords}


def _models(args, load) -> None:
    from melanoma.image.models import MODELS

    print("\n".join(MODELS))


COMMANDS = [
    Command("train", "image model, fold by fold: OOF and test predictions", _train_arguments, _train,
            plan=_train_plan, keras=True, devices=lambda cfg: True),
    Command("augment-preview", "PNG grid of training images and augmented copies of each", _preview_arguments,
            _preview, plan=_preview_plan, keras=True),
    Command("models", "list the model names", no_arguments, _models, exempt="prints the model names",
            common=False),
]
