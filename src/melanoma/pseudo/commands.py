"""`melanoma pseudo --runs RUN [RUN ...] --out DIR`: its flags and action (registered in cli.py; the work is in
image/pseudo.py, imported only when the command runs)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from melanoma.config.flags import common, config_flags


def add_pseudo_parsers(sub) -> None:
    p = sub.add_parser("pseudo", help="train-only shards of confidently predicted test images, soft-labelled")
    common(p)
    p.add_argument("--runs", nargs="+", required=True, type=Path, metavar="RUN", help="run folders to blend")
    p.add_argument("--out", required=True, type=Path, help="folder for the shards (then train.pseudo: OUT)")
    config_flags(p, "pseudo.min_confidence", "paths.tfrecords")


def run_pseudo_command(args: argparse.Namespace, load: Callable) -> None:
    from melanoma.pseudo.labels import write_pseudo
    from melanoma.runtime.paths import resolve_paths

    cfg = load(args)
    print(json.dumps(write_pseudo(cfg, args.runs, str(resolve_paths(cfg).tfrecords), args.out), indent=2))
