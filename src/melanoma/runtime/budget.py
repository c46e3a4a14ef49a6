"""`train.checkpoints.time_budget`: stop between epochs before a session's time runs out, so the next session resumes.

A Kaggle session ends after 9 hours, killing whatever runs. With a budget, training starts an epoch only when
its projected end, plus the fold's predictions, falls inside it; otherwise it stops cleanly: the fold's epoch
backup (BackupAndRestore) is kept and the fold is not marked done, so the same command (or the next chained
notebook session) continues it. Every fold still trains all its epochs, only across sessions.

Projections come from measured epoch times: this process's epochs; before the first one, the slowest epoch in
the run folder's history.csv files from earlier sessions, times 1.5 (those ran compiled; this one compiles
first); with nothing measured at all, the first epoch starts if any time is left (nothing better is known). A fold's predictions (TTA over
its validation and the test images) are estimated from the epoch time and the image counts until one fold has
been predicted in this process. `clock` and `session_start` are module functions so tests can replace them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import keras

from melanoma.errors import ConfigError
from melanoma.runtime.hosts import agree

log = logging.getLogger("melanoma.image.train")

KAGGLE_SESSION_HOURS = 9.0
KAGGLE_SAFETY_HOURS = 0.25  # the notebook's own cells, saving /kaggle/working, a slow epoch
STAGE_HOURS = 0.25  # what runs after train in `melanoma run` (tabular, blend, report)
SESSION_START_ENV = "MELANOMA_SESSION_START"  # unix time the session began (the notebook's first cell sets it)
COMPILE_FACTOR = 1.5  # a new process compiles before its first epoch
_IMPORTED = time.time()


def clock() -> float:
    return time.time()


def process_start() -> float:
    """When this process started (Linux: /proc), else when this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def session_start(environ: Mapping[str, str] | None = None) -> float:
    environ = os.environ if environ is None else environ
    value = environ.get(SESSION_START_ENV)
    if value:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{SESSION_START_ENV}={value!r}: expected a unix time in seconds") from None
    return process_start()


def resolve_hours(setting: float | str | None, place: str, stages: list[str]) -> float | None:
    """The budget in hours (None: no budget). auto: on Kaggle the session's 9 h less a safety margin and the
    time of the stages after train; elsewhere none."""
    if setting == "auto":
        if place != "kaggle":
            return None
        later = any(s in stages for s in ("tabular", "blend", "report"))
        return KAGGLE_SESSION_HOURS - KAGGLE_SAFETY_HOURS - (STAGE_HOURS if later else 0.0)
    if setting in (None, "none") or float(setting) == 0:
        return None
    return float(setting)


@dataclass
class Budget:
    """The deadline of one `train` call and what it has measured."""

    hours: float | None
    start: float
    epochs: list[float] = field(default_factory=list)  # seconds of each epoch trained in this process
    predictions: list[float] = field(default_factory=list)  # seconds of each fold's predictions

    @classmethod
    def for_session(cls, hours: float | None) -> Budget:
        return cls(hours, session_start())

    @staticmethod
    def now() -> float:
        return clock()

    @property
    def deadline(self) -> float | None:
        return None if self.hours is None else self.start + self.hours * 3600

    def used_hours(self) -> float:
        return (clock() - self.start) / 3600

    def epoch_estimate(self, earlier: list[float]) -> float | None:
        """Seconds the next epoch may take: the slowest this process has seen, else the slowest of an earlier
        session (`earlier`) with the compilation margin, else None (unknown)."""
        if self.epochs:
            return max(self.epochs)
        return max(earlier) * COMPILE_FACTOR if earlier else None

    def predict_estimate(self, epoch: float, predicted_images: int, epoch_images: int) -> float:
        """Seconds of a fold's predictions: measured, else the epoch time scaled by images (a training image
        costs about three forward passes)."""
        if self.predictions:
            return max(self.predictions)
        return epoch * predicted_images / max(1, 3 * epoch_images)

    def allows(self, seconds: float | None) -> bool:
        """Whether work of this many seconds, started now, ends inside the budget (unknown work: if any is left)."""
        if self.deadline is None:
            return True
        # Every host must take the same decision (their steps are collectives): process 0's clock decides.
        return bool(agree(int(clock() + (seconds or 0.0) <= self.deadline)))


class BudgetStop(keras.callbacks.Callback):
    """Stops `fit` after an epoch (its backup written: listed after BackupAndRestore) when the next epoch and the
    fold's predictions would not end inside the budget. `stopped_after` is that epoch, else None."""

    def __init__(self, budget: Budget, epochs: int, seconds_of, predict_seconds):
        super().__init__()
        self.budget, self.epochs = budget, epochs
        self.seconds_of = seconds_of  # epoch -> its measured seconds (FoldLog)
        self.predict_seconds = predict_seconds  # epoch estimate -> prediction estimate
        self.stopped_after: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.seconds_of(epoch)
        if seconds is not None:
            self.budget.epochs.append(seconds)
        if epoch + 1 >= self.epochs:
            return
        estimate = self.budget.epoch_estimate([]) or 0.0
        if not self.budget.allows(estimate + self.predict_seconds(estimate)):
            self.stopped_after = epoch
            self.model.stop_training = True
