"""train.recipe (issue 18): auto picks finetune with weights and scratch without; explicit keys always win."""


import pytest

from melanoma.config import (Config, TrainConfig, apply_overrides, dump_config, is_explicit, load_config,
                             recipe_summary)
from melanoma.errors import ConfigError
from melanoma.config.recipes import RECIPES

from helpers.paths import ROOT

# The public TPU fine-tuning schedule (issue 18: unchanged for runs with weights).
FINETUNE = {"model": "efficientnet_b0", "size": 256, "epochs": 12, "batch_size": 32,
            "optimizer.schedule": "exponential", "optimizer.lr_start": 5e-6, "optimizer.lr_max_per_image": 1.25e-6,
            "optimizer.lr_min": 1e-6, "optimizer.warmup_epochs": 5.0, "optimizer.decay": 0.8,
            "imbalance.label_smoothing": 0.05, "bn_momentum": None, "meta.enabled": False}


def values(tcfg: TrainConfig, keys) -> dict:
    """{dotted key under train: its value} (`optimizer.lr_min` reads tcfg.optimizer.lr_min)."""
    out = {}
    for k in keys:
        node = tcfg
        for part in k.split("."):
            node = getattr(node, part)
        out[k] = node
    return out


def flat(recipe: dict, prefix: str = "") -> dict:
    """A recipe's nested defaults as {dotted key: value}."""
    out = {}
    for k, v in recipe.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_auto_with_weights_is_finetune_and_unchanged():
    cfg = load_config(None, [])
    assert cfg.train.recipe == "finetune"
    assert values(cfg.train, FINETUNE) == FINETUNE
    assert "weights imagenet" in recipe_summary(cfg)
    # a weights file is "weights given" too
    assert load_config(None, ["train.weights=my.weights.h5"]).train.recipe == "finetune"


def test_kaggle_tpu_config_keeps_its_schedule():
    cfg = load_config(ROOT / "configs" / "kaggle_tpu.yaml")
    assert cfg.train.recipe == "finetune"
    t, o = cfg.train, cfg.train.optimizer
    assert (o.lr_start, o.lr_max_per_image, o.lr_min, o.warmup_epochs, o.decay, o.schedule) == (
        5e-6, 1.25e-6, 1e-6, 5.0, 0.8, "exponential")
    assert t.imbalance.label_smoothing == 0.05
    assert (t.model, t.size, t.epochs, t.meta.enabled, t.bn_momentum) == ("efficientnet_b5", 384, 12, False, None)


def test_auto_without_weights_is_scratch():
    cfg = load_config(None, ["train.weights=none"])
    scratch = flat(RECIPES["scratch"])
    assert cfg.train.recipe == "scratch"
    assert values(cfg.train, scratch) == scratch
    assert cfg.train.augment.hue == 0 and cfg.train.augment.shear == 0
    assert cfg.train.augment.rotate == 180.0  # keys the recipe does not name keep their defaults
    summary = recipe_summary(cfg)
    assert summary.startswith("scratch (weights none) -> small_cnn_32 @ 32 px, ")
    assert f"{scratch['epochs']} epochs" in summary and "why: " in summary
    assert "metadata as a residual on the image-only output with dropout 0.1 per field and 0.3 per row" in summary
    assert "EMA of the weights 0.99" in summary and "TTA flips" in summary and "last epoch's weights" in summary
    mine = recipe_summary(load_config(None, ["train.weights=none", "train.epochs=5", "train.metadata=false"]))
    assert "5 epochs" in mine and "image only" in mine  # what the user set, not the recipe's value


