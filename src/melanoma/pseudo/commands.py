"""`melanoma pseudo --runs RUN [RUN ...] --out DIR`: its flags and action (the work is in pseudo/labels.py,
imported only when the command runs), and its output plan."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from melanoma.config.command import Command, Plan
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, run_folder, run_inputs


def _arguments(p) -> None:
    p.add_argument("--runs", nargs="+", required=True, type=Path, metavar="RUN", help="run folders to blend")
    p.add_argument("--out", required=True, type=Path, help="folder for the shards (then train.sources.pseudo: OUT)")
    config_flags(p, "pseudo.min_confidence", "paths.tfrecords")


def run_pseudo_command(args: argparse.Namespace, load: Callable) -> None:
    from melanoma.pseudo.labels import write_pseudo
    from melanoma.runtime.paths import resolve_paths

    cfg = load(args)
    print(json.dumps(write_pseudo(cfg, args.runs, str(resolve_paths(cfg).tfrecords), args.out), indent=2))


def _plan(args, cfg) -> Plan:
    from melanoma.runtime.paths import resolve_paths

    return [Out(args.out, folder=True, own=run_folder("pseudo"), writes=("manifest.json", "pseudo_labels.csv"))], \
        {"--runs": run_inputs(args.runs), "--tfrecords": resolve_paths(cfg).tfrecords}


COMMANDS = [
    Command("pseudo", "train-only shards of confidently predicted test images, soft-labelled", _arguments,
            run_pseudo_command, plan=_plan),
]
