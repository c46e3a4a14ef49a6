"""`melanoma segment train|mask`: their flags, actions and output plans."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma.config.command import Command, Group, Load, Plan
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, run_folder


def _train_arguments(p) -> None:
    p.add_argument("--images", type=Path, required=True, help="folder of ISIC_x.jpg images")
    p.add_argument("--masks", type=Path, required=True, help="folder of ISIC_x_segmentation.png masks")
    p.add_argument("--out", type=Path, required=True, help="folder for segmenter.keras, metrics.json, figures")
    config_flags(p, "segment.size", "segment.epochs", "segment.steps_per_epoch", "segment.batch_size",
                 "segment.learning_rate", "segment.val_share", "segment.seed", "train.devices.backend",
                 renames={"segment.steps_per_epoch": "--steps"})


def _mask_arguments(p) -> None:
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--out", type=Path, required=True, help="folder for NAME_segmentation.png")
    p.add_argument("--segmenter", help="a `segment train` folder (default: the classical method)")
    config_flags(p, "train.devices.backend")


def _train(args: argparse.Namespace, load: Load) -> None:
    cfg = load(args)
    from melanoma.segment.train import train_segmenter  # Keras: after load() has fixed the backend

    m = train_segmenter(cfg, args.images, args.masks, args.out)
    print(f"held-out Dice {m['dice']:.3f}, Jaccard {m['jaccard']:.3f} ({m['n_heldout']} images): {args.out}")


def _mask(args: argparse.Namespace, load: Load) -> None:
    load(args)
    from melanoma.segment.masks import write_masks

    n = write_masks(args.images, args.out, args.segmenter)
    print(f"{n} masks in {args.out}")


def _train_plan(args, cfg) -> Plan:
    return [Out(args.out, folder=True, own=run_folder("segment"), writes=("segmenter.keras", "segmenter.json"))], \
        {"--images": args.images, "--masks": args.masks}


def _mask_plan(args, cfg) -> Plan:
    from melanoma.segment.masks import MARKER

    return [Out(args.out, folder=True, own=lambda q: (q / MARKER).is_file())], \
        {"--images": args.images, "--segmenter": args.segmenter}


COMMANDS = [
    Group("segment", "lesion segmentation: train a U-Net, or write masks for images"),
    Command("segment train", "U-Net on ISIC_x.jpg + ISIC_x_segmentation.png: Dice and Jaccard held out",
            _train_arguments, _train, plan=_train_plan, keras=True),
    Command("segment mask", "lesion masks for a folder of images (trained segmenter or classical)", _mask_arguments,
            _mask, plan=_mask_plan, keras=True),
]
