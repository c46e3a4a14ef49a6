"""The train stage on tiny learnable records: TTA views, resume after a kill, multi-replica, precision, losses.

The records are 32px images whose malignant ones carry a bright square, in the public Kaggle layout
(3 training files = 3 folds, 1 test file), and the model is `simple_cnn`, so a whole run takes seconds.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from melanoma.config import Config, apply_overrides
from melanoma.errors import ConfigError
from melanoma.data.records import shard_name
from melanoma.scoring import auc
from melanoma.runtime.backend import resolve_precision
from melanoma.image.imbalance import imbalance
from melanoma.image.schedules import make_loss, make_schedule
from melanoma.runtime.devices import dtype_policy
from melanoma.image.tta import prediction_views
from helpers.runs import N_FOLDS, fold_aucs_above, run_cli, train_args, write_learnable_records













@pytest.mark.slow  # train subprocesses: 17-33 s on 2 cores
def test_train_writes_aligned_tta_predictions_and_metadata_model(records, tmp_path):
    rec, train_names, test_names = records
    out = tmp_path / "run"
    res = run_cli(train_args(rec, out, 3, "--tta", "1", "--tta-flips", "--metadata", "--set", "train.checkpoint=best"))
    assert res.returncode == 0, res.stderr[-3000:]
    oof = pd.read_csv(out / "oof.csv")
    truth = dict(train_names)
    assert sorted(oof.image_name) == sorted(truth)  # every training image once, out of fold
    assert (oof.target == oof.image_name.map(truth)).all()
    assert fold_aucs_above(oof, 0.8)  # learnable: predictions are attached to the right ids
    test = pd.read_csv(out / "test_pred.csv")
    assert sorted(test.image_name) == sorted(n for n, _ in test_names)
    assert auc([dict(test_names)[n] for n in test.image_name], test.target) > 0.8
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta_views"] == ["plain", "flip_lr", "flip_ud", "flip_lr_ud", "tta1"]
    assert metrics["oof_auc_no_tta"] == pytest.approx(auc(oof.target, oof.pred_plain))
    for k in range(N_FOLDS):
        fold = out / f"fold{k}"
        history = pd.read_csv(fold / "history.csv")
        assert list(history.epoch) == [0, 1, 2] and {"val_auc", "learning_rate"} <= set(history.columns)
        done = json.loads((fold / "done.json").read_text())
        assert done["weights"] == "best.weights.h5" and done["best_val_auc"] == pytest.approx(history.val_auc.max())
        assert (fold / "best.weights.h5").is_file() and (fold / "curves.png").is_file()
        assert not (fold / "backup").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_outputs(records, tmp_path):
    rec, train_names, test_names = records
    killed = tmp_path / "killed"
    args = train_args(rec, killed, 6, "--set", "train.steps_per_execution=1")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "melanoma", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    # Kill it once fold 1 has finished at least one epoch: fold 0 done, fold 1 mid-way.
    deadline = time.time() + 240
    history = killed / "fold1" / "history.csv"
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(pd.read_csv(history)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "fold0" / "done.json").is_file() and not (killed / "fold1" / "done.json").exists()
    assert (killed / "fold1" / "backup").is_dir()
    done_epochs = len(pd.read_csv(history))

    res = run_cli(args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fold 0: finished in an earlier run" in res.stderr
    resumed = pd.read_csv(killed / "fold1" / "history.csv")
    assert list(resumed.epoch) == list(range(6))  # each epoch once: continued, not restarted
    assert done_epochs >= 2
    # The fold after the resumed one trains all its epochs too (Keras keeps a restored start epoch otherwise).
    assert list(pd.read_csv(killed / "fold2" / "history.csv").epoch) == list(range(6))
    # What an uninterrupted run writes: every training image once in oof.csv, every test image in test_pred.csv.
    oof, test = pd.read_csv(killed / "oof.csv"), pd.read_csv(killed / "test_pred.csv")
    assert list(oof.image_name) == sorted(n for n, _ in train_names) and oof.shape == (120, 5)
    assert list(test.image_name) == sorted(n for n, _ in test_names) and test.shape == (40, 2)
    assert (oof.target == oof.image_name.map(dict(train_names))).all() and fold_aucs_above(oof, 0.8)
    assert not list(killed.rglob(".tmp-*")) and not list(killed.glob("fold*/backup"))

    changed = run_cli(train_args(rec, killed, 7))
    assert changed.returncode == 2 and "other settings" in changed.stderr


@pytest.mark.slow  # train subprocesses: 17-33 s on 2 cores
def test_two_cpu_replicas_split_the_global_batch(records, tmp_path):
    rec, _, _ = records
    code = """