def test_explicit_keys_win_over_the_recipe(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  weights: none\n  epochs: 7\n  augment:\n    hue: 0.02\n")
    cfg = load_config(path, ["train.lr_min=1e-5"])
    assert cfg.train.recipe == "scratch"
    assert (cfg.train.epochs, cfg.train.augment.hue, cfg.train.optimizer.lr_min) == (7, 0.02, 1e-5)
    assert cfg.train.augment.saturation == 0  # still from the recipe
    assert cfg.train.optimizer.schedule == "cosine"
    assert is_explicit(cfg, "train.epochs") and not is_explicit(cfg, "train.schedule")
    assert is_explicit(cfg, "train.lr_min") and is_explicit(cfg, "train.optimizer.lr_min")  # either spelling


def test_a_named_model_keeps_the_default_size():
    # the recipe's 32 px belongs to its small network, not to a backbone the user chose
    cfg = load_config(None, ["train.weights=none", "train.model=efficientnet_b0"])
    assert (cfg.train.model, cfg.train.size) == ("efficientnet_b0", 256)
    assert cfg.train.optimizer.lr_max_per_image == RECIPES["scratch"]["optimizer"]["lr_max_per_image"]


def test_explicit_recipe_wins_over_auto():
    cfg = load_config(None, ["train.weights=none", "train.recipe=finetune"])
    assert values(cfg.train, FINETUNE) == FINETUNE
    assert "set in the config" in recipe_summary(cfg)
    cfg = load_config(None, ["train.recipe=scratch"])  # with imagenet weights
    assert cfg.train.model == "small_cnn_32" and cfg.train.weights == "imagenet"
    with pytest.raises(ConfigError, match="train.recipe: expected one of auto, finetune, scratch"):
        load_config(None, ["train.recipe=fast"])


def test_a_flag_rechooses_the_recipe():
    # how CLI flags reach the config: --weights none after a config without weights picks scratch
    cfg = apply_overrides(load_config(None, ["train.epochs=2"]), {"train.weights": "none"})
    assert cfg.train.recipe == "scratch"
    assert cfg.train.epochs == 2 and cfg.train.model == "small_cnn_32"
    back = apply_overrides(cfg, {"train.weights": "imagenet"})
    assert values(back.train, [k for k in FINETUNE if k != "epochs"]) == {k: v for k, v in FINETUNE.items()
                                                                           if k != "epochs"}


def test_the_resolved_config_reloads_to_the_same(tmp_path):
    cfg = load_config(None, ["train.weights=none", "train.epochs=3"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert "recipe: scratch" in path.read_text()


def test_a_config_made_in_code_counts_every_value_as_set():
    cfg = apply_overrides(Config(), {"train.weights": "none"})
    assert cfg.train.model == "efficientnet_b0" and cfg.train.epochs == 12
    assert "every value as given in code" in recipe_summary(cfg)


def test_the_demo_uses_the_scratch_recipe():
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert cfg.train.recipe == "scratch" and cfg.train.model == "small_cnn_32" and cfg.train.epochs == 60


@pytest.mark.slow
def test_scratch_recipe_learns_on_the_demo_images(tmp_path):
    """One fold of the demo with the default recipe for weights none: the network learns (issue 18: the
    fine-tuning recipe gave constant predictions, AUC 0.5, best epoch 1)."""
    import json
    import subprocess
    import sys

    import pandas as pd

    cmd = [sys.executable, "-m", "melanoma", "-q", "run", "--config", str(ROOT / "configs" / "demo.yaml"),
           "--set", "stages=[folds,prepare,train]", "--set", f"paths.runs={tmp_path / 'runs'}",
           "--set", f"paths.tfrecords={tmp_path / 'rec'}", "--set", f"paths.data={ROOT / 'data' / 'demo'}",
           "--set", f"paths.test_labels={ROOT / 'data' / 'demo' / 'test_labels.csv'}",
           "--set", "prepare.size=32", "--set", "train.folds=[0]", "--set", "train.verbose=0",
           "--set", "train.tensorboard=false"]
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=600)
    run = tmp_path / "runs" / "image"
    assert "recipe: scratch" in (run / "config.yaml").read_text()
    fold = json.loads((run / "metrics.json").read_text())["folds"]["0"]
    history = pd.read_csv(run / "fold0" / "history.csv")
    assert fold["oof_auc"] >= 0.65, fold
    assert int(history["val_auc"].idxmax()) > 0  # the best epoch is not the first


def test_doctor_names_the_recipe():
    from melanoma.kaggle.doctor import doctor, format_report

    report = doctor(load_config(ROOT / "configs" / "demo.yaml"), devices=False)
    assert report["recipe"].startswith("scratch (weights none")
    assert "recipe     scratch" in format_report(report)
