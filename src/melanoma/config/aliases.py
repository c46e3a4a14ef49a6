"""The train keys of before issue 25 still work: MOVED (config/train.py) applied wherever a key is read.

A raw mapping (a config file, an old run folder's config.yaml, a variant's train) goes through `canonical`
before it is built; a dotted key (`--set`, a flag's key, `--vary`, `is_explicit`) through `new_key`. An old
key used is said once per process at INFO ("train.ema is now train.checkpoints.ema (the old key still
works)"); the old and the new spelling of one setting in the same mapping is an error, as a repeated key is.
`flat_train` goes the other way, for the hashes that must not change with the layout.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from melanoma.config.train import MOVED
from melanoma.errors import ConfigError

log = logging.getLogger("melanoma.config")

# new key -> old key (the flags keep the names they had: --metadata for train.meta.enabled).
OLD = {new: old for old, new in MOVED.items()}
_told: set[str] = set()  # the old keys already said in this process


def new_key(key: str) -> str:
    """The current spelling of a dotted config key (the key itself when it is current or unknown)."""
    return MOVED.get(key, key)


def old_leaf(key: str) -> str:
    """The last part of the key's spelling before issue 25 (of the key itself when it did not move)."""
    return OLD.get(key, key).rsplit(".", 1)[-1]


def canonical(raw: Any) -> Any:
    """The raw config with every old train key moved to its section, the variants' train too (in place)."""
    if not isinstance(raw, dict):
        return raw  # the config's own validation names the problem
    used: list[tuple[str, str]] = []
    _move(raw.get("train"), "train", used)
    variants = raw.get("variants")
    for i, variant in enumerate(variants if isinstance(variants, list) else []):
        if isinstance(variant, dict):
            _move(variant.get("train"), f"variants[{i}].train", used)
    tell(used)
    return raw


def _move(train: Any, where: str, used: list[tuple[str, str]]) -> None:
    """Move the old keys of one raw train mapping into their sections; `where` names it in an error."""
    if not isinstance(train, dict):
        return
    for old, new in MOVED.items():
        leaf = old.split(".", 1)[1]
        if leaf not in train:
            continue
        section, name = new.split(".")[1:]
        child = train.get(section)
        if child is None:
            child = train[section] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}.{section}: expected a mapping, got {child!r}")
        if name in child:
            raise ConfigError(f"{where}.{leaf} and {where}.{section}.{name} are one setting, its old and its new "
                              f"key: keep {where}.{section}.{name}")
        child[name] = train.pop(leaf)
        used.append((old, new))


def tell(used: list[tuple[str, str]]) -> None:
    """Say once per process which old keys were used and where they are now (one log line per load)."""
    fresh = list(dict.fromkeys(old for old, _ in used if old not in _told))
    if not fresh:
        return
    _told.update(fresh)
    shown = ", ".join(f"{old} is now {MOVED[old]}" for old in fresh[:3])
    more = f" and {len(fresh) - 3} more train keys are now in sections" if len(fresh) > 3 else ""
    log.info("%s%s (the old key%s still work%s)", shown, more, *(("s", "") if len(fresh) > 1 else ("", "s")))


# Train settings added since issue 25 -> their off value: left out of the flat layout while off, so a run folder
# trained before them still resumes (its fingerprint is unchanged) and ablate's folders keep their names.
ADDED_SINCE: dict[str, Any] = {"imbalance.negative_ratio": None}


def flat_train(tcfg: Any) -> dict[str, Any]:
    """The train section as a mapping in the flat layout of before issue 25, so that what was hashed from it
    (a run folder's fingerprint, ablate's setting folders) stays the same and older folders still match."""
    flat = dataclasses.asdict(tcfg)
    for key, off in ADDED_SINCE.items():  # a setting added later, left at its off value, hashes as before it existed
        section, name = key.split(".")
        if flat[section].get(name, off) == off:
            flat[section].pop(name, None)
    for old, new in MOVED.items():
        section, name = new.split(".")[1:]
        flat[old.split(".", 1)[1]] = flat[section].pop(name)
    for section in {new.split(".")[1] for new in MOVED.values()}:
        if not flat[section]:
            del flat[section]
    return flat