import sys
from melanoma.runtime.strategy import get_strategy
import tensorflow as tf
s = get_strategy("none", cpu_replicas=2)
ds = s.experimental_distribute_dataset(tf.data.Dataset.range(64).batch(16, drop_remainder=True))
shapes = [v.shape[0] for v in s.experimental_local_results(next(iter(ds)))]
print(s.num_replicas_in_sync, shapes)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "2 [8, 8]"
    out = tmp_path / "run"
    res = run_cli(train_args(rec, out, 1, "--fold-ids", "0", "--set", "train.cpu_replicas=2"))
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and "global batch 16 (8 per device x 2 devices)" in res.stderr
    assert metrics["n_oof"] == 40


def test_positive_share_sets_the_oversampling_factor():
    cfg = apply_overrides(Config(), {"train.positive_share": 0.5})
    imb = imbalance(100, 900, cfg.train)
    assert imb.oversample == pytest.approx(9.0) and imb.sampled_share == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="positive_share"):
        imbalance(100, 900, apply_overrides(Config(), {"train.positive_share": 0.05}).train)


def test_cosine_schedule_and_focal_loss():
    cfg = apply_overrides(Config(), {"train.schedule": "cosine", "train.lr_start": 0.0, "train.lr_max_per_image": 1e-4,
                                     "train.lr_min": 1e-6, "train.warmup_epochs": 1, "train.epochs": 5})
    sched = make_schedule(cfg.train, steps_per_epoch=10, global_batch=10)  # peak 1e-3
    lr = [float(sched(s)) for s in range(51)]
    assert lr[0] == 0.0 and lr[10] == pytest.approx(1e-3)
    assert lr[30] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5, rel=1e-4)  # half-way down the cosine
    assert lr[50] == pytest.approx(1e-6) and all(a >= b for a, b in zip(lr[10:], lr[11:]))
    focal = make_loss(apply_overrides(Config(), {"train.loss": "focal", "train.focal_alpha": 0.75}).train)
    assert isinstance(focal, keras.losses.BinaryFocalCrossentropy)
    y, p = np.array([[1.0], [0.0]]), np.array([[0.9], [0.1]])
    bce = make_loss(Config().train)
    assert float(focal(y, p)) < float(bce(y, p))  # easy examples are down-weighted
    with pytest.raises(ConfigError):
        make_schedule(apply_overrides(Config(), {"train.schedule": "step"}).train, 10, 10)


def test_mixed_precision_keeps_a_float32_output():
    from melanoma.image.models import build_model

    assert resolve_precision("auto", "tpu") == "mixed_bfloat16"
    assert resolve_precision("auto", "gpu") == "mixed_float16"
    assert resolve_precision("auto", "cpu") == "float32"
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        model = build_model("simple_cnn", 32)
    assert keras.config.dtype_policy().name == before
    assert model.get_layer("pred").compute_dtype == "float32"
    assert any(layer.compute_dtype == "bfloat16" for layer in model.get_layer("simple_cnn").layers)
    assert model(np.zeros((2, 32, 32, 3), np.float32)).dtype == "float32"


def test_prediction_views():
    tcfg = apply_overrides(Config(), {"train.tta": 2, "train.tta_flips": True}).train
    assert [n for n, _ in prediction_views(tcfg)] == ["plain", "flip_lr", "flip_ud", "flip_lr_ud", "tta1", "tta2"]
    assert [n for n, _ in prediction_views(Config().train)] == ["plain"]


@pytest.mark.slow  # train subprocesses: 17-33 s on 2 cores
def test_train_only_shards_are_trained_on_but_never_validated(records, tmp_path):
    """External data (fold -1, train_only) joins every fold's training pool and stays out of the OOF."""
    import shutil

    rec, train_names, _ = records
    folder = tmp_path / "tf"
    folder.mkdir()
    shards = []
    for k in range(N_FOLDS):
        shutil.copy(rec / shard_name("train", k, 40), folder)
        shards.append({"file": shard_name("train", k, 40), "split": "train", "fold": k, "count": 40,
                       "positives": 10})
    shutil.copy(rec / shard_name("test", 0, 40), folder)
    shards.append({"file": shard_name("test", 0, 40), "split": "test", "fold": -1, "count": 40})
    other, _ = write_learnable_records(tmp_path / "other", seed=1)  # fresh images, 1 file used as "external"
    shutil.copy(tmp_path / "other" / shard_name("train", 0, 40), folder / "external00-40.tfrec")
    shards.append({"file": "external00-40.tfrec", "split": "train", "fold": -1, "count": 40, "train_only": True})
    (folder / "manifest.json").write_text(json.dumps({"image_size": 32, "n_folds": N_FOLDS, "shards": shards}))

    out = tmp_path / "run"
    res = run_cli(train_args(folder, out, 1, "--fold-ids", "0"))
    assert res.returncode == 0, res.stderr[-3000:]
    # 80 images of folds 1-2 plus 40 external (their 10 malignant counted by reading the shard)
    assert "fold 0: 120 training images, 30 malignant" in res.stderr
    oof = pd.read_csv(out / "oof.csv")
    assert sorted(oof.image_name) == sorted(n for n, _ in train_names[:40])  # fold 0 only, no external ids


def tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_restart_refuses_bad_settings_before_touching_the_run_and_keeps_the_old_one(records, tmp_path):
    rec, train_names, _ = records
    out = tmp_path / "run"
    assert run_cli(train_args(rec, out, 1, "--fold-ids", "0")).returncode == 0
    before = tree_digest(out)
    bad = run_cli(train_args(rec, out, 1, "--fold-ids", "0", "--restart", "--model", "efficientnet_b99"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("melanoma: error: unknown model")
    assert tree_digest(out) == before  # a typo costs nothing
    res = run_cli(train_args(rec, out, 1, "--fold-ids", "0", "--restart"))
    assert res.returncode == 0, res.stderr[-2000:]
    aside = list(out.glob("replaced-*"))
    assert len(aside) == 1 and (aside[0] / "fold0" / "done.json").is_file()  # moved aside, never deleted
    assert (out / "fold0" / "done.json").is_file()


@pytest.mark.slow  # train subprocesses: 17-33 s on 2 cores
def test_a_failed_first_try_does_not_block_the_corrected_run(records, tmp_path):
    """A run that failed before finishing an epoch leaves resume.json but no progress: other settings start it
    over instead of being refused as 'another run'."""
    rec, _, _ = records
    out = tmp_path / "run"
    out.mkdir()
    (out / "resume.json").write_text('{"fingerprint": "from-a-failed-try", "backend": "tensorflow"}')
    res = run_cli(train_args(rec, out, 1, "--fold-ids", "0"))
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.slow
def test_kills_at_random_points_always_resume_to_the_uninterrupted_outputs(records, tmp_path):
    """Five kills spread over a run (during fold 0, between folds, during the last fold's predictions), each
    followed by a re-run: every fold ends with all its epochs and the outputs match an uninterrupted run's."""
    rec, train_names, test_names = records
    reference = tmp_path / "reference"
    start = time.time()
    assert run_cli(train_args(rec, reference, 3)).returncode == 0
    full = time.time() - start
    ref_oof = pd.read_csv(reference / "oof.csv")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    rng = np.random.default_rng(7)
    for i, fraction in enumerate((0.35, 0.55, 0.75, 0.9, 0.97)):
        out = tmp_path / f"killed{i}"
        proc = subprocess.Popen([sys.executable, "-m", "melanoma", *train_args(rec, out, 3)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(full * fraction * rng.uniform(0.9, 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        res = run_cli(train_args(rec, out, 3))
        assert res.returncode == 0, res.stderr[-3000:]
        for k in range(N_FOLDS):
            assert list(pd.read_csv(out / f"fold{k}" / "history.csv").epoch) == [0, 1, 2], (i, k)
        oof, test = pd.read_csv(out / "oof.csv"), pd.read_csv(out / "test_pred.csv")
        assert list(oof.image_name) == list(ref_oof.image_name) and oof.shape == ref_oof.shape
        assert list(test.image_name) == sorted(n for n, _ in test_names) and test.shape == (40, 2)
        assert not list(out.rglob(".tmp-*")) and not list(out.glob("fold*/backup"))


def test_an_unreadable_first_backup_is_moved_aside_and_the_fold_starts_over(tmp_path):
    # A kill during the fold's first backup write leaves a torn latest.weights.h5 and no previous one to fall back to.
    from melanoma.image.runfolder import backup_callback

    folder = tmp_path / "fold0" / "backup"
    folder.mkdir(parents=True)
    (folder / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n torn")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 3), "float32")
    model.fit(x, np.zeros((8, 1), "float32"), epochs=1, verbose=0, callbacks=[backup_callback(folder)])
    aside = [p.name for p in folder.parent.iterdir() if p.name.startswith("backup.unreadable-")]
    assert len(aside) == 1 and (folder.parent / aside[0] / "latest.weights.h5").read_bytes().endswith(b"torn")
    assert (folder / "latest.weights.h5").stat().st_size > 100  # the new backup of the finished epoch
