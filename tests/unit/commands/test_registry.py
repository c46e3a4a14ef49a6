"""Issue 25: one way to be a stage (run(cfg, paths) -> Result, registered once) and one way to be a command (a
Command in its package's COMMANDS, listed once in melanoma.commands; cli.py builds and dispatches from that)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from melanoma import cli
from melanoma import commands as registry
from melanoma.config import STAGES
from melanoma.config.command import Command, Group, no_arguments


def test_the_stage_registry_holds_exactly_the_configs_stage_names_and_the_commands_call_the_same_runs():
    from melanoma.data import folds, prepare
    from melanoma.image import stage as image
    from melanoma.run.stages import STAGES as RUNS

    assert tuple(RUNS) == tuple(STAGES)
    # `melanoma folds`, `prepare`, `train` call these same functions (data/commands.py, image/commands.py)
    assert (RUNS["folds"], RUNS["prepare"], RUNS["train"]) == (folds.run, prepare.run, image.run)


def test_every_command_has_help_and_a_plan_or_a_reason_and_one_name():
    found = registry.commands()
    assert len(found) == len([c for c in registry.COMMANDS if isinstance(c, Command)])  # no name twice
    groups = {c.name for c in registry.COMMANDS if isinstance(c, Group)}
    for name, c in found.items():
        assert c.help.strip(), name
        assert (c.plan is None) != (c.exempt is None), name
        assert " " not in name or name.split()[0] in groups, name  # an action belongs to a declared group
    assert {"folds", "prepare", "train", "tabular", "blend", "report", "run", "kaggle download"} <= set(found)
    with pytest.raises(ValueError, match="exactly one of plan= and exempt="):
        Command("noplan", "writes something", no_arguments, lambda args, load: None)


def test_one_registry_line_adds_a_command_to_the_parser_and_the_dispatch(monkeypatch, tmp_path, capsys):
    """A toy command declared as a package would declare it: the registry line alone puts it in `melanoma --help`,
    gives it --config/--set and --force, guards its output, and dispatches to it."""
    calls = []

    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="file to write")

    def run(args, load):
        cfg = load(args)
        calls.append((args.out, cfg.seed))
        (tmp_path / args.out).write_text("toy\n")

    def plan(args, cfg):
        from melanoma.outputs import Out

        return [Out(tmp_path / args.out, own=lambda p: p.read_text() == "toy\n")], {"--input": tmp_path / "in.txt"}

    toy = Command("toy", "a toy command for the registry test", arguments, run, plan=plan)
    monkeypatch.setattr(registry, "COMMANDS", [*registry.COMMANDS, toy])

    assert cli.main(["--help"]) == 0
    assert "a toy command for the registry test" in capsys.readouterr().out
    assert cli.main(["toy", "--out", "t.txt", "--set", "seed=7"]) == 0
    assert calls == [("t.txt", 7)]
    assert cli.main(["toy", "--out", "t.txt"]) == 0  # its own output: replaced without --force
    (tmp_path / "in.txt").write_text("an input\n")
    assert cli.main(["toy", "--out", "in.txt", "--force"]) == 2  # an input is never an output
    assert "choose another" in capsys.readouterr().err
    assert (tmp_path / "in.txt").read_text() == "an input\n"
    assert len(calls) == 2


def test_the_cli_and_every_command_module_import_no_framework_and_no_scikit_learn():
    """`melanoma --help` and the one-line refusals stay fast: the registry imports every package's commands
    module, and none of them may pull in TensorFlow, Keras, JAX, scikit-learn or SciPy at import time."""
    heavy = ("tensorflow", "keras", "jax", "sklearn", "scipy", "imblearn", "lightgbm")
    code = ("import sys, melanoma.cli, melanoma.commands; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
