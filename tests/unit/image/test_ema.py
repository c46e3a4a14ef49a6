"""train.ema (issue 28): the moving average of the weights is what is validated, checkpointed and predicted
with, while the raw weights keep training (and are what the epoch backup holds)."""

from __future__ import annotations

import keras
import pytest
import numpy as np
import tensorflow as tf

from melanoma.image.models import build_model
from melanoma.image.runfolder import BEST, FoldLog, ema_weights


def _trained_a_little(ema: float):
    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn", 16, None)
    model.compile(keras.optimizers.AdamW(1e-2, use_ema=ema > 0, ema_momentum=ema or 0.99), "binary_crossentropy")
    x = tf.random.uniform([32, 16, 16, 3], 0, 255, seed=1)
    y = tf.cast(tf.reduce_mean(x, axis=[1, 2, 3]) > 127, tf.float32)[:, None]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[keras.callbacks.SwapEMAWeights()])
    return model, x


def _average(model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.optimizer._model_variables_moving_average]


def test_best_weights_are_the_average_and_the_raw_weights_come_back(tmp_path):
    model, x = _trained_a_little(0.9)
    # The end of fit leaves the average in the model (Keras' finalize): predictions use it.
    for var, avg in zip(model.trainable_variables, _average(model)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(var), avg)
    model.optimizer.apply([tf.ones_like(v) for v in model.trainable_variables])  # one more raw step
    raw = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    avg = _average(model)
    assert max(np.abs(a - r).max() for a, r in zip(avg, raw)) > 1e-4  # they differ: the test can tell them apart
    log = FoldLog(tmp_path, lambda step: 1e-2, 4, ema=True)
    log.set_model(model)
    log.on_epoch_end(0, {"val_auc": 0.9})  # a new best: saved with the averaged weights
    back = build_model("simple_cnn", 16, None)
    back.load_weights(tmp_path / BEST)
    for got, want in zip(back.trainable_weights, avg):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, atol=1e-7)
    # ...and the model trains on from its raw weights.
    for got, want in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
    with ema_weights(model, on=False):  # off: nothing swapped
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.trainable_variables[0]), raw[0])


def _averaged_after_20_steps(cls) -> tuple[float, float]:
    var = keras.Variable(np.zeros(1, np.float32))
    opt = cls(0.05, weight_decay=0.0, use_ema=True, ema_momentum=0.99)
    opt.build([var])
    for _ in range(20):
        opt.apply([tf.constant([-1.0])], [var])  # Adam moves the weight by about lr a step: to about 1.0
    return float(keras.ops.convert_to_numpy(var)[0]), float(keras.ops.convert_to_numpy(
        opt._model_variables_moving_average[0])[0])


def test_the_average_warms_up_so_a_short_run_is_not_its_initial_weights():
    """Momentum min(ema, (1 + t) / (10 + t)): after 20 steps the average has followed the weights most of the
    way, where Keras' fixed 0.99 is still near the starting point (what made tiny test runs predict badly)."""
    from melanoma.image.schedules import WarmEMAAdamW

    raw, warm = _averaged_after_20_steps(WarmEMAAdamW)
    raw_fixed, fixed = _averaged_after_20_steps(keras.optimizers.AdamW)
    assert raw == pytest.approx(raw_fixed) and raw > 0.9
    assert warm > 0.8 * raw and fixed < 0.2 * raw
