"""One typed config for every stage, loaded from YAML with `key.path=value` overrides.

Unknown keys and values of the wrong type are errors, so a typo never silently falls back to a default.
Every output folder gets the resolved config (`config.yaml`) and a `run.json` with the package version and
the seed, so a run can be reproduced from its own outputs. The sections themselves are in sections.py;
the training recipes' defaults (train.recipe) in melanoma/config/recipes.py.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import platform
import sys
from pathlib import Path
from typing import Any

import yaml

from melanoma import __version__
from melanoma.config.sections import (  # noqa: F401  (re-exported: `from melanoma.config import TrainConfig`)
    PathsConfig,
    DataConfig,
    PrepareConfig,
    AugmentConfig,
    TrainConfig,
    TabularConfig,
    BlendConfig,
    ReportConfig,
    KaggleConfig,
    SegmentConfig,
    SynthConfig,
    ExportConfig,
    PredictConfig,
    ServeConfig,
    PseudoConfig,
    VariantConfig,
    Config,
    STAGES,
    Stage,
    Seed,
    PositiveInt,
    Count,
    Positive,
    NonNegative,
    Share,
    Dropout,
)
from melanoma.errors import ConfigError
from melanoma.files import write_json, write_text
from melanoma.config.aliases import canonical, new_key, tell
from melanoma.config.recipes import with_recipe
from melanoma.config.typed import build, set_path, yaml_value





def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then `key.path=value` overrides, all type-checked."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                              "save it as UTF-8") from None
        try:
            raw = yaml.load(text, Loader=UniqueKeyLoader) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark is not None else f"{path}"
            raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    canonical(raw)  # the file's old train keys in their sections first, so a --set of either spelling wins
    _set_overrides(raw, overrides or [])
    return _build_config(raw)


def _set_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """`key.path=value` items into the raw config, an old train key at its new place."""
    spelled: dict[str, str] = {}  # new key -> the --set spelling of it
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key = key.strip()
        if spelled.setdefault(new_key(key), key) != key:
            raise ConfigError(f"--set {spelled[new_key(key)]} and --set {key} are one setting, its old and its new "
                              f"key: keep --set {new_key(key)}")
        parsed = yaml_value(value, f"--set {key}") if value.strip() else None
        set_path(raw, new_key(key).split("."), parsed)
    tell([(key, new) for new, key in spelled.items() if key != new])


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first}): keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def apply_overrides(cfg: Config, values: dict[str, Any]) -> Config:
    """Return a copy of cfg with dotted keys set (None values are skipped): how CLI flags reach the config.

    A config from load_config remembers what the user set, so the training recipe is chosen again with the new
    values (a flag --weights none picks the scratch recipe). A Config made in code counts every value as set.
    """
    in_code = not hasattr(cfg, "_raw")
    raw = to_dict(cfg) if in_code else copy.deepcopy(cfg._raw)
    for key, value in values.items():
        if value is not None:
            set_path(raw, new_key(key).split("."), value)
    tell([(key, new_key(key)) for key in values if new_key(key) != key])
    out = _build_config(raw)
    if in_code:
        del out._raw  # still made in code: every value counts as set
        out._recipe_why = f"{out._recipe_why.split(';')[0]}; no defaults filled: every value as given in code"
    return out


def _build_config(raw: dict[str, Any]) -> Config:
    """The typed config of what the user set, with the chosen training recipe's defaults under it."""
    raw = canonical(raw)  # old train keys a value brought in (--set train={ema: 0.5}) in their sections too
    filled, _, why = with_recipe(raw)
    cfg = build(Config, filled, "")
    cfg._raw = raw  # what the user set, before the recipe: apply_overrides and is_explicit read it
    cfg._recipe_why = why
    return cfg


def is_explicit(cfg: Config, key: str) -> bool:
    """Whether the config file, a --set or a flag named `key` (rather than it keeping a default); `key` in
    either spelling (train.backend or train.devices.backend)."""
    node: Any = getattr(cfg, "_raw", None)
    if node is None:
        return True
    for part in new_key(key).split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def recipe_summary(cfg: Config) -> str:
    """Which training recipe the config uses, what it comes to (model, size, epochs, key choices) and why
    (logged by the train stage as `recipe: scratch (weights none) -> small_cnn_32 @ 32 px, ...`)."""
    from melanoma.config.recipes import describe

    return describe(cfg.train, getattr(cfg, "_recipe_why", "") or "every value as given in code")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_run_info(out_dir: str | Path, cfg: Config, stage: str, extra: dict[str, Any] | None = None,
                  prefix: str = "") -> None:
    """Write the resolved config (`config.yaml`), the package version and the seed (`run.json`) into a folder.

    `prefix` names them for a stage that writes a single file into a folder it does not own (folds.csv).
    """
    out_dir = Path(out_dir)
    write_text(out_dir / f"{prefix}config.yaml", dump_config(cfg))
    info = {
        "stage": stage,
        "package": "melanoma",
        "version": __version__,
        "seed": cfg.seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": platform.python_version(),
    }
    if "tensorflow" in sys.modules:
        info["tensorflow"] = sys.modules["tensorflow"].__version__
    info.update(extra or {})
    write_json(out_dir / f"{prefix}run.json", info)
