"""The JAX backend, with 8 CPU devices standing in for a TPU v5e-8's chips, beside the TensorFlow one.

The Keras backend is fixed when Keras is imported, and this test process runs TensorFlow, so everything on
JAX runs in a subprocess (`jax_run`), configured the way `melanoma` configures itself (melanoma.runtime.backend).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma.runtime.backend import XLA_DEVICES_FLAG, resolve_backend, set_cpu_devices, use_backend
from melanoma.errors import ConfigError

from test_train import N_FOLDS, fold_aucs_above, run_cli, train_args, write_learnable_records


def jax_env(devices: int = 8, xla_flags: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env.update(KERAS_BACKEND="jax", XLA_FLAGS=f"{XLA_DEVICES_FLAG}={devices} {xla_flags}".strip(),
               TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    return env


# XLA flags for processes where only what is compiled matters, not how fast it runs: about half the CPU time
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def jax_run(code: str, devices: int = 8, timeout: int = 300, xla_flags: str = "") -> str:
    """Run Python code on the JAX backend in a fresh process; returns its stdout (its last line by convention).
    `xla_flags`: more XLA flags (e.g. a lower optimisation level, where only the compiled graph matters)."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=jax_env(devices, xla_flags), timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- choosing the backend

def test_auto_picks_jax_only_for_a_tpu_tensorflow_cannot_drive(monkeypatch):
    import melanoma.runtime.backend as backend

    assert resolve_backend("auto", environ={}, modules={}, tpu=False) == ("tensorflow", "no TPU attached")
    monkeypatch.setattr(backend, "tensorflow_can_use_tpu", lambda: False)
    assert resolve_backend("auto", environ={}, modules={}, tpu=True)[0] == "jax"
    monkeypatch.setattr(backend, "tensorflow_can_use_tpu", lambda: True)  # a TPU build of TensorFlow
    assert resolve_backend("auto", environ={}, modules={}, tpu=True)[0] == "tensorflow"
    # the user's KERAS_BACKEND is honoured by auto, and a conflict with an explicit setting is refused
    assert resolve_backend("auto", environ={"KERAS_BACKEND": "jax"}, modules={}, tpu=False)[0] == "jax"
    with pytest.raises(ConfigError, match="conflicts with KERAS_BACKEND=jax"):
        resolve_backend("tensorflow", environ={"KERAS_BACKEND": "jax"}, modules={})
    # this process already runs Keras on TensorFlow: asking for JAX here is refused, not silently ignored
    import keras  # noqa: F401

    with pytest.raises(ConfigError, match="already running on tensorflow"):
        resolve_backend("jax", environ={})


def test_kaggle_tpu_vm_environment_counts_as_a_tpu(tmp_path):
    from melanoma.runtime.machine import tpu_attached

    assert not tpu_attached({}, dev=str(tmp_path))
    assert tpu_attached({"ISTPUVM": "1", "TPU_PROCESS_ADDRESSES": "local"}, dev=str(tmp_path))
    (tmp_path / "accel0").touch()
    assert tpu_attached({}, dev=str(tmp_path))


def test_use_backend_sets_the_environment_before_keras_loads():
    env = {"XLA_FLAGS": f"--foo {XLA_DEVICES_FLAG}=2"}
    assert use_backend("jax", cpu_devices=8, environ=env, modules={}) == "jax"
    assert env["KERAS_BACKEND"] == "jax" and env["XLA_FLAGS"].count(XLA_DEVICES_FLAG) == 1
    assert env["XLA_FLAGS"].endswith(f"{XLA_DEVICES_FLAG}=8") and "--foo" in env["XLA_FLAGS"]
    set_cpu_devices(4, env)
    assert env["XLA_FLAGS"].endswith("=4")


# ---------------------------------------------------------------- the same code on both backends

SCOPE_CODE = """
    import keras
    from melanoma.runtime.devices import devices_scope
    with devices_scope(cpu_replicas=8) as d:
        inside = type(keras.distribution.distribution()).__name__
        keras.config.set_dtype_policy("mixed_bfloat16")  # what train sets for a TPU's precision
    after = keras.distribution.distribution()
    try:
        with devices_scope(cpu_replicas=8):
            raise RuntimeError("a failing fold")
    except RuntimeError:
        pass
    print("scope", inside, d.count, after, keras.distribution.distribution(), keras.config.dtype_policy().name)
"""

