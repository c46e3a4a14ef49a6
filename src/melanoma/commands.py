"""The command registry: every package's COMMANDS (melanoma.config.command), one line per package, in the order
`melanoma --help` lists them. cli.py builds the parser and dispatches from this list alone, so a new command is
written in its package and, for a package with no commands yet, added here in one line.
"""

from __future__ import annotations

from melanoma import ablate
from melanoma.blend import commands as blend
from melanoma.config.command import Command, Group
from melanoma.data import commands as data
from melanoma.image import commands as image
from melanoma.kaggle import commands as kaggle
from melanoma.pseudo import commands as pseudo
from melanoma.report import commands as report
from melanoma.run import commands as run
from melanoma.segment import commands as segment
from melanoma.serve import commands as serve
from melanoma.synth import commands as synth
from melanoma.tabular import commands as tabular

COMMANDS: list[Command | Group] = [
    *data.COMMANDS,  # folds, prepare, check
    *image.COMMANDS,  # train, augment-preview, models
    *tabular.COMMANDS,  # tabular
    *blend.COMMANDS,  # blend
    *run.COMMANDS,  # run
    *report.COMMANDS,  # report, compare
    *kaggle.COMMANDS,  # kaggle download|push|status|output|wheels|notebook, submit, doctor
    *segment.COMMANDS,  # segment train|mask
    *pseudo.COMMANDS,  # pseudo
    *synth.COMMANDS,  # synth
    *ablate.COMMANDS,  # ablate
    *serve.COMMANDS,  # export, predict, serve
]


def commands(registry: list[Command | Group] | None = None) -> dict[str, Command]:
    """{name: Command} of every command (`kaggle download` for an action of a group)."""
    return {c.name: c for c in (COMMANDS if registry is None else registry) if isinstance(c, Command)}
