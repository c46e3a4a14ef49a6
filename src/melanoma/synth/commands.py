"""`melanoma synth`: its flags (generated from the config fields) and its action and output plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma.config.command import Command, Load, Plan
from melanoma.config.flags import config_flags
from melanoma.outputs import Out, run_folder


def _arguments(p) -> None:
    config_flags(p, "paths.tfrecords", "synth.out", "synth.generator", "synth.size", "synth.steps", "synth.folds",
                 "train.devices.backend", "seed", renames={"synth.folds": "--fold-ids"})


def run_synth_command(args: argparse.Namespace, load: Load) -> None:
    from melanoma.errors import ConfigError
    from melanoma.runtime.paths import resolve_paths

    cfg = load(args)  # fixes the backend before the first Keras import (keras=True below)
    out = cfg.synth.out or cfg.train.sources.synthetic
    if out is None:
        raise ConfigError("synth: no output folder: give --out (or set synth.out or train.sources.synthetic)")
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"{out}: exists and is a file, not a folder: choose another --out")
    from melanoma.synth.stage import synth  # after the config is valid: a bad value never waits for Keras

    index = synth(cfg, resolve_paths(cfg).tfrecords, out)
    print(Path(out) / "manifest.json", f"({sum(s['count'] for s in index['shards'])} synthetic images)")


SETTINGS = "settings.json"  # synth/stage.py SETTINGS (not imported: that module imports Keras)


def _plan(args, cfg) -> Plan:
    from melanoma.runtime.paths import resolve_paths

    out = cfg.synth.out or cfg.train.sources.synthetic
    return [Out(out, folder=True, own=run_folder("synth", markers=(SETTINGS,)), writes=(SETTINGS, "manifest.json"))], \
        {"--tfrecords": resolve_paths(cfg).tfrecords}


COMMANDS = [
    Command("synth", "CycleGAN benign -> malignant per fold: synthetic melanomas in train-only shards "
            "(train.sources.synthetic)", _arguments, run_synth_command, plan=_plan, keras=True),
]
