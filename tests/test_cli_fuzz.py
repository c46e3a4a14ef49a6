"""Issue 26: a fuzz test of the whole CLI. For every command (enumerated from the parser), random combinations of
its flags with random and edge values (paths that exist or not, inputs given as outputs, numbers out of range,
junk strings) must end in exit 0 or in exit 2 with one `melanoma: error:` line, never a traceback, and leave every
file that existed before byte-identical.

The stages themselves are replaced by a stub that raises Reached: reaching one means the flags, the config and
the outputs were all accepted (exit 0 for this test). `--force` is never given, so nothing that existed may
change. The fast suite runs a few deterministic examples per command; `-m slow` runs many more.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melanoma.cli import build_parser, main
from melanoma.config.flags import ListFlag

sys.path.insert(0, str(Path(__file__).parent))
from test_outputs import ALL, write_run  # noqa: E402
from conftest import textured_layout  # noqa: E402


class Reached(Exception):
    """A stage was called: everything before it accepted the command."""


def _stub(*args, **kwargs):
    raise Reached()


# Stage functions the fuzz reaches (module, attribute); the modules that import Keras or TensorFlow at the top are
# replaced whole (FAKE_MODULES).
FAKE_MODULES = {"melanoma.image.train": {"train": _stub}, "melanoma.image.preview": {"augment_preview": _stub},
                "melanoma.synth.stage": {"synth": _stub}, "melanoma.image.models": {"MODELS": ["simple_cnn"]},
                # and the ones whose imports (LightGBM, scipy.stats, FastAPI) take seconds
                "melanoma.tabular": {"run_tabular": _stub}, "melanoma.serve.app": {"serve": _stub},
                "melanoma.report": {"report": _stub, "compare": _stub, "format_compare": str}}
STUBS = [("melanoma.data.prepare", "prepare"), ("melanoma.data.check", "run_check"),
         ("melanoma.run", "run_pipeline"), ("melanoma.serve.export", "export"),
         ("melanoma.serve.predict", "run_predict"), ("melanoma.segment.train", "train_segmenter"),
         ("melanoma.segment.masks", "write_masks"), ("melanoma.pseudo.labels", "write_pseudo"),
         ("melanoma.ablate", "run_grid"), ("melanoma.kaggle.wheels", "build_wheels"),
         ("melanoma.kaggle.doctor", "list_devices")]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A tiny data folder, run folders, a fake export, images and configs; stages stubbed; no credentials."""
    import importlib

    w = tmp_path
    data = textured_layout(w / "data", n_train=8, n_test=2, n_patients=4)
    pd.read_csv(data / "train.csv").assign(fold=lambda t: t.index % 2)[
        ["image_name", "patient_id", "target", "fold"]].to_csv(data / "folds.csv", index=False)
    write_run(w / "run_a")
    write_run(w / "run_b", "tabular")
    (w / "model").mkdir()
    (w / "model" / "model.json").write_text('{"format_version": 1}')
    (w / "good.yaml").write_text("n_folds: 2\ntrain: {epochs: 1}\n")
    (w / "dup.yaml").write_text("n_folds: 2\nn_folds: 3\n")
    (w / "latin.yaml").write_bytes(b"seed: 1 # \xe9\n")
    (w / "list.yaml").write_text("- a\n- b\n")
    (w / "scratch").mkdir()
    for name, attrs in FAKE_MODULES.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    for module, attr in STUBS:
        monkeypatch.setattr(importlib.import_module(module), attr, _stub)
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    # use_backend writes these into os.environ: put them back after the test
    for var in ("KERAS_BACKEND", "MELANOMA_BACKEND_REASON", "XLA_FLAGS"):
        if var in __import__("os").environ:
            monkeypatch.setenv(var, __import__("os").environ[var])
        else:
            monkeypatch.setenv(var, "")
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(w / "home"))
    monkeypatch.chdir(w / "scratch")
    return w, snapshot(w)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- values

JUNK = st.sampled_from(["", " ", "-", "--", "x", "..", "/", "-1", "nan", "inf", "1e309", "[1,2", "{a", "a\x00b",
                        "é", "a/b", "../x", "0,1,,2", "x" * 300])
