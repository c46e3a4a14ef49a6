"""train.time_budget: training stops between epochs before the session ends, `run` writes no submission from
unfinished folds, and the same command again finishes them. A fake clock stands in for hours of training."""

from __future__ import annotations

import pandas as pd
import pytest

from melanoma.cli import main
from melanoma.config import Config, apply_overrides
from melanoma.errors import ConfigError
from melanoma.runtime import budget
from melanoma.runtime.budget import Budget, resolve_hours
from melanoma.image.runfolder import FoldLog

HOUR = 3600.0


def test_auto_is_a_little_under_a_kaggle_session_and_none_elsewhere():
    assert resolve_hours("auto", "kaggle", ["folds", "train", "tabular", "blend"]) == pytest.approx(8.5)
    assert resolve_hours("auto", "kaggle", ["train"]) == pytest.approx(8.75)  # nothing after train to leave room for
    assert resolve_hours("auto", "local", ["train"]) is None and resolve_hours("auto", "colab", ["train"]) is None
    assert resolve_hours(0, "kaggle", []) is None and resolve_hours("none", "kaggle", []) is None
    assert resolve_hours(None, "kaggle", []) is None
    assert resolve_hours(2.5, "local", []) == 2.5


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("2.5", 2.5), ("0", 0.0), ("none", "none"), ("null", None)])
def test_the_setting_takes_auto_hours_or_none(value, expected):
    from melanoma.config import load_config

    assert load_config(None, [f"train.time_budget={value}"]).train.checkpoints.time_budget == expected


def test_a_bad_setting_is_refused():
    from melanoma.config import load_config

    with pytest.raises(ConfigError, match="train.checkpoints.time_budget"):
        load_config(None, ["train.time_budget=-1"])
    with pytest.raises(ConfigError, match="train.checkpoints.time_budget"):
        load_config(None, ["train.time_budget=soon"])


def test_projections(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    b = Budget(2.0, start=0.0)
    assert b.epoch_estimate([]) is None and b.allows(None)  # nothing measured: the first epoch may start
    assert b.epoch_estimate([100.0, 300.0]) == pytest.approx(450.0)  # an earlier session's, plus compiling
    b.epochs += [500.0, 900.0]
    assert b.epoch_estimate([100.0]) == 900.0  # this process's slowest epoch wins
    assert b.predict_estimate(900.0, predicted_images=600, epoch_images=100) == pytest.approx(1800.0)
    b.predictions.append(60.0)
    assert b.predict_estimate(900.0, 600, 100) == 60.0  # measured beats estimated
    now[0] = 2 * HOUR - 100
    assert b.allows(100) and not b.allows(101)
    now[0] = 2 * HOUR + 1
    assert not b.allows(None)  # no time left: nothing starts
    assert Budget(None, 0.0).allows(10 * HOUR)


def test_session_start_comes_from_the_notebook_when_it_says(monkeypatch):
    assert budget.session_start({"MELANOMA_SESSION_START": "1700000000.5"}) == 1700000000.5
    assert budget.session_start({}) <= budget.clock()
    with pytest.raises(ConfigError, match="MELANOMA_SESSION_START"):
        budget.session_start({"MELANOMA_SESSION_START": "yesterday"})


class FakeHours:
    """Every epoch takes exactly one hour; everything else takes no time."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(budget, "clock", lambda: self.now)
        monkeypatch.setattr(budget, "session_start", lambda environ=None: self.now)  # a new session starts now
        original = FoldLog.on_epoch_begin

        def epoch_begin(log, epoch, logs=None):
            original(log, epoch, logs)
            self.now += HOUR

        monkeypatch.setattr(FoldLog, "on_epoch_begin", epoch_begin)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow  # two `melanoma run` calls that train: about a minute on 2 cores
def test_a_budget_stop_then_the_same_command_finishes_every_fold(demo_subset, tmp_path, capsys, monkeypatch):
    """3.5 hours of 1-hour epochs, 2 folds of 2 epochs: fold 0 and one epoch of fold 1 fit, then training stops
    (the next epoch would end after the budget), `run` exits 0 without tabular, blend or a submission. Run again:
    fold 1 resumes at its second epoch, and the submission is written."""
    FakeHours(monkeypatch)
    out = tmp_path / "out"
    config = tmp_path / "tiny.yaml"
    # tta_flips off: the projection of a fold's predictions grows with the views (the scratch recipe has 4), and
    # this arithmetic counts one view
    config.write_text(f"""
n_folds: 2
paths: {{data: {demo_subset}, tfrecords: {out}/tf, runs: {out}/runs, submission: {out}/sub/submission.csv}}
prepare: {{size: 32}}
train: {{model: simple_cnn, size: 32, epochs: 2, batch_size: 8, weights: none, verbose: 0, tensorboard: false,
         time_budget: 3.5, tta_flips: false}}
tabular: {{model: logreg}}
stages: [folds, prepare, train, tabular, blend]
""")
    code, stdout, err = run_cli(capsys, "run", "--config", config)
    assert code == 0, err
    image = out / "runs" / "image"
    assert (image / "fold0" / "done.json").is_file() and not (image / "fold1" / "done.json").exists()
    assert (image / "fold1" / "backup").is_dir()  # its resume state
    assert list(pd.read_csv(image / "fold1" / "history.csv").epoch) == [0]
    assert not (out / "sub" / "submission.csv").exists() and not (out / "runs" / "tabular").exists()
    assert "fold 1 (1 of 2 epochs done)" in err and "stopped after epoch 1 of 2" in err
    assert "not finished" in stdout and "no submission was written" in stdout

    code, stdout, err = run_cli(capsys, "run", "--config", config)
    assert code == 0, err
    assert "fold 0: finished in an earlier run" in err
    for k in (0, 1):
        assert (image / f"fold{k}" / "done.json").is_file()
        assert list(pd.read_csv(image / f"fold{k}" / "history.csv").epoch) == [0, 1]  # every fold, every epoch
    submission = pd.read_csv(out / "sub" / "submission.csv")
    assert list(submission.image_name) == list(pd.read_csv(demo_subset / "test.csv").image_name)
    assert "not finished" not in stdout


def test_partial_blend_is_a_blend_setting():
    cfg = apply_overrides(Config(), {"blend.partial": True})
    assert cfg.blend.partial is True and Config().blend.partial is False
