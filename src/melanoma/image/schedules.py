"""Learning-rate schedules (warmup, then exponential or cosine decay) and the loss, in keras.ops (any backend).

The schedule classes are registered as Keras serializables under the package "melanoma": their names are part
of saved optimizer state and must not change.
"""

from __future__ import annotations

import logging
import math

import keras

from melanoma.config import TrainConfig

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="melanoma")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from `start` to `peak`, optional sustain, then `peak` decays by `decay` per epoch to `minimum`.

    The public SIIM-ISIC TPU recipe, computed per step so it works with any steps_per_execution.
    """

    def __init__(self, start, peak, minimum, warmup_steps, sustain_steps, decay, steps_per_epoch):
        self.start, self.peak, self.minimum = float(start), float(peak), float(minimum)
        self.warmup_steps, self.sustain_steps = float(warmup_steps), float(sustain_steps)
        self.decay, self.steps_per_epoch = float(decay), float(max(1, steps_per_epoch))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1.0)
        epochs_decayed = (step - self.warmup_steps - self.sustain_steps) / self.steps_per_epoch
        decayed = (self.peak - self.minimum) * keras.ops.power(self.decay, epochs_decayed) + self.minimum
        after_warmup = keras.ops.where(step < self.warmup_steps + self.sustain_steps, self.peak, decayed)
        return keras.ops.where(step < self.warmup_steps, ramp, after_warmup)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "minimum": self.minimum, "warmup_steps": self.warmup_steps,
                "sustain_steps": self.sustain_steps, "decay": self.decay, "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="melanoma")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from `start` to `peak`, optional sustain, then a half cosine from `peak` to `minimum` at the
    last step."""

    def __init__(self, start, peak, minimum, warmup_steps, sustain_steps, total_steps):
        self.start, self.peak, self.minimum = float(start), float(peak), float(minimum)
        self.warmup_steps, self.sustain_steps = float(warmup_steps), float(sustain_steps)
        self.total_steps = float(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1.0)
        begin = self.warmup_steps + self.sustain_steps
        progress = keras.ops.clip((step - begin) / max(self.total_steps - begin, 1.0), 0.0, 1.0)
        cosine = self.minimum + (self.peak - self.minimum) * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        after_warmup = keras.ops.where(step < begin, self.peak, cosine)
        return keras.ops.where(step < self.warmup_steps, ramp, after_warmup)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "minimum": self.minimum, "warmup_steps": self.warmup_steps,
                "sustain_steps": self.sustain_steps, "total_steps": self.total_steps}


def make_schedule(tcfg: TrainConfig, steps_per_epoch: int, global_batch: int):
    """The learning rate per step; its peak scales with the global batch (lr_max_per_image x batch)."""
    opt = tcfg.optimizer
    peak = opt.lr_max_per_image * global_batch
    warmup, sustain = opt.warmup_epochs * steps_per_epoch, opt.sustain_epochs * steps_per_epoch
    if opt.schedule == "exponential":
        return WarmupExponentialDecay(opt.lr_start, peak, opt.lr_min, warmup, sustain, opt.decay, steps_per_epoch)
    return WarmupCosineDecay(opt.lr_start, peak, opt.lr_min, warmup, sustain, tcfg.epochs * steps_per_epoch)


def make_loss(tcfg: TrainConfig) -> keras.losses.Loss:
    imb = tcfg.imbalance
    if imb.loss == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=imb.label_smoothing)
    balanced = imb.focal_alpha is not None  # focal (the config allows only bce | focal)
    return keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=balanced, alpha=imb.focal_alpha if balanced else 0.25, gamma=imb.focal_gamma,
        label_smoothing=imb.label_smoothing)


@keras.saving.register_keras_serializable(package="melanoma")
class WarmEMAAdamW(keras.optimizers.AdamW):
    """AdamW whose moving average of the weights (train.checkpoints.ema) warms up: momentum min(ema, (1 + t) / (10 + t))
    at step t, the `num_updates` form of TensorFlow's ExponentialMovingAverage. With a fixed 0.99, a run of a few
    dozen steps would validate and predict with weights still close to their random start; with the warm-up
    the average spans about the last t/10 steps early on and the last 1/(1 - ema) steps once t is large."""

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        t = keras.ops.cast(self.iterations, "float32")
        # Step 0 copies the weights (as Keras does); then the warm-up, capped at ema_momentum.
        momentum = keras.ops.where(keras.ops.equal(t, 0.0), 0.0,
                                   keras.ops.minimum(self.ema_momentum, (1.0 + t) / (10.0 + t)))
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = keras.ops.cast(momentum, var.dtype)
                average.assign(m * average + (1.0 - m) * var)


def make_optimizer(tcfg: TrainConfig, schedule) -> keras.optimizers.Optimizer:
    """AdamW on the schedule, with the warmed-up weight average when train.checkpoints.ema is set."""
    return WarmEMAAdamW(schedule, weight_decay=tcfg.optimizer.weight_decay,
                        use_ema=tcfg.checkpoints.ema > 0, ema_momentum=tcfg.checkpoints.ema or 0.99)


def epoch_steps(planned: int, steps_per_execution: int) -> int:
    """The planned steps per epoch rounded up to a multiple of steps_per_execution: Keras runs whole groups of
    that many steps (on JAX it pulls them even past steps_per_epoch), so any other count would shift the
    learning-rate schedule away from the one planned and logged."""
    steps = math.ceil(planned / steps_per_execution) * steps_per_execution
    if steps != planned:
        log.info("train: %d steps per epoch (%d planned, rounded up to a multiple of steps_per_execution %d, "
                 "so every epoch runs exactly the steps the schedule counts)", steps, planned, steps_per_execution)
    return steps
