"""CLI flags generated from the config dataclasses: every flag is a real key, its form comes from the field."""

import argparse
import dataclasses
import typing

import pytest

from melanoma import cli
from melanoma.config.flags import (KEYS_ATTR, Parser, config_field, config_flags, config_values, _type_hints,
                               flag_name)
from melanoma.config import Config


def commands(parser: argparse.ArgumentParser, name: str = ""):
    """(command words, parser) of every command and nested command (`kaggle push`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                yield f"{name} {word}".strip(), sub
                yield from commands(sub, f"{name} {word}".strip())


def generated(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """config key -> the argparse action of each generated flag of one command."""
    keys = p.get_default(KEYS_ATTR) or {}
    by_dest = {a.dest: a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS}
    return {key: by_dest[dest] for dest, key in keys.items()}


ALL = list(commands(cli.build_parser()))


def test_every_generated_flag_is_a_config_key_with_a_comment_and_sets_it():
    n = 0
    for name, p in ALL:
        for key, action in generated(p).items():
            f = config_field(key)  # raises for a key that does not exist
            assert f.help, f"{name} {action.option_strings[0]}: {key} has no comment in config.py"
            assert f"[{key}]" in action.help
            n += 1
    assert n > 60  # the stage, serve and kaggle commands all expose keys this way
    with pytest.raises(KeyError):
        config_field("train.epoch")
    with pytest.raises(KeyError):
        config_field("train.augment")  # a section, not a setting


@pytest.mark.parametrize("name", ["", *(name for name, _ in ALL)])
def test_help_of_every_command(name, capsys):
    assert cli.main([*name.split(), "--help"]) == 0
    assert "usage: melanoma" in capsys.readouterr().out


def test_literal_fields_give_argparse_choices():
    seen = 0
    for _, p in ALL:
        for key, action in generated(p).items():
            f = config_field(key)
            if typing.get_origin(f.type) is typing.Literal:
                assert tuple(action.choices) == typing.get_args(f.type), key
                seen += 1
    assert seen >= 10
    train = dict(ALL)["train"]
    assert generated(train)["train.imbalance.class_weight"].choices == ("none", "balanced", "sqrt")
    assert generated(train)["train.devices.backend"].choices == ("auto", "tensorflow", "jax")


def test_flag_values_reach_the_config_through_one_function():
    args = cli.build_parser().parse_args(
        ["train", "--fold-ids", "0,2", "--restart", "--tta-flips", "--class-weight", "sqrt", "--epochs", "3",
         "--tfrecords", "gs://bucket/tf", "--out", "run"])
    values = config_values(args)
    assert values == {"train.folds": [0, 2], "train.checkpoints.resume": False, "train.tta_flips": True,
                      "train.imbalance.class_weight": "sqrt", "train.epochs": 3, "paths.tfrecords": "gs://bucket/tf"}
    from melanoma.config import apply_overrides

    cfg = apply_overrides(Config(), values)
    assert cfg.train.folds == [0, 2] and cfg.train.checkpoints.resume is False
    assert cfg.paths.tfrecords == "gs://bucket/tf"
    # flags not given set nothing: the config file and --set decide
    assert config_values(cli.build_parser().parse_args(["train"])) == {}


def test_bool_forms_and_lists():
    p = Parser(prog="melanoma x")
    config_flags(p, "report.gradcam", "train.metadata", "export.tta_flips", "prepare.external",
                 "tabular.auto_models", "n_folds")
    names = {o for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
    # on by default -> --no-x; off by default -> --x; None (decide for me) -> both
    assert {"--no-gradcam", "--metadata", "--tta-flips", "--no-tta-flips"} <= names
    values = config_values(p.parse_args(["--no-gradcam", "--no-tta-flips", "--external", "a,b", "--external", "c",
                                         "--auto-models", "lgbm,logreg"]))
    assert values == {"report.gradcam": False, "export.tta_flips": False, "prepare.external": ["a,b", "c"],
                      "tabular.auto_models": ["lgbm", "logreg"]}  # a folder name is never split


def test_old_folds_spelling_still_parses_as_a_list(capsys):
    args = cli.build_parser().parse_args(["train", "--folds", "1,3"])
    assert args.fold_ids == [1, 3] and "use --fold-ids" in capsys.readouterr().err


@pytest.mark.parametrize("argv,words", [
    (["train", "--class-weight", "heavy"], ["--class-weight", "invalid choice"]),
    (["train", "--fold-ids", "0,x"], ["--fold-ids", "comma-separated int", "0,x"]),
    (["tabular", "--auto-models", "lgbm"], ["unrecognized arguments"]),  # a key tabular does not expose
    (["train", "--epochs", "0"], ["train.epochs", ">= 1"]),  # range checked by the config
])
def test_bad_flag_values_are_one_line_errors(argv, words, capsys):
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("melanoma: error:")]
    assert len(err) == 1
    for word in words:
        assert word in err[0]


def test_help_comes_from_each_fields_metadata():
    assert config_field("train.loss").help == "bce | focal (keras BinaryFocalCrossentropy)"
    assert config_field("tabular.model").help.startswith("auto | mlp_smote | logreg")  # a long help, wrapped
    assert "every model" in config_field("tabular.model").help
    assert config_field("report.sensitivities").help.startswith("operating points")
    # every setting of every section has its help, so every generated flag explains itself
    def keys(cls, prefix):
        for f in dataclasses.fields(cls):
            tp = _type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                yield from keys(tp, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", f.metadata.get("help", "")
    missing = [k for k, help_ in keys(Config, "") if not help_]
    assert not missing, f"settings without help: {missing}"


def test_flag_names_follow_the_field_names():
    assert flag_name(config_field("train.batch_size")) == "--batch-size"
    assert flag_name(config_field("report.gradcam")) == "--no-gradcam"
    assert flag_name(config_field("train.folds")) == "--fold-ids"
    # the %-sign of a comment does not break argparse's help formatting
    p = Parser(prog="melanoma x")
    config_flags(p, "tabular.gbm_early_stopping")
    assert "10%" in p.format_help()


# Every flag the commands had before they were generated from the config (each must keep its name).
FLAGS_BEFORE = {
    "folds": "--data --folds --n-folds --out --seed --tfrecords",
    "prepare": "--data --drop-duplicates --duplicates --external --folds --folds-file --n-folds --on-bad-image --out "
               "--quality --resize --seed --size --upsample-malignant --workers",
    "check": "--data --duplicates --max-distance --out --workers",
    "train": "--backend --batch-size --class-weight --epochs --fold-ids --folds --loss --metadata --model --out "
             "--oversample --positive-share --precision --restart --seed --size --tfrecords --tta --tta-flips --weights",
    "tabular": "--data --folds --folds-file --model --out --seed --tfrecords",
    "blend": "--method --out --power --runs --sample-submission --step --tabular-weight",
    "kaggle push": "--accelerator --chain --dry-run --kernels --out",
    "submit": "--message --sample-submission --wait",
    "augment-preview": "--copies --n --out --seed --size --tfrecords",
    "report": "--bootstrap --data --no-gradcam --out --seed --test-labels --tfrecords",
    "compare": "--bootstrap --data --out --seed",
    "export": "--backend --combine --fold-ids --folds --out --report --tfrecords",
    "predict": "--backend --batch-size --image-dir --images --model --out --workers",
    "serve": "--backend --host --model --port --threshold",
}


def test_every_earlier_flag_name_still_exists():
    parsers = dict(ALL)
    for name, flags in FLAGS_BEFORE.items():
        known = {o for a in parsers[name]._actions for o in a.option_strings}
        assert not set(flags.split()) - known, name