NUMBERS = st.one_of(st.sampled_from(["0", "1", "2", "-1", "3", "0.5", "1e9", "-0", "32", "100000000000"]),
                    st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str))
SET_KEYS = ["n_folds", "seed", "train.epochs", "train.size", "train.model", "train.backend", "paths.data",
            "paths.runs", "paths.tfrecords", "paths.submission", "report.out", "kaggle.slug", "kaggle.username",
            "blend.method", "prepare.size", "variants", "stages", "nokey", "train.augment.zoom", "synth.out"]


def paths(w: Path):
    """Paths that exist (inputs, some of them files the command reads), do not, or make no sense."""
    named = ["data", "data/train.csv", "data/test.csv", "data/sample_submission.csv", "data/folds.csv",
             "data/jpeg/train", "run_a", "run_a/oof.csv", "run_b", "run_b/test_pred.csv", "model",
             "model/model.json", "good.yaml", "scratch/new", "scratch/new.csv", "scratch/new/sub.csv",
             "nowhere/at/all", "scratch"]
    return st.one_of(st.sampled_from([str(w / n) for n in named]), JUNK)


def values(action: argparse.Action, w: Path):
    if action.dest == "overrides":
        return st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS), st.one_of(NUMBERS, paths(w), JUNK))
    if action.dest == "config":
        return st.one_of(st.sampled_from([str(w / n) for n in ("good.yaml", "dup.yaml", "latin.yaml", "list.yaml",
                                                               "none.yaml", "data")]), JUNK)
    if isinstance(action, ListFlag):
        items = st.sampled_from([str(c) for c in action.item_choices]) if action.item_choices else NUMBERS
        return st.one_of(st.lists(items, min_size=1, max_size=3).map(",".join), JUNK)
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), JUNK)
    if action.type in (int, float) or action.dest in ("n", "copies", "seeds", "wait"):
        return st.one_of(NUMBERS, JUNK)
    if action.dest == "vary":
        return st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS), st.one_of(NUMBERS, JUNK))
    return paths(w)


def argv_for(name: str, parser: argparse.ArgumentParser, w: Path, data) -> list[str]:
    """The command words, its positionals, its required flags, and a random few of its other flags."""
    argv = name.split()
    optional, required = [], []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction) or "--force" in a.option_strings or a.help == argparse.SUPPRESS:
            continue
        if not a.option_strings:  # positional
            n = {None: 1, "?": data.draw(st.integers(0, 1)), "*": data.draw(st.integers(0, 2)), "+": 1}.get(a.nargs, 1)
            argv += [data.draw(paths(w)) for _ in range(n)]
        else:
            (required if a.required else optional).append(a)
    chosen = required + data.draw(st.lists(st.sampled_from(optional), unique_by=id, max_size=4)) if optional \
        else required
    for a in chosen:
        flag = data.draw(st.sampled_from(a.option_strings))
        if a.nargs == 0:
            argv.append(flag)
        elif a.nargs in ("+", "*"):
            argv += [flag, *data.draw(st.lists(values(a, w), min_size=1, max_size=2))]
        else:
            argv += [flag, data.draw(values(a, w))]
    return argv


def fuzz_one(name: str, world, capsys, data) -> None:
    w, before = world
    argv = argv_for(name, ALL[name], w, data)
    capsys.readouterr()
    try:
        code = main(argv)
    except Reached:
        code = 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("melanoma: error:")]
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], (argv, err)
    else:
        assert not lines, (argv, err)
    after = snapshot(w)
    changed = [p for p, h in before.items() if after.get(p) != h]
    assert not changed, (argv, changed)


FAST = settings(max_examples=3, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=60, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(ALL))
@FAST
@given(data=st.data())
def test_cli_fuzz(name, world, capsys, data):
    fuzz_one(name, world, capsys, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALL))
@SLOW
@given(data=st.data())
def test_cli_fuzz_many(name, world, capsys, data):
    fuzz_one(name, world, capsys, data)


def test_parser_is_the_one_the_fuzz_enumerates():
    assert set(ALL) == set(__import__("test_outputs").commands(build_parser()))
