"""The CycleGAN training loop on the active Keras backend, with checkpoints to resume from and a step budget.

One update (both generators, then both discriminators on the same forward pass) is written twice, thinly:
TensorFlow takes gradients with a GradientTape inside a tf.function; JAX with jax.value_and_grad over the
models' `stateless_call` and the optimizers' `stateless_apply`, jitted, its weights held as arrays and written
back into the Keras variables before a checkpoint, a sample grid or the translation. The losses (losses.py)
and everything else are one code.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from melanoma.config import SynthConfig
from melanoma.errors import InputError
from melanoma.files import write_bytes, write_csv
from melanoma.progress import progress_bar
from melanoma.synth.losses import discriminator_objective, generator_objective
from melanoma.synth.models import generator, patch_discriminator

log = logging.getLogger(__name__)

CHECKPOINT, HISTORY = "checkpoint.npz", "history.csv"
KILL_AT_STEP = "MELANOMA_SYNTH_KILL_AT_STEP"  # test hook: SIGKILL this process once a checkpoint reaches it
LOSSES = ("g_loss", "d_loss", "g_adversarial", "cycle", "identity")


@dataclass
class Nets:
    g_ab: keras.Model  # benign -> malignant: the one that makes the synthetic images
    g_ba: keras.Model
    d_a: keras.Model
    d_b: keras.Model
    g_opt: keras.optimizers.Optimizer
    d_opt: keras.optimizers.Optimizer

    @property
    def gen_vars(self) -> list:
        return [*self.g_ab.trainable_variables, *self.g_ba.trainable_variables]

    @property
    def disc_vars(self) -> list:
        return [*self.d_a.trainable_variables, *self.d_b.trainable_variables]

    def state_variables(self) -> list:
        """Everything a checkpoint holds, in a fixed order: the four networks and both optimizers' state."""
        return [*self.g_ab.variables, *self.g_ba.variables, *self.d_a.variables, *self.d_b.variables,
                *self.g_opt.variables, *self.d_opt.variables]


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant, then linearly down to 0 at the step budget (CycleGAN's schedule, in steps)."""

    def __init__(self, rate: float, steps: int, decay_from: float):
        self.rate, self.steps, self.start = rate, steps, int(steps * decay_from)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        left = (self.steps - step) / max(self.steps - self.start, 1)
        return self.rate * keras.ops.clip(left, 0.0, 1.0)

    def get_config(self):
        return {"rate": self.rate, "steps": self.steps, "start": self.start}


def build_nets(scfg: SynthConfig) -> Nets:
    def gen(name):
        return generator(scfg.generator, scfg.size, scfg.gen_filters, scfg.unet_depth, scfg.resnet_blocks, name)

    def disc(name):
        return patch_discriminator(scfg.size, scfg.disc_filters, scfg.disc_layers, name)

    def adam():
        return keras.optimizers.Adam(LinearDecay(scfg.learning_rate, scfg.steps, scfg.decay_from),
                                     beta_1=scfg.beta_1, beta_2=0.999)

    nets = Nets(gen("g_benign_to_malignant"), gen("g_malignant_to_benign"), disc("d_benign"), disc("d_malignant"),
                adam(), adam())
    nets.g_opt.build(nets.gen_vars)  # built now so a checkpoint can be loaded into their state
    nets.d_opt.build(nets.disc_vars)
    return nets


# ---------------------------------------------------------------- one update per backend


class TensorFlowStep:
    def __init__(self, nets: Nets, scfg: SynthConfig):
        import tensorflow as tf

        cw, iw = scfg.cycle_weight, scfg.identity_weight
        n = nets

        def call(model):
            return lambda x: model(x, training=True)

        @tf.function
        def step(a, b):
            with tf.GradientTape(persistent=True) as tape:
                g_total, parts, fakes = generator_objective(call(n.g_ab), call(n.g_ba), call(n.d_a), call(n.d_b),
                                                            a, b, cw, iw)
                d_total = discriminator_objective(call(n.d_a), call(n.d_b), a, b, *fakes)
            gv, dv = n.gen_vars, n.disc_vars
            n.g_opt.apply_gradients(zip(tape.gradient(g_total, gv), gv))
            n.d_opt.apply_gradients(zip(tape.gradient(d_total, dv), dv))
            return {"g_loss": g_total, "d_loss": d_total, **parts}

        self._step = step

    def __call__(self, a, b) -> dict:
        return self._step(a, b)

    def sync(self) -> None:
        """The Keras variables are the state: nothing to write back, nothing to read."""

    refresh = sync


class JaxStep:
    def __init__(self, nets: Nets, scfg: SynthConfig):
        import jax

        cw, iw, n = scfg.cycle_weight, scfg.identity_weight, nets
        self.nets = nets
        ng, nd = len(n.g_ab.trainable_variables), len(n.d_a.trainable_variables)
        frozen = [[v.value for v in m.non_trainable_variables] for m in (n.g_ab, n.g_ba, n.d_a, n.d_b)]

        def callers(g_tv, d_tv):
            def bind(model, tv, ntv):
                return lambda x: model.stateless_call(tv, ntv, x, training=True)[0]

            return (bind(n.g_ab, g_tv[:ng], frozen[0]), bind(n.g_ba, g_tv[ng:], frozen[1]),
                    bind(n.d_a, d_tv[:nd], frozen[2]), bind(n.d_b, d_tv[nd:], frozen[3]))

        def g_fn(g_tv, d_tv, a, b):
            total, parts, fakes = generator_objective(*callers(g_tv, d_tv), a, b, cw, iw)
            return total, (parts, fakes)

        def d_fn(d_tv, g_tv, a, b, fake_a, fake_b):
            _, _, d_a, d_b = callers(g_tv, d_tv)
            return discriminator_objective(d_a, d_b, a, b, fake_a, fake_b)

        @jax.jit
        def step(state, a, b):
            g_tv, d_tv, g_ov, d_ov = state
            (g_total, (parts, fakes)), g_grads = jax.value_and_grad(g_fn, has_aux=True)(g_tv, d_tv, a, b)
            d_total, d_grads = jax.value_and_grad(d_fn)(d_tv, g_tv, a, b, *fakes)
            g_tv, g_ov = n.g_opt.stateless_apply(g_ov, g_grads, g_tv)
            d_tv, d_ov = n.d_opt.stateless_apply(d_ov, d_grads, d_tv)
            return (g_tv, d_tv, g_ov, d_ov), {"g_loss": g_total, "d_loss": d_total, **parts}

        self._step = step
        self.refresh()

    def _groups(self) -> list[list]:
        n = self.nets
        return [n.gen_vars, n.disc_vars, n.g_opt.variables, n.d_opt.variables]

    def refresh(self) -> None:
        """Take the state from the Keras variables (after a checkpoint is loaded or the weights are reset)."""
        self.state = tuple([v.value for v in group] for group in self._groups())

    def __call__(self, a, b) -> dict:
        self.state, losses = self._step(self.state, a, b)
        return losses

    def sync(self) -> None:
        for group, values in zip(self._groups(), self.state):
            for var, value in zip(group, values):
                var.assign(value)


def make_step(nets: Nets, scfg: SynthConfig):
    """The update for the active backend; built once per run and reused by every fold (tracing a step of four
    networks costs about 10 s on a CPU), each fold starting from `reset`."""
    return JaxStep(nets, scfg) if keras.backend.backend() == "jax" else TensorFlowStep(nets, scfg)


def snapshot(nets: Nets) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v.value) for v in nets.state_variables()]


