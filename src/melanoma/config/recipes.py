"""Training recipes: named sets of `train.*` defaults, chosen by `train.recipe` (issue 18).

- `finetune` is the public SIIM-ISIC TPU recipe for ImageNet-initialised EfficientNets (ramp from 5e-6 to
  1.25e-6 x global batch over 5 epochs, then x0.8 per epoch): the dataclass defaults of TrainConfig, unchanged.
- `scratch` is for weights none. A randomly initialised network with BatchNorm barely moves under the
  fine-tuning learning rates (constant predictions, validation AUC 0.5 for epochs), so it gets a small
  Conv-BN-ReLU network at 32 px that runs many epochs on a CPU, a 1.6x higher peak learning rate per image
  with a short warm-up and a cosine decay, BatchNorm momentum for few steps per epoch, no label smoothing, the
  metadata joined to the image features, and no colour or shear jitter (colour is diagnostic; small networks
  lean on it). Chosen by measurement on ISIC 2017 (bench/scratch.py, bench/RESULTS.md "scratch recipe").
  Issue 28 (bench/RESULTS.md "scratch recipe, round 2"): new photos often come without metadata, and the
  jointly trained metadata model then ranked them worse than an image-only model (0.705 against 0.736 on the
  validation images). So the metadata joins as a residual on an image-only output (meta.fusion residual:
  without metadata the ranking is the image-only model's), with metadata dropout so the all-missing vector is
  seen in training; the weights are averaged (EMA 0.99) and the last epoch's are kept (the best epoch by a
  401-image validation fold picked early, metadata-carried epochs), and the three flips are averaged at test
  time. Measured (one fold, about 1,100 CPU s): 0.800 on the 150 validation images, 0.769 with their metadata
  emptied, against 0.749 for the same recipe image-only; with seed 1, 0.747 and 0.709 (the seed spread is large).

`auto` picks finetune when weights are given (imagenet or a file) and scratch for weights none. A recipe only
fills keys the user did not set: a key named in the config file, a `--set` or a flag always wins.
"""

from __future__ import annotations

import copy
from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {},
    "scratch": {
        "model": "small_cnn_32",
        "size": 32,
        "epochs": 60,
        "batch_size": 32,
        "bn_momentum": 0.9,
        "tta_flips": True,
        "optimizer": {
            "schedule": "cosine",
            "lr_start": 1e-4,
            "lr_max_per_image": 6.25e-5,  # peak 2e-3 at a global batch of 32
            "lr_min": 1e-6,
            "warmup_epochs": 2.0,
        },
        "imbalance": {"label_smoothing": 0.0},
        "meta": {"enabled": True, "fusion": "residual", "field_dropout": 0.1, "row_dropout": 0.3},
        "checkpoints": {"ema": 0.99, "keep": "last"},
        "augment": {"shear": 0.0, "hue": 0.0, "saturation": 0.0, "contrast": 0.0, "brightness": 0.0},
    },
}

# Keys that only make sense together: the recipe sets them all or none (a model named by the user keeps the
# default input size, not the 32 px of the recipe's small network).
LINKED = (("model", "size"),)


# Why each recipe is what it is, for the log line (describe).
WHY = {
    "finetune": "the public SIIM-ISIC TPU schedule for pretrained EfficientNets",
    "scratch": "a randomly initialised network: many epochs of a small network at low resolution on a CPU; the "
               "metadata as a residual on an image-only output, so images without metadata score as with an "
               "image-only model; measured on ISIC 2017 (bench/RESULTS.md)",
}


def choose(train_raw: dict[str, Any]) -> tuple[str, str]:
    """The recipe a raw `train` section asks for, and why (for the log)."""
    asked = train_raw.get("recipe", "auto")
    if asked in RECIPES:
        return asked, "set in the config"
    weights = train_raw.get("weights", "imagenet")
    if weights is None or str(weights).strip().lower() in ("none", "null", ""):
        return "scratch", "weights none"
    return "finetune", f"weights {weights}"


def describe(tcfg: Any, why: str) -> str:
    """The log line of the resolved training settings: `scratch (weights none) -> small_cnn_32 @ 32 px, 60
    epochs, ...; why ...`. From the config itself, so keys the user set show as they are."""
    t, opt, meta = tcfg, tcfg.optimizer, tcfg.meta
    parts = [f"{t.model} @ {t.size} px", f"{t.epochs} epochs x batch {t.batch_size}",
             f"{opt.schedule} schedule, peak LR {opt.lr_max_per_image * t.batch_size:.1e} per replica"]
    if meta.enabled:
        parts.append(f"metadata {'as a residual on the image-only output' if meta.fusion == 'residual' else 'joined'}"
                     f" with dropout {meta.field_dropout:g} per field and {meta.row_dropout:g} per row")
    else:
        parts.append("image only")
    if t.checkpoints.ema:
        parts.append(f"EMA of the weights {t.checkpoints.ema:g}")
    if t.imbalance.label_smoothing:
        parts.append(f"label smoothing {t.imbalance.label_smoothing:g}")
    views = (["flips"] if t.tta_flips else []) + ([f"{t.tta} random passes"] if t.tta else [])
    parts.append(f"TTA {' + '.join(views)}" if views else "no TTA")
    parts.append(f"{t.checkpoints.keep} epoch's weights")
    short, _, rest = why.partition(";")
    return f"{t.recipe} ({short}) -> {', '.join(parts)}; why: {WHY.get(t.recipe, '')}" + (f";{rest}" if rest else "")


def with_recipe(raw: dict[str, Any]) -> tuple[dict[str, Any], str | None, str]:
    """A copy of the raw config with the chosen recipe's defaults filled in where the user set nothing.

    Returns (raw', recipe, why); recipe is None when the train section is not a mapping (the config's own
    validation then names the problem).
    """
    train = raw.get("train", {}) if isinstance(raw, dict) else None
    if train is None:
        train = {}
    if not isinstance(train, dict) or train.get("recipe", "auto") not in ("auto", *RECIPES):
        return raw, None, ""  # the config's own validation names the bad value
    name, why = choose(train)
    out = copy.deepcopy(raw)
    filled = _fill(out.setdefault("train", {}), RECIPES[name])
    out["train"]["recipe"] = name
    if filled:
        why += f"; it set {', '.join(filled)}"
    return out, name, why


def _fill(section: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    """Fill unset keys of `section` from `defaults` (nested for the sections); returns the keys filled."""
    filled = []
    blocked = {k for group in LINKED for k in group if any(g in section for g in group)} if not prefix else set()
    for key, value in defaults.items():
        if isinstance(value, dict):
            child = section.get(key)
            if child is None:
                child = section[key] = {}
            if isinstance(child, dict):
                filled += _fill(child, value, f"{prefix}{key}.")
        elif key not in section and key not in blocked:
            section[key] = value
            filled.append(prefix + key)
    return filled
