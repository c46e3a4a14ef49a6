"""The CLI's flags: generated from the config dataclasses, plus one-line argparse errors and --config/--set.

A command lists the config keys it exposes (`config_flags(p, "train.model", "train.epochs")`); each flag's
name, type, choices, bool form and help come from the field (its `setting(default, help)`), so a setting is
declared once. `config_values(args)` hands every given flag to the config, for every command alike.
Every package's commands.py uses them (melanoma.config.command); cli.py adds --config/--set (`common`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from melanoma.config.aliases import new_key, old_leaf

# Namespace attribute of a parsed command: {dest: config key} of its generated flags.
KEYS_ATTR = "_config_keys"

# Flags named otherwise than their field: which folds to use are fold ids wherever they are asked for.
NAMES = {"train.folds": "--fold-ids", "export.folds": "--fold-ids"}
# The old `--folds` spelling meant a count, a list or a file depending on the command; each meaning now has
# its own flag, and the old spelling still works with a note (tabular's file flag: folds_flag).
OLD_SPELLINGS = {"n_folds": "--folds", "train.folds": "--folds", "export.folds": "--folds"}


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line and exit status 2, like every other error of the command."""

    def error(self, message: str):
        command = self.prog.split(maxsplit=1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"melanoma: error: {command}{message} (see `{self.prog} --help`)\n")


@dataclass(frozen=True)
class ConfigField:
    """One config setting as the CLI sees it: the field's type with Annotated and `| None` removed."""

    key: str
    type: Any
    optional: bool  # the field also takes None
    default: Any
    help: str  # the field's help (its metadata)


def config_field(key: str) -> ConfigField:
    """The setting behind a dotted config key, old train keys too (KeyError when there is none); its `key` is
    the current one."""
    from melanoma.config import Config

    key = new_key(key)
    cls, parts = Config, key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            raise KeyError(f"{key}: not a config key")
        tp, optional = _unwrap(_type_hints(cls)[part])
        if i < len(parts) - 1:
            cls = tp
            continue
        if dataclasses.is_dataclass(tp):
            raise KeyError(f"{key}: a config section, not a setting")
        f = fields[part]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return ConfigField(key, tp, optional, default, fields[part].metadata.get("help", ""))
    raise KeyError(key)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A config dataclass's field types, resolved once: building the parser asks for each of about 90 flags."""
    return typing.get_type_hints(cls, include_extras=True)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(type, optional): Annotated[...] and `X | None` peeled off."""
    optional = False
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                raise TypeError(f"{tp}: a union of several types has no flag form")
            tp = args[0]
        else:
            return tp, optional


class ListFlag(argparse.Action):
    """A list setting: comma-separated items (`--fold-ids 0,1`) and repeatable (`--external A --external B`);
    items of free text (folder names) are taken whole, never split."""

    def __init__(self, option_strings, dest, item_type=str, split=True, item_choices=(), **kwargs):
        self.item_type, self.split, self.item_choices = item_type, split, tuple(item_choices)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(values, list):  # nargs: `--image-runs A B` (each item whole)
            items = values
        else:
            items = [v.strip() for v in values.split(",")] if self.split else [values]
        try:
            parsed = [self.item_type(v) for v in items if v != ""]
        except ValueError:
            parser.error(f"argument {option_string}: expected comma-separated {self.item_type.__name__} values, "
                         f"got {values!r}")
        bad = [v for v in parsed if self.item_choices and v not in self.item_choices]
        if bad:
            parser.error(f"argument {option_string}: invalid choice: {bad[0]!r} "
                         f"(choose from {', '.join(map(str, self.item_choices))})")
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), *parsed])


class OldSpelling(argparse.Action):
    """A flag's old spelling: still works as the new flag does (`inner`), and says which flag replaces it."""

    def __init__(self, option_strings, dest, new: str = "", inner: argparse.Action | None = None, **kwargs):
        self.new, self.inner = new, inner
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"melanoma: note: {option_string} is deprecated here, use {self.new}", file=sys.stderr)
        if self.inner is not None:
            self.inner(parser, namespace, values, option_string)
        else:
            setattr(namespace, self.dest, values)


