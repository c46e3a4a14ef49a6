import pytest
import yaml

from melanoma.config import Config, apply_overrides, dump_config, load_config, save_run_info
from melanoma.errors import ConfigError
from helpers.paths import ROOT


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\ntrain:\n  epochs: 3\n  augment:\n    rotate: 15\n")
    cfg = load_config(path, ["train.model=efficientnet_b3", "train.folds=0,2", "train.lr_min=1e-7"])
    assert cfg.seed == 7 and cfg.train.epochs == 3 and cfg.train.augment.rotate == 15.0
    assert cfg.train.model == "efficientnet_b3" and cfg.train.folds == [0, 2]
    assert cfg.train.optimizer.lr_min == pytest.approx(1e-7)
    assert cfg.tabular == Config().tabular  # untouched sections keep their defaults


@pytest.mark.parametrize("text, message", [
    ("trian:\n  epochs: 3\n", "unknown config key trian"),
    ("train:\n  epoch: 3\n", "unknown config key train.epoch"),
    ("train:\n  epochs: three\n", "train.epochs: expected int"),
    ("seed: 1.5\n", "seed: expected int"),
    ("train:\n  augment:\n    flip: 3\n", "train.augment.flip: expected bool"),
])
def test_bad_keys_and_types_are_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="unknown config key train.nope"):
        apply_overrides(Config(), {"train.nope": 1})


def test_resolved_config_round_trips_and_run_info(tmp_path):
    cfg = apply_overrides(Config(), {"train.epochs": 2, "seed": 5})
    save_run_info(tmp_path, cfg, "unit")
    assert load_config(tmp_path / "config.yaml") == cfg
    info = yaml.safe_load((tmp_path / "run.json").read_text())
    assert info["seed"] == 5 and info["version"] and info["stage"] == "unit"
    assert yaml.safe_load(dump_config(cfg))["train"]["epochs"] == 2


def test_shipped_configs_load():

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        load_config(path)