DATA_PARALLEL_CODE = """
    import jax, keras, numpy as np
    from melanoma.runtime.devices import setup_devices
    d = setup_devices(cpu_replicas=8)
    dist = keras.distribution.distribution()
    layout = dist.get_data_layout((32, 16, 16, 3))
    x = jax.device_put(np.zeros((32, 16, 16, 3), np.float32), layout.backend_layout)
    shards = sorted(s.data.shape[0] for s in x.addressable_shards)
    print(d.backend, d.kind, d.count, type(dist).__name__, shards)
"""


# A tiny model with the default augmentation inside, its train step compiled for the 8 devices: the
# collectives in it (test_tpu_path.COLLECTIVES_CODE), as the last line.
TINY_STEP_CODE = """
    from melanoma.config import AugmentConfig, to_dict
    from melanoma.image.augment import Augment
    inp = keras.Input((32, 32, 3), dtype="uint8")
    h = Augment(to_dict(AugmentConfig(cutout=1)), 32, seed=1)(keras.ops.cast(inp, "float32"))
    h = keras.layers.Conv2D(4, 3, strides=4)(h)
    tiny = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h)))
    tiny.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=True)
    found = collectives(train_step_hlo(tiny, np.zeros((16, 32, 32, 3), np.uint8), np.zeros((16, 1), np.float32)))
    print("collectives", sorted(found))
"""


@pytest.fixture(scope="module")
def on_jax(tmp_path_factory) -> tuple[list[str], Path]:
    """One JAX process (8 CPU devices; starting one costs ~5 s of CPU) runs the augmentation warp, sets up
    DataParallel and compiles a tiny model's train step: its stdout lines and the warped images."""
    from test_tpu_path import COLLECTIVES_CODE

    out = tmp_path_factory.mktemp("jax") / "jax.npy"
    res = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + textwrap.dedent(AUGMENT_CODE)
                          + textwrap.dedent(SCOPE_CODE) + textwrap.dedent(DATA_PARALLEL_CODE) + COLLECTIVES_CODE
                          + textwrap.dedent(TINY_STEP_CODE)],
                         capture_output=True, text=True, env=jax_env(8, FAST_COMPILE), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines(), out


def test_data_parallel_splits_the_global_batch_over_8_devices(on_jax):
    assert on_jax[0][-2] == "jax cpu 8 DataParallel [4, 4, 4, 4, 4, 4, 4, 4]"


def test_in_model_augmentation_moves_no_image_between_devices(on_jax):
    """Every device augments its own images: in the compiled train step of a tiny model with the augmentation
    inside, the only collectives are the small gradient sums (a gather over the flattened batch made an
    all-gather of the whole global batch, 16 x 32 x 32 x 3 values)."""
    found = eval(on_jax[0][-1].removeprefix("collectives "))
    assert found and {op for op, _ in found} == {"all-reduce"}
    assert max(n for _, n in found) < 32 * 32 * 3  # smaller than one image


def test_devices_scope_puts_back_the_distribution_and_dtype_policy(on_jax):
    """train's devices come with a scope: on exit, exception included, the distribution (DataParallel over 8
    devices inside) and the dtype policy are what they were, so a later stage runs as it would alone."""
    assert on_jax[0][-3] == "scope DataParallel 8 None None float32"


AUGMENT_CODE = """
    import math, numpy as np, keras
    from melanoma.image.augment import affine_matrices, keras_ops, transform
    o = keras_ops()
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    z, one = np.zeros(2, "float32"), np.ones(2, "float32")
    ident = transform(img, affine_matrices(z, z, one, one, z, z, 16, o), o)
    rot = transform(img, affine_matrices(z + math.pi / 2, z, one, one, z, z, 16, o), o)
    shift = transform(img, affine_matrices(z, z, one, one, z + 3.5, z - 2.25, 16, o), o)
    np.save(OUT, np.stack([keras.ops.convert_to_numpy(t) for t in (ident, rot, shift)]))
    print(keras.backend.backend())
"""


