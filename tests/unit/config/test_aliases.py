"""Issue 25: train's settings in sections, and every flat key of before still accepted through one table
(config/train.py MOVED): in a config file, --set, a variant, --vary, is_explicit, the generated flags, and an old
run folder's config.yaml."""

import dataclasses
import json
import logging

import pytest
import yaml

from melanoma import cli
from melanoma.config import Config, TrainConfig, apply_overrides, dump_config, is_explicit, load_config
from melanoma.config import aliases
from melanoma.config.aliases import OLD, flat_train, new_key
from melanoma.config.flags import Parser, config_field, config_flags, config_values, flag_name
from melanoma.config.train import MOVED
from melanoma.config.variants import variant_configs
from melanoma.errors import ConfigError

from helpers.paths import DATA, ROOT

OLD_RUN = DATA / "run_before_issue25"

# A valid value other than the default for every old key: set through the old key, it must land in the new one.
OTHER = {
    "lr_start": 2e-6, "lr_max_per_image": 2e-6, "lr_min": 3e-7, "warmup_epochs": 1.0, "sustain_epochs": 2.0,
    "decay": 0.5, "schedule": "cosine", "weight_decay": 0.0, "loss": "focal", "focal_gamma": 1.0,
    "focal_alpha": 0.25, "label_smoothing": 0.1, "oversample": 2.0, "positive_share": 0.3,
    "class_weight": "sqrt", "metadata": True, "meta_dropout": 0.2, "meta_row_dropout": 0.1,
    "meta_fusion": "residual", "backend": "jax", "tpu": "none", "cpu_replicas": 2, "allow_cpu_fallback": True,
    "hosts": 1, "precision": "float32", "steps_per_execution": 4, "jit_compile": False, "ema": 0.9,
    "checkpoint": "last", "resume": False, "time_budget": 2.5, "tensorboard": False, "external": ["ext"],
    "external_share": 0.1, "pseudo": "pseudo_dir", "pseudo_share": 0.2, "synthetic": "synth_dir",
    "synthetic_share": 0.1,
}


def leaf(key: str) -> str:
    return key.split(".", 1)[1]


