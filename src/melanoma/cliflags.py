"""The CLI's shared flag helpers: one-line argparse errors, the flags every command has, the folds flags.

cli.py and the packages that declare their own commands (kaggle/commands.py, serve/commands.py) use them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line and exit status 2, like every other error of the command."""

    def error(self, message: str):
        command = self.prog.split(maxsplit=1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"melanoma: error: {command}{message} (see `{self.prog} --help`)\n")


class OldSpelling(argparse.Action):
    """A flag's old spelling: still works, and says which flag replaces it (`--folds` meant a count, a list or a
    file depending on the command; each meaning now has its own name)."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"melanoma: note: {option_string} is deprecated here, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def folds_flag(p: argparse.ArgumentParser, new: str, help_: str, **kwargs) -> None:
    """One meaning of the folds: its own flag name, plus the old `--folds` spelling (hidden, with a note)."""
    dest = new.lstrip("-").replace("-", "_")
    p.add_argument(new, dest=dest, help=help_, **kwargs)
    p.add_argument("--folds", dest=dest, action=OldSpelling, new=new, help=argparse.SUPPRESS, **kwargs)


def command(sub, name: str, help_: str) -> argparse.ArgumentParser:
    """A subcommand with the flags every command has (--config, --set)."""
    p = sub.add_parser(name, help=help_)
    common(p)
    return p


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file (defaults apply to keys it does not set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