def test_augmentation_gives_the_same_pixels_on_both_backends(tmp_path, on_jax):
    """The in-model warp (keras.ops) on JAX equals the one on TensorFlow and the tf.data one: an identity
    matrix is the identity and a 90-degree rotation is rot90."""
    import tensorflow as tf

    from melanoma.image.augment import affine_matrices, transform

    lines, jax_file = on_jax
    assert lines[-4] == "jax"  # AUGMENT_CODE's line, before the scope, DataParallel and collectives lines
    on_jax = np.load(jax_file)
    tf_file = tmp_path / "tf.npy"
    exec(textwrap.dedent(AUGMENT_CODE), {"OUT": str(tf_file)})  # keras.ops on the TensorFlow backend
    on_tf = np.load(tf_file)
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(on_jax[0], img, atol=1e-3)
    np.testing.assert_allclose(on_jax[1], np.rot90(img, k=1, axes=(1, 2)), atol=1e-3)
    np.testing.assert_allclose(on_jax, on_tf, atol=1e-3)
    z, one = tf.zeros([2]), tf.ones([2])  # tf.data's path (TensorFlow ops) agrees too
    data_shift = transform(tf.constant(img), affine_matrices(z, z, one, one, z + 3.5, z - 2.25, 16)).numpy()
    np.testing.assert_allclose(on_jax[2], data_shift, atol=1e-3)


@pytest.mark.slow  # a JAX subprocess that trains: ~23 s on 2 cores
def test_augment_layer_trains_randomly_and_predicts_unchanged_on_jax():
    out = jax_run("""
        import numpy as np, keras
        from melanoma.image.augment import Augment
        from melanoma.config import AugmentConfig, to_dict
        layer = Augment(to_dict(AugmentConfig()), 16, seed=1)
        x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
        a = keras.ops.convert_to_numpy(layer(x, training=True))
        b = keras.ops.convert_to_numpy(layer(x, training=True))
        c = keras.ops.convert_to_numpy(layer(x, training=False))
        print(bool(np.abs(a - b).max() > 1), bool(np.array_equal(c, x)), bool(a.min() >= 0 and a.max() <= 255))
    """, devices=1)
    assert out == "True True True"


# ---------------------------------------------------------------- training on JAX

@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("jax_records")
    train_names, test_names = write_learnable_records(root)
    return root, train_names, test_names


def jax_train(rec: Path, out: Path, epochs: int, *extra: str, devices: int = 8) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    args = train_args(rec, out, epochs, "--backend", "jax", "--set", f"train.cpu_replicas={devices}",
                      "--batch-size", "2", *extra)
    return subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}, timeout=600)


@pytest.mark.slow
def test_jax_run_on_8_devices_writes_complete_aligned_outputs_and_resumes(records, tmp_path):
    rec, train_names, test_names = records
    out = tmp_path / "run"
    res = jax_train(rec, out, 3, "--fold-ids", "0", "--tta-flips", "--set", "train.augment.where=model")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "backend jax" in res.stderr and "DataParallel over 8 x cpu" in res.stderr
    assert "global batch 16 (2 per device x 8 devices)" in res.stderr
    oof = pd.read_csv(out / "oof.csv")
    truth = dict(train_names)
    assert sorted(oof.image_name) == sorted(n for n, _ in train_names[:40])  # fold 0: 40 images, not padded
    assert (oof.target == oof.image_name.map(truth)).all() and fold_aucs_above(oof, 0.8)
    test = pd.read_csv(out / "test_pred.csv")
    assert sorted(test.image_name) == sorted(n for n, _ in test_names) and test.target.notna().all()
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "jax" and run["replicas"] == 8
    # Resume on JAX: fold 0 is kept, the others are trained, every fold with the configured epochs.
    res = jax_train(rec, out, 3, "--tta-flips", "--set", "train.augment.where=model")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fold 0: finished in an earlier run" in res.stderr
    oof = pd.read_csv(out / "oof.csv")
    assert sorted(oof.image_name) == sorted(truth) and fold_aucs_above(oof, 0.8)
    for k in range(N_FOLDS):
        assert list(pd.read_csv(out / f"fold{k}" / "history.csv").epoch) == [0, 1, 2]
    # The outputs are backend-neutral: the same settings on TensorFlow (8 CPU replicas: the same global batch)
    # take the folder as theirs.
    res = run_cli(train_args(rec, out, 3, "--tta-flips", "--set", "train.augment.where=model",
                             "--backend", "tensorflow", "--batch-size", "2", "--set", "train.cpu_replicas=8"))
    assert res.returncode == 0 and "already finished" in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_weights_move_between_backends_with_the_same_predictions(tmp_path):
    """One model definition and one preprocessing: EfficientNetB0 weights saved on TensorFlow give the same
    predictions on JAX (and back) within 1e-4."""
    import keras

    from melanoma.image.models import build_model

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", images)
    keras.utils.set_random_seed(0)
    model = build_model("efficientnet_b0", 64, None, meta_dim=0)
    model.save_weights(tmp_path / "tf.weights.h5")
    tf_pred = model.predict(images, verbose=0)
    out = jax_run(f"""
        import numpy as np
        from melanoma.image.models import build_model
        m = build_model("efficientnet_b0", 64, {str(tmp_path / 'tf.weights.h5')!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        np.save({str(tmp_path / 'jax.npy')!r}, np.asarray(m.predict(x, verbose=0)))
        m.save_weights({str(tmp_path / 'jax.weights.h5')!r})
        print("ok")
    """, devices=1)
    assert out == "ok"
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), tf_pred, atol=1e-4)
    back = build_model("efficientnet_b0", 64, str(tmp_path / "jax.weights.h5"))
    np.testing.assert_allclose(back.predict(images, verbose=0), tf_pred, atol=1e-4)


