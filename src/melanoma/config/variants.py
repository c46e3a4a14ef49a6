"""Multi-model runs: `variants` in the config, each image model its own run folder, all blended together.

```yaml
variants:
  - {name: b0-256, seed: 1, train: {model: efficientnet_b0, size: 256}}
  - {name: b3-384, train: {model: efficientnet_b3, size: 384, batch_size: 16}}
```

A variant's `train` holds only the keys it changes; the rest are the config's train section (and its recipe,
chosen again with the variant's keys, as a flag would). It is validated like the rest of the config when the
config loads (unknown keys and bad values are errors). Each variant trains into PATHS.runs/image-NAME in
turn; the train stage's fold-level resume works per folder, so a second `melanoma run` keeps finished variants
and folds, and chained Kaggle sessions adopt the previous session's folds folder by folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from melanoma.config import Config, TrainConfig, VariantConfig, apply_overrides, to_dict


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _changed(v: VariantConfig, i: int, cfg: Config) -> dict[str, Any]:
    """The train keys the variant sets: as written (load_config remembers it), else those differing from the
    defaults (a config made in code)."""
    raw = getattr(cfg, "_raw", None)
    if raw is not None and isinstance(raw.get("variants"), list) and i < len(raw["variants"]):
        return _flatten(raw["variants"][i].get("train") or {}, "train.")
    default = _flatten(to_dict(TrainConfig()), "train.")
    return {k: val for k, val in _flatten(to_dict(v.train), "train.").items() if default.get(k) != val}


def variant_configs(cfg: Config) -> list[tuple[str, Config]]:
    """(name, config) of every variant: the config with the variant's train keys (and seed) applied."""
    out = []
    for i, v in enumerate(cfg.variants):
        values = _changed(v, i, cfg)
        if v.seed is not None:
            values["seed"] = v.seed
        out.append((v.name, apply_overrides(cfg, values)))
    return out


def variant_dir(runs: Path, name: str) -> Path:
    return Path(runs) / f"image-{name}"