def flag_kwargs(f: ConfigField) -> dict[str, Any]:
    """argparse keywords from the field's type: bools are switches, Literals choices, lists ListFlag."""
    if f.type is bool:
        if f.optional:  # None means "decide for me": both --x and --no-x
            return {"action": argparse.BooleanOptionalAction}
        return {"action": "store_const", "const": not f.default}  # the flag flips the default
    if typing.get_origin(f.type) is list:
        item, _ = _unwrap(typing.get_args(f.type)[0])
        if typing.get_origin(item) is Literal:
            choices = typing.get_args(item)
            return {"action": ListFlag, "item_type": type(choices[0]), "item_choices": choices}
        return {"action": ListFlag, "item_type": item, "split": item is not str}
    if typing.get_origin(f.type) is Literal:
        choices = typing.get_args(f.type)
        return {"type": type(choices[0]), "choices": choices}
    if f.type in (int, float, str, Path):
        return {"type": f.type}
    raise TypeError(f"{f.key}: type {f.type} has no flag form")


def flag_name(f: ConfigField) -> str:
    """`--epochs` for train.epochs; `--no-gradcam` for a setting that is on by default (report.gradcam). A train
    key that moved into a section keeps the flag of its old name (`--metadata` for train.meta.enabled)."""
    if f.key in NAMES:
        return NAMES[f.key]
    name = old_leaf(f.key).replace("_", "-")
    return f"--no-{name}" if f.type is bool and not f.optional and f.default else f"--{name}"


def flag_help(f: ConfigField, override: str | None = None) -> str:
    text = override or f.help or f.key.rsplit(".", 1)[-1].replace("_", " ")
    if override is None and f.type is bool and not f.optional and f.default:
        text = f"turn off: {text}"
    if override is None and "default" not in text and f.type is not bool and f.default not in (None, []):
        default = ",".join(map(str, f.default)) if isinstance(f.default, list) else f.default
        text += f" (default {default}{'; train.recipe may set another' if _recipe_sets(f.key) else ''})"
    return f"{text} [{f.key}]".replace("%", "%%")  # argparse formats help with %


def _recipe_sets(key: str) -> bool:
    """Whether a training recipe fills this key when the user leaves it unset (so the dataclass default may not
    be the value used)."""
    from melanoma.config.recipes import RECIPES

    section, *path = key.split(".")
    for recipe in RECIPES.values() if section == "train" else ():
        node: Any = recipe
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return True
    return False


def config_flags(p: argparse.ArgumentParser, *keys: str, renames: dict[str, str] | None = None,
                 helps: dict[str, str] | None = None, nargs: dict[str, tuple[str, str]] | None = None) -> None:
    """Add a flag for each config key: the flag sets that key (over --config and --set).

    `renames` gives a flag another name than the field's (`{"paths.tfrecords": "--out"}`); `helps` another
    help where the command's meaning differs from the field's comment (an inverted switch). A key may be an
    old train key: the flag then sets the key it moved to. `nargs` lets a list setting take several values after
    one flag, with their metavar (`{"tabular.image_runs": ("+", "RUN")}`: `--image-runs A B`).
    """
    renames = {new_key(k): v for k, v in (renames or {}).items()}
    helps = {new_key(k): v for k, v in (helps or {}).items()}
    nargs = {new_key(k): v for k, v in (nargs or {}).items()}
    mapping = p.get_default(KEYS_ATTR)
    if mapping is None:
        mapping = {}
        p.set_defaults(**{KEYS_ATTR: mapping})
    for f in map(config_field, keys):
        key = f.key
        name = renames.get(key) or flag_name(f)
        dest = name.lstrip("-").replace("-", "_")
        kwargs = flag_kwargs(f)
        if key in nargs:
            kwargs.update(nargs=nargs[key][0], metavar=nargs[key][1])
        action = p.add_argument(name, dest=dest, default=None, help=flag_help(f, helps.get(key)), **kwargs)
        mapping[dest] = key
        if key in OLD_SPELLINGS and OLD_SPELLINGS[key] != name:
            old = {k: v for k, v in kwargs.items() if k == "type"}
            p.add_argument(OLD_SPELLINGS[key], dest=dest, action=OldSpelling, new=name, help=argparse.SUPPRESS,
                           inner=None if old else action, **old)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """{config key: value} of the generated flags that were given: how every command's flags reach the config."""
    keys = getattr(args, KEYS_ATTR, None) or {}
    return {key: getattr(args, dest) for dest, key in keys.items() if getattr(args, dest, None) is not None}


def folds_flag(p: argparse.ArgumentParser, new: str, help_: str, **kwargs) -> None:
    """A folds flag that is not a config key (tabular's --folds-file), plus the old `--folds` spelling."""
    dest = new.lstrip("-").replace("-", "_")
    p.add_argument(new, dest=dest, help=help_, **kwargs)
    p.add_argument("--folds", dest=dest, action=OldSpelling, new=new, help=argparse.SUPPRESS, **kwargs)


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file (defaults apply to keys it does not set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