def reset(nets: Nets, initial: list[np.ndarray]) -> None:
    """Back to the initial weights and a fresh optimizer state (zero moments, step 0)."""
    for var, value in zip(nets.state_variables(), initial):
        var.assign(value)


def inference(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled forward pass (numpy in and out) with the model's current weights. Not predict_on_batch: on
    JAX that donates the variables' buffers and leaves the Keras variables pointing at deleted arrays; and not
    eager calls, which on JAX dispatch op by op."""
    if keras.backend.backend() != "jax":
        return model.predict_on_batch
    if id(model) not in _JITTED:  # one compiled function per network for the run (sample grids reuse it)
        import jax

        _JITTED[id(model)] = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    run = _JITTED[id(model)]

    def call(x: np.ndarray) -> np.ndarray:
        values = [[v.value for v in vs] for vs in (model.trainable_variables, model.non_trainable_variables)]
        return np.asarray(run(*values, x))

    return call


_JITTED: dict[int, Callable] = {}


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, nets: Nets, step: int) -> None:
    """Every variable and the step in one .npz, written atomically (a kill leaves the previous one)."""
    values = {f"v{i:04d}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(nets.state_variables())}
    buf = io.BytesIO()
    np.savez(buf, step=np.int64(step), **values)
    write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, nets: Nets) -> int:
    """Restore the networks and optimizers; returns the step the checkpoint was taken at."""
    variables = nets.state_variables()
    with np.load(path) as z:
        stored = sorted(k for k in z.files if k.startswith("v"))
        shapes = [z[k].shape for k in stored]
        if len(stored) != len(variables) or any(tuple(v.shape) != s for v, s in zip(variables, shapes)):
            raise InputError(f"{path}: its networks do not match the synth settings; use another --out")
        for var, key in zip(variables, stored):
            var.assign(z[key])
        return int(z["step"])


def _after_checkpoint(step: int) -> None:
    limit = os.environ.get(KILL_AT_STEP)
    if limit is not None and step >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- the loop


def train_cyclegan(nets: Nets, step_fn, initial: list[np.ndarray], pairs: Iterator, scfg: SynthConfig,
                   fold_dir: Path, label: str, draw: Callable[[int], None]) -> dict:
    """Train up to `scfg.steps` from the initial weights, or continue from `fold_dir`'s checkpoint.

    `pairs` yields (benign batch, malignant batch); `draw(step)` writes a sample grid. Returns the steps run
    now and their speed.
    """
    ckpt, history_path = fold_dir / CHECKPOINT, fold_dir / HISTORY
    reset(nets, initial)
    start = load_checkpoint(ckpt, nets) if ckpt.is_file() else 0
    step_fn.refresh()
    rows = []
    if history_path.is_file():  # steps after the last checkpoint were lost with the process: dropped
        rows = pd.read_csv(history_path).query("step <= @start").to_dict("records")
    if start:
        log.info("%s: resuming from step %d of %d (checkpoint)", label, start, scfg.steps)
    if start >= scfg.steps:
        return {"steps_run": 0, "start": start, "steps_per_second": None}
    begin = time.perf_counter()
    with progress_bar(scfg.steps - start, f"synth: {label}", unit="step") as bar:
        for step in range(start + 1, scfg.steps + 1):
            a, b = next(pairs)
            losses = step_fn(a, b)
            if step == start + 1:  # the speed leaves out the first step, which traces and compiles
                begin = time.perf_counter()
            rows.append({"step": step, **{k: float(keras.ops.convert_to_numpy(losses[k])) for k in LOSSES}})
            bar.update(1)
            last = step == scfg.steps
            if step % scfg.sample_every == 0 or last:
                step_fn.sync()
                draw(step)
            if step % scfg.checkpoint_every == 0 or last:
                step_fn.sync()
                save_checkpoint(ckpt, nets, step)
                write_csv(history_path, pd.DataFrame(rows, columns=["step", *LOSSES]))
                _after_checkpoint(step)
    seconds, run = time.perf_counter() - begin, scfg.steps - start
    speed = round((run - 1) / seconds, 3) if run > 1 else None
    log.info("%s: steps %d-%d, %s steps/s after the first; last losses %s", label, start + 1, scfg.steps, speed,
             ", ".join(f"{k} {rows[-1][k]:.3f}" for k in LOSSES))
    return {"steps_run": run, "start": start, "steps_per_second": speed}
