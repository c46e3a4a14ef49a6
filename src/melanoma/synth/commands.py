"""`melanoma synth`: its flags (generated from the config fields) and its dispatch (registered in cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melanoma.config.flags import common, config_flags


def add_synth_parsers(sub) -> None:
    p = sub.add_parser("synth", help="CycleGAN benign -> malignant per fold: synthetic melanomas in train-only "
                                     "shards (train.synthetic)")
    common(p)
    config_flags(p, "paths.tfrecords", "synth.out", "synth.generator", "synth.size", "synth.steps", "synth.folds",
                 "train.backend", "seed", renames={"synth.folds": "--fold-ids"})


def run_synth_command(args: argparse.Namespace, load: Callable[[argparse.Namespace, dict], Any]) -> None:
    from melanoma.errors import ConfigError
    from melanoma.runtime.backend import use_backend
    from melanoma.runtime.paths import resolve_paths

    cfg = load(args, {})
    use_backend(cfg.train.backend)  # before the first Keras import
    out = cfg.synth.out or cfg.train.synthetic
    if out is None:
        raise ConfigError("synth: no output folder: give --out (or set synth.out or train.synthetic)")
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"{out}: exists and is a file, not a folder: choose another --out")
    from melanoma.synth.stage import synth  # after the config is valid: a bad value never waits for Keras

    index = synth(cfg, resolve_paths(cfg).tfrecords, out)
    print(Path(out) / "manifest.json", f"({sum(s['count'] for s in index['shards'])} synthetic images)")