def get(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@pytest.fixture
def fresh_log(monkeypatch):
    """Each old key is said once per process: start from none said."""
    monkeypatch.setattr(aliases, "_told", set())


def test_the_table_covers_every_old_key_with_a_value():
    assert set(OTHER) == {leaf(k) for k in MOVED}
    assert len(set(MOVED.values())) == len(MOVED)  # no two old keys land in one setting


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_every_old_key_maps_to_a_setting_and_keeps_its_flag(old, new):
    section, name = leaf(new).split(".")
    fields = dataclasses.fields(type(getattr(TrainConfig(), section)))
    helps = [f.metadata["help"] for f in fields if f.name == name]
    assert len(helps) == 1 and helps[0]  # a setting of the section, with its help
    assert leaf(old) not in TrainConfig.__dataclass_fields__  # no setting of train keeps the old name
    value, default = OTHER[leaf(old)], get(Config(), new)
    assert get(load_config(None, [f"{old}={json.dumps(value)}"]), new) == value != default
    if leaf(old) in ("hosts", "time_budget"):
        return  # a union of several types has no flag form (then or now)
    assert config_field(old).key == config_field(new).key == new  # the old spelling finds it too
    assert flag_name(config_field(new)).removeprefix("--").removeprefix("no-") == leaf(old).replace("_", "-")


def test_a_file_with_the_old_keys_builds_the_config_of_the_new(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump({"train": {leaf(k): OTHER[leaf(k)] for k in MOVED}}))
    nested: dict = {}
    for k, n in MOVED.items():
        section, name = leaf(n).split(".")
        nested.setdefault(section, {})[name] = OTHER[leaf(k)]
    new.write_text(yaml.safe_dump({"train": nested}))
    a, b = load_config(old), load_config(new)
    assert a == b and a._raw == b._raw and a._recipe_why == b._recipe_why
    assert all(get(a, n) == OTHER[leaf(k)] for k, n in MOVED.items())
    # the resolved config is written in the new layout and reads back the same
    written = yaml.safe_load(dump_config(a))["train"]
    assert "ema" not in written and written["checkpoints"]["ema"] == 0.9 and written["meta"]["enabled"] is True
    assert load_config(None, []) != a


def test_an_old_key_is_said_once_at_info(tmp_path, caplog, fresh_log):
    caplog.set_level(logging.INFO, logger="melanoma.config")
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  ema: 0.5\n")
    assert load_config(path).train.checkpoints.ema == 0.5
    load_config(path)
    load_config(None, ["train.ema=0.6"])
    said = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
    assert said == ["train.ema is now train.checkpoints.ema (the old key still works)"]
    caplog.clear()
    load_config(None, ["train.checkpoints.ema=0.5", "train.optimizer.lr_min=0"])  # new keys: nothing to say
    assert not [r for r in caplog.records if "is now" in r.getMessage()]


@pytest.mark.parametrize("text, words", [
    ("train:\n  ema: 0.5\n  checkpoints:\n    ema: 0.9\n", "train.ema and train.checkpoints.ema are one setting"),
    ("train:\n  metadata: true\n  meta: {enabled: false}\n", "train.metadata and train.meta.enabled"),
    ("variants:\n  - {name: a, train: {backend: jax, devices: {backend: jax}}}\n",
     "variants[0].train.backend and variants[0].train.devices.backend"),
    ("train:\n  ema: 0.5\n  checkpoints: 3\n", "train.checkpoints: expected a mapping"),
])
def test_the_old_and_the_new_key_together_are_an_error(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")) as e:
        load_config(path)
    assert "\n" not in str(e.value)


def test_the_old_and_the_new_key_in_two_sets_are_an_error():
    with pytest.raises(ConfigError, match="--set train.ema and --set train.checkpoints.ema are one setting"):
        load_config(None, ["train.ema=0.5", "train.checkpoints.ema=0.9"])


def test_a_set_of_either_spelling_wins_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  checkpoints: {ema: 0.9}\n  lr_min: 1.0e-7\n")
    assert load_config(path, ["train.ema=0.5"]).train.checkpoints.ema == 0.5
    cfg = load_config(path, ["train.optimizer.lr_min=2e-7"])
    assert cfg.train.optimizer.lr_min == 2e-7 and cfg.train.checkpoints.ema == 0.9
    # a value that is itself a mapping with old keys is moved too
    assert load_config(None, ["train={ema: 0.3}"]).train.checkpoints.ema == 0.3


def test_set_and_the_generated_flag_land_in_the_nested_field():
    assert load_config(None, ["train.ema=0.5"]).train.checkpoints.ema == 0.5
    # a command's flags keep their names; their values go to the new keys
    args = cli.build_parser().parse_args(["train", "--metadata", "--backend", "jax", "--restart", "--loss", "focal"])
    values = config_values(args)
    assert values == {"train.meta.enabled": True, "train.devices.backend": "jax", "train.checkpoints.resume": False,
                      "train.imbalance.loss": "focal"}
    cfg = apply_overrides(load_config(None, []), values)
    assert (cfg.train.meta.enabled, cfg.train.devices.backend, cfg.train.checkpoints.resume) == (True, "jax", False)
    # a flag declared with the old key is the flag it was, and sets the new key
    p = Parser(prog="melanoma x")
    config_flags(p, "train.ema", "train.checkpoint", renames={"train.checkpoint": "--keep-weights"})
    values = config_values(p.parse_args(["--ema", "0.5", "--keep-weights", "last"]))
    assert values == {"train.checkpoints.ema": 0.5, "train.checkpoints.keep": "last"}
    cfg = apply_overrides(load_config(None, []), values)
    assert (cfg.train.checkpoints.ema, cfg.train.checkpoints.keep) == (0.5, "last")
    assert "[train.checkpoints.ema]" in p.format_help()


def test_is_explicit_and_the_recipe_see_either_spelling():
    cfg = load_config(None, ["train.weights=none", "train.ema=0", "train.optimizer.schedule=exponential"])
    assert cfg.train.recipe == "scratch"
    assert cfg.train.checkpoints.ema == 0 and cfg.train.optimizer.schedule == "exponential"  # set: not the recipe's
    assert cfg.train.checkpoints.keep == "last"  # not set: the recipe's
    for key in ("train.ema", "train.checkpoints.ema", "train.schedule", "train.optimizer.schedule"):
        assert is_explicit(cfg, key), key
    assert not is_explicit(cfg, "train.checkpoint") and not is_explicit(cfg, "train.checkpoints.keep")
    assert apply_overrides(cfg, {"train.ema": 0.7}).train.checkpoints.ema == 0.7  # code passing an old key


def test_variants_take_old_keys():
    cfg = load_config(None, ["variants=[{name: a, train: {ema: 0.5, backend: jax}}, {name: b, train: {epochs: 2}}]"])
    (_, a), (_, b) = variant_configs(cfg)
    assert (a.train.checkpoints.ema, a.train.devices.backend, a.train.epochs) == (0.5, "jax", 12)
    assert (b.train.checkpoints.ema, b.train.devices.backend, b.train.epochs) == (0.0, "auto", 2)


def test_vary_takes_an_old_key():
    from melanoma.ablate import grid, parse_vary

    varies = parse_vary(["train.ema=0,0.5"])
    assert varies == [("train.checkpoints.ema", [0, 0.5])]
    base, settings = grid(Config(), varies)
    assert base == (("train.checkpoints.ema", 0.0),) and settings == [base, (("train.checkpoints.ema", 0.5),)]
    with pytest.raises(ConfigError, match="given twice"):
        parse_vary(["train.ema=0,0.5", "train.checkpoints.ema=0.9"])


def test_an_old_run_folders_config_loads(caplog, fresh_log):
    """A config.yaml written before the sections (flat train keys): export and report read run folders' configs."""
    from melanoma.report.inputs import _yaml
    from melanoma.serve.export import run_config

    caplog.set_level(logging.INFO, logger="melanoma.config")
    cfg = run_config(OLD_RUN)
    t = cfg.train
    assert (t.checkpoints.ema, t.checkpoints.keep, t.devices.backend, t.sources.external) == (0.5, "best",
                                                                                              "tensorflow", ["ext"])
    assert (t.optimizer.lr_min, t.optimizer.schedule, t.meta.enabled, t.meta.fusion, t.imbalance.class_weight) == (
        2e-6, "cosine", True, "joint", "balanced")
    said = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
    assert len(said) == 1 and f"and {len(MOVED) - 3} more train keys are now in sections" in said[0]
    # the same run as the current spelling gives it
    sets = ["train.checkpoints.ema=0.5", "train.meta.fusion=joint", "train.devices.backend=tensorflow",
            "train.sources.external=[ext]", "train.checkpoints.keep=best", "train.optimizer.lr_min=2e-6",
            "train.epochs=3"]
    assert cfg == load_config(ROOT / "configs" / "demo.yaml", sets)
    # what it hashed then (its train section, flat) is what is hashed now: its folder still resumes
    written = yaml.safe_load((OLD_RUN / "config.yaml").read_text())["train"]
    assert flat_train(cfg.train) == written
    # the report reads it in the current layout
    assert _yaml(OLD_RUN / "config.yaml")["train"]["meta"] == {"enabled": True, "field_dropout": 0.1,
                                                                "row_dropout": 0.3, "fusion": "joint"}


def test_new_key_and_its_inverse():
    assert new_key("train.ema") == "train.checkpoints.ema"
    assert new_key("train.epochs") == "train.epochs" and new_key("nope.x") == "nope.x"
    assert all(OLD[new_key(old)] == old for old in MOVED)
