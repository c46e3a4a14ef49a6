"""What keeps the chips busy on the JAX/TPU path, shown on 8 simulated CPU devices and on TensorFlow:
no image-sized collective in the compiled train step, uint8 images to the model, epochs that are whole
groups of steps_per_execution, device prefetch that changes nothing but timing, on-device TTA views, and
best weights without the optimizer's state."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from melanoma.config import AugmentConfig, Config, apply_overrides, to_dict
from helpers.runs import COLLECTIVES_CODE, FAST_COMPILE, jax_run, jax_train



@pytest.mark.slow  # compiling EfficientNetB0's train step for 8 devices: 2-5 minutes on 2 cores
def test_efficientnet_b0_train_step_has_no_image_sized_all_gather():
    """The default TPU setup (augmentation inside the model) on 8 devices: every device augments its own
    images. The earlier gather over the flattened batch compiled to an all-gather of the global batch."""
    out = jax_run(COLLECTIVES_CODE + """
import keras
from melanoma.runtime.devices import setup_devices
setup_devices(cpu_replicas=8)
from melanoma.config import AugmentConfig, to_dict
from melanoma.image.models import build_model
model = build_model("efficientnet_b0", 64, None, augment=to_dict(AugmentConfig()))
model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="binary_crossentropy", jit_compile=True)
x, y = np.zeros((16, 64, 64, 3), np.uint8), np.zeros((16, 1), np.float32)
found = collectives(train_step_hlo(model, x, y))
image = 64 * 64 * 3
print(sum(op == "all-reduce" for op, _ in found), [f for f in found if f[0] != "all-reduce" and f[1] >= image])
""", timeout=900, xla_flags=FAST_COMPILE)
    reduces, image_sized = out.split(" ", 1)
    assert int(reduces) > 0  # the gradients are summed over devices: the step really is data-parallel
    assert image_sized == "[]"


@pytest.mark.slow  # a JAX train run on 8 devices: about a minute on 2 cores
def test_steps_per_execution_16_gives_exact_epochs_and_learning_rates(records, tmp_path):  # noqa: F811
    rec, _, _ = records
    out = tmp_path / "run"
    res = jax_train(rec, out, 2, "--fold-ids", "0", "--batch-size", "1",
                    "--set", "train.steps_per_execution=16", "--set", "train.warmup_epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    # fold 0 trains on 80 images, global batch 8: 10 planned steps, rounded up to one group of 16
    assert "16 steps per epoch (10 planned, rounded up to a multiple of steps_per_execution 16" in res.stderr
    history = pd.read_csv(out / "fold0" / "history.csv")
    assert history["step"].tolist() == [16, 32]  # the optimizer's own count after each epoch
    from melanoma.config import load_config
    from melanoma.image.schedules import make_schedule

    schedule = make_schedule(load_config(out / "config.yaml").train, 16, 8)  # the run's settings, 16 steps
    want = [float(schedule(s - 1)) for s in history["step"]]
    np.testing.assert_allclose(history["learning_rate"], want, rtol=1e-6)
    assert want[0] != want[1]  # warm-up then decay: the rows would differ had an epoch run other steps


@pytest.mark.slow  # two short JAX fits on 8 devices: about 30 s on 2 cores
def test_device_prefetch_trains_exactly_like_keras_own_feeding():
    out = jax_run("""
import numpy as np, keras, tensorflow as tf
from melanoma.runtime.devices import setup_devices
setup_devices(cpu_replicas=8)
from melanoma.image.prefetch import DevicePrefetch
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 16, 16, 3)).astype("uint8")
y = (rng.uniform(size=(64, 1)) > 0.5).astype("float32")
w = np.where(y[:, 0] > 0, 3.0, 1.0).astype("float32")

def fit(prefetch):
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3), dtype="uint8")
    h = keras.layers.Conv2D(4, 3)(keras.ops.cast(inp, "float32") / 255.0)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", steps_per_execution=2)
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).repeat().batch(16, drop_remainder=True)
    ahead = DevicePrefetch(ds) if prefetch else None
    try:
        model.fit(ahead.batches() if prefetch else ds, epochs=2, steps_per_epoch=4, verbose=0, shuffle=False)
    finally:
        if ahead is not None:
            ahead.close()
    return [np.asarray(v) for v in model.get_weights()], int(np.asarray(model.optimizer.iterations))