# ---------------------------------------------------------------- what train leaves behind (nothing)

MLP_CODE = """
    import jax, keras, numpy as np
    from melanoma.tabular.models import KerasMLPClassifier
    # A distribution left set (as train left it before devices_scope): the MLP still trains on one device.
    # 100 rows in batches of 16 end with a batch of 4, which DataParallel over 8 devices cannot split.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    p = KerasMLPClassifier(hidden=(8,), epochs=1, batch_size=16).fit(X, y).predict_proba(X)
    print(type(keras.distribution.distribution()).__name__, p.shape)
"""


@pytest.mark.slow  # a JAX process that compiles the MLP: 30-45 s on 2 busy cores
def test_the_tabular_mlp_never_runs_under_a_leftover_distribution():
    assert jax_run(MLP_CODE) == "DataParallel (100, 2)"


@pytest.mark.slow  # every stage in one JAX process on 8 devices: about 3 min on 2 cores
def test_jax_run_on_8_devices_ends_in_a_submission_with_every_tabular_model(demo_subset, tmp_path):
    """The must-hold command: `melanoma run` with train.backend=jax, 8 devices and tabular.model=all, every
    stage in one process, on a tiny demo subset: train leaves no distribution for the tabular MLP."""
    env = {**jax_env(8), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND")  # set by the command from train.backend, as a user would run it
    runs, sub = tmp_path / "runs", tmp_path / "sub" / "submission.csv"
    args = ["run", "--set", f"paths.data={demo_subset}", "--set", f"paths.tfrecords={tmp_path / 'tfrec'}",
            "--set", f"paths.runs={runs}", "--set", f"paths.submission={sub}", "--set", "prepare.size=32",
            "--set", "train.model=small_cnn_32", "--set", "train.size=32", "--set", "train.epochs=1",
            "--set", "train.weights=none", "--set", "train.batch_size=2", "--set", "train.backend=jax",
            "--set", "train.cpu_replicas=8", "--set", "tabular.model=all", "--set", "tabular.epochs=2",
            "--set", "tabular.gbm_max_iter=20", "--set", "tabular.lgbm_max_rounds=20",
            "--set", "tabular.hgb_max_iter=20", "--set", "report.bootstrap=0", "--set", "report.gradcam=false"]
    res = subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "DataParallel over 8 x cpu" in res.stderr
    for model in ("mlp_smote", "logreg", "gbm", "lgbm", "hgb"):
        assert np.isfinite(json.loads((runs / "tabular" / model / "metrics.json").read_text())["oof_auc"]), model
    submission = pd.read_csv(sub)
    sample = pd.read_csv(demo_subset / "sample_submission.csv")
    assert list(submission.image_name) == list(sample.image_name) and submission.target.between(0, 1).all()
