"""`melanoma segment train|mask`: their flags and actions (registered in cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma.config.flags import common, config_flags, config_values


def add_segment_parsers(sub) -> None:
    s = sub.add_parser("segment", help="lesion segmentation: train a U-Net, or write masks for images")
    ssub = s.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    p = ssub.add_parser("train", help="U-Net on ISIC_x.jpg + ISIC_x_segmentation.png: Dice and Jaccard held out")
    common(p)
    p.add_argument("--images", type=Path, required=True, help="folder of ISIC_x.jpg images")
    p.add_argument("--masks", type=Path, required=True, help="folder of ISIC_x_segmentation.png masks")
    p.add_argument("--out", type=Path, required=True, help="folder for segmenter.keras, metrics.json, figures")
    config_flags(p, "segment.size", "segment.epochs", "segment.steps_per_epoch", "segment.batch_size",
                 "segment.learning_rate", "segment.val_share", "segment.seed", "train.backend",
                 renames={"segment.steps_per_epoch": "--steps"})
    p = ssub.add_parser("mask", help="lesion masks for a folder of images (trained segmenter or classical)")
    common(p)
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--out", type=Path, required=True, help="folder for NAME_segmentation.png")
    p.add_argument("--segmenter", help="a `segment train` folder (default: the classical method)")
    config_flags(p, "train.backend")


def run_segment_command(args: argparse.Namespace, load: Callable[[argparse.Namespace, dict], Any]) -> None:
    from melanoma.runtime.backend import use_backend

    if args.segment_command == "train":
        cfg = load(args, config_values(args))
        use_backend(cfg.train.backend)  # before the first Keras import
        from melanoma.segment.train import train_segmenter

        m = train_segmenter(cfg, args.images, args.masks, args.out)
        print(f"held-out Dice {m['dice']:.3f}, Jaccard {m['jaccard']:.3f} ({m['n_heldout']} images): {args.out}")
    else:
        cfg = load(args, config_values(args))
        use_backend(cfg.train.backend)
        from melanoma.segment.masks import write_masks

        n = write_masks(args.images, args.out, args.segmenter)
        print(f"{n} masks in {args.out}")
