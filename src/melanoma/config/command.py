"""How a package declares a CLI command: one `Command` per command, in the package's `COMMANDS` list.

melanoma/commands.py lists every package's COMMANDS (one line per package) and cli.py builds the parser and
dispatches from them, so a new command touches its own package and, for a new package, that one line. A command
module imports nothing heavy at import time (no Keras, TensorFlow, scikit-learn): `melanoma --help` and the
one-line refusals stay fast; `run` and `plan` import what they need when called.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (outputs, inputs) of a command for the output guard (melanoma.outputs.guard): the files or folders it writes,
# as `Out`s, and {flag or key: path or paths} of what it reads.
Plan = tuple[list[Any], dict[str, Any]]
# How a command's `run` reads the config: load(args) -> Config, with the output guard and the backend choice
# done (cli.py).
Load = Callable[[argparse.Namespace], Any]


@dataclass(frozen=True)
class Group:
    """A command with actions (`melanoma kaggle download`): its actions are the Commands named "GROUP ACTION"."""
    name: str
    help: str


@dataclass(frozen=True)
class Command:
    name: str                                               # `folds`, or `kaggle download` for an action of a Group
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]  # its own flags (config_flags, add_argument)
    run: Callable[[argparse.Namespace, Load], None]           # the work: run(args, load)
    plan: Callable[[argparse.Namespace, Any], Plan] | None = None  # what it writes and reads (gets --force)
    exempt: str | None = None  # why a command has no plan (it writes nothing, or only fixed generated files)
    keras: bool = False  # may import Keras: the backend is fixed (runtime.backend) before `run` is called
    # whether a TPU that is not there is refused before any work (given the config), when keras is set
    devices: Callable[[Any], bool] | None = None
    common: bool = True  # --config and --set (every command that reads the config)

    def __post_init__(self):
        if (self.plan is None) == (self.exempt is None):
            raise ValueError(f"command {self.name!r}: give exactly one of plan= and exempt= (why it writes nothing)")


def no_arguments(p: argparse.ArgumentParser) -> None:
    """The add_arguments of a command with no flags of its own."""
