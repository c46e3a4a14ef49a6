"""The typed-config machinery behind melanoma.config: YAML values checked against dataclass fields.

Fields are plain types, `Literal` choices, unions with None, nested dataclasses, lists and numbers annotated
with a `Range`; `build` turns a raw mapping into the dataclass or raises one ConfigError naming the key.
Sections register checks over several fields in CROSS_CHECKS.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml

from melanoma.errors import ConfigError

# Checks that involve several fields of a section (class -> functions returning a problem or None).
CROSS_CHECKS: dict[type, tuple] = {}


def yaml_value(text: str, where: str) -> Any:
    """A value typed on the command line (`--set k=V`, `--vary k=V1,V2`, `--fold-ids 0,1`) read as YAML, or one
    ConfigError naming it (an unclosed `[1,2` would otherwise be a YAMLError traceback)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: the value {text!r} is not valid YAML ({problem}): quote it to mean a "
                          "string") from None


@dataclass(frozen=True)
class Range:
    """Bounds of a number field, checked at load: `Annotated[int, Range(1)]` is an integer >= 1.

    Every number in the config carries one, so a stage never starts on a value that makes no sense.
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False  # the bound itself is excluded
    max_open: bool = False

    def describe(self) -> str:
        parts = [f"{'>' if self.min_open else '>='} {_num(self.min)}"] if self.min is not None else []
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {_num(self.max)}")
        return " and ".join(parts)

    def check(self, value: float, key: str) -> None:
        low = self.min is None or (value > self.min if self.min_open else value >= self.min)
        high = self.max is None or (value < self.max if self.max_open else value <= self.max)
        if not (low and high):
            kind = "an integer" if isinstance(value, int) else "a number"
            raise ConfigError(f"{key}: expected {kind} {self.describe()}, got {_num(value)}")


def _num(x: float) -> str:
    """A number as a person writes it: 5, 0.25, 1e-06 (never np.float64(...) or 5.0)."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{float(x):g}"


def set_path(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node = raw
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys)}: {k} is not a section")
        node = child
    node[keys[-1]] = value


def build(cls: type, raw: Any, prefix: str) -> Any:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]} (known keys{' in ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {name: _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name) for name, value in raw.items()}
    obj = cls(**kwargs)
    for check in CROSS_CHECKS.get(cls, ()):
        problem = check(obj)
        if problem:
            raise ConfigError(f"{prefix + '.' if prefix else ''}{problem}")
    return obj


def _choice(value: Any, choices: tuple, key: str) -> Any:
    """A Literal field: the value must be one of the choices (YAML 1.1 reads off/on as booleans)."""
    if isinstance(value, bool):
        word = "on" if value else "off"
        if word in choices:
            return word
    for c in choices:
        if value == c and type(value) is type(c):  # 1 is not True, "1" is not 1
            return c
    shown = ", ".join(map(str, choices))
    raise ConfigError(f"{key}: expected one of {shown}, got {value!r}")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        value = _coerce(base, value, key)
        for m in meta:
            if isinstance(m, Range):
                m.check(value, key)
        return value
    if origin is Literal:
        return _choice(value, typing.get_args(tp), key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "0,1,2" from the command line
            value = [yaml_value(v, key) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value}")
            return number
    elif tp is str:
        if isinstance(value, (str, int, float, os.PathLike)) and not isinstance(value, bool):
            text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
            if "\x00" in text:  # no path or name may hold one: the file system would raise ValueError later
                raise ConfigError(f"{key}: {text!r} holds a NUL character")
            return text
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