(a, steps_a), (b, steps_b) = fit(False), fit(True)
print(steps_a, steps_b, all(np.array_equal(p, q) for p, q in zip(a, b)))
""")
    assert out == "8 8 True"


def test_device_prefetch_is_used_only_on_jax_with_a_distribution():
    from melanoma.image.prefetch import wanted

    assert not wanted("tensorflow")
    with pytest.raises(ValueError, match="needs a Keras distribution"):
        from melanoma.image.prefetch import DevicePrefetch

        DevicePrefetch(tf.data.Dataset.range(3))


# ---------------------------------------------------------------- uint8 input, steps, TTA, checkpoints

def test_reader_gives_uint8_and_resizes_only_other_sizes():
    from melanoma.data.reader import decode_image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 24, 3)).astype(np.uint8)
    jpeg = tf.io.encode_jpeg(img, quality=95)
    plain = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    for stored in (24, None):  # our manifest's size, or unknown (the public records): never resized
        same = decode_image(jpeg, 24, stored).numpy()
        assert same.dtype == np.uint8
        np.testing.assert_array_equal(same, plain)
    small = decode_image(jpeg, 16, None).numpy()
    want = tf.image.resize(plain, [16, 16], antialias=True).numpy()
    assert small.dtype == np.uint8 and small.shape == (16, 16, 3)
    np.testing.assert_allclose(small, want, atol=0.5 + 1e-4)  # the resize, rounded to whole grey levels


def test_model_takes_uint8_and_casts_inside():
    from melanoma.image.models import build_model

    model = build_model("simple_cnn", 32, None, augment=to_dict(AugmentConfig()))
    assert model.inputs[0].dtype == "uint8"
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "pixels", "augment"]  # cast, then the on-device augmentation
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x.astype(np.float32), verbose=0),
                               atol=1e-6)


def test_epoch_steps_round_up_to_whole_groups():
    from melanoma.image.schedules import epoch_steps

    assert epoch_steps(104, 16) == 112 and epoch_steps(112, 16) == 112 and epoch_steps(10, 1) == 10
    assert epoch_steps(1, 32) == 32


def test_class_weights_follow_keras_rule():
    from keras.src.trainers.data_adapters.tf_dataset_adapter import make_class_weight_map_fn

    from melanoma.image.inputs import class_weights_of

    for y, cw in ((tf.constant([[0.0], [1.0], [0.7], [0.2]]), {0: 0.5, 1: 4.0}),
                  (tf.one_hot([2, 0, 1], 3), {0: 1.0, 1: 2.0, 2: 3.0})):
        want = make_class_weight_map_fn(cw)(tf.zeros([len(y), 1]), y)[2]
        np.testing.assert_allclose(class_weights_of(y, cw).numpy(), want.numpy())


def test_tta_views_are_made_in_the_model_in_one_pass():
    from melanoma.image.tta import prediction_views, tta_model, views_batch

    size = 16
    image = keras.Input((size, size, 3), dtype="uint8", name="image")
    meta = keras.Input((2,), name="meta")
    # a 'model' whose output is the image's top-left pixel plus 1000 x the first metadata value
    corner = keras.layers.Lambda(lambda a: keras.ops.cast(a[0][:, 0, 0, :1], "float32") + 1000 * a[1][:, :1])(
        [image, meta])
    model = keras.Model({"image": image, "meta": meta}, corner)
    tcfg = apply_overrides(Config(), {"train.size": size, "train.tta": 2, "train.tta_flips": True}).train
    tm = tta_model(model, tcfg, seed=3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, size, size, 3)).astype(np.uint8)
    m = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], np.float32)
    out = tm.predict({"image": x, "meta": m, "idx": np.array([5, 6, 7], np.int32)}, verbose=0)
    pred = out["pred"]
    assert pred.shape == (3, len(prediction_views(tcfg))) and out["idx"].tolist() == [5, 6, 7]
    offset = 1000 * m[:, :1]  # each image's metadata stays beside its own views
    corners = pred - offset
    np.testing.assert_allclose(corners[:, 0], x[:, 0, 0, 0])  # plain
    np.testing.assert_allclose(corners[:, 1], x[:, 0, -1, 0])  # flip_lr
    np.testing.assert_allclose(corners[:, 2], x[:, -1, 0, 0])  # flip_ud
    np.testing.assert_allclose(corners[:, 3], x[:, -1, -1, 0])  # flip_lr_ud
    assert (corners[:, 4:] == np.round(corners[:, 4:])).all()  # random views come back as uint8 pixels
    assert not np.allclose(corners[:, 4], corners[:, 0]) and not np.allclose(corners[:, 4], corners[:, 5])
    # images per prediction step: 2 training batches' worth of views per device, at least one image per device
    assert views_batch(32, 8, 6) == 10 * 8 and views_batch(2, 8, 12) == 8


def test_best_weights_leave_the_optimizer_out_and_the_backup_keeps_it(tmp_path):
    import h5py

    from melanoma.image.runfolder import FoldLog, backup_callback, load_model_weights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    fold_log = FoldLog(tmp_path, lambda step: 1e-3, 1)
    writes = []
    save = model.save_weights
    model.save_weights = lambda path, *a, **k: (writes.append(str(path)), save(path, *a, **k))[1]
    model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y), callbacks=[
        keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: logs.update(val_auc=float(e))),
        fold_log, backup_callback(tmp_path / "backup")])
    with h5py.File(tmp_path / "best.weights.h5") as best, h5py.File(tmp_path / "backup" / "latest.weights.h5") as b:
        assert "optimizer" not in best and "optimizer" in b
    backups = [w for w in writes if "latest" in w]
    assert len(backups) == 2  # one (atomic) write per epoch: no copy of the previous backup aside
    assert not list((tmp_path / "backup").glob("*.bkp"))
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    fresh.compile(keras.optimizers.Adam(1e-3), "mse")
    load_model_weights(fresh, tmp_path / "best.weights.h5")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
