"""`melanoma synth` (CycleGAN minority synthesis) on tiny data: 32 px demo images, widths 4, a few steps.

The leakage checks read only the shards: per fold, every synthetic image's source (carried in its name) is in
that fold's training folds, never in its validation fold; `train` puts none into validation, OOF or test
predictions. Pixels decode like real images. Resume continues from the checkpoint.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from melanoma.cli import main
from melanoma.config import Config, apply_overrides, load_config
from melanoma.data.records import serialize_example
from melanoma.errors import ConfigError, InputError
from melanoma.image.sources import for_fold, sources_from_folder
from melanoma.image.inputs import train_dataset
from melanoma.data.reader import decode_image, find_shards, lenient_parse

from helpers.layouts import copy_demo_layout
from helpers.paths import DEMO

N_FOLDS = 2
TINY = ["--size", "32", "--set", f"n_folds={N_FOLDS}", "--set", "synth.gen_filters=4",
        "--set", "synth.disc_filters=4", "--set", "synth.resnet_blocks=2", "--set", "synth.checkpoint_every=2",
        "--set", "synth.sample_every=2", "--set", "synth.sample_images=2"]


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    """24 demo images (9 malignant) as 32-px shards in 2 folds, through `prepare` itself."""
    from melanoma.data.prepare import prepare

    root = tmp_path_factory.mktemp("synth")
    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"})
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"})
    train = pd.concat([train[train.target == 1].head(9), train[train.target == 0].head(15)])
    data = copy_demo_layout(root / "data", train, test.head(4))
    test.head(4)[["image_name"]].assign(target=0).to_csv(data / "sample_submission.csv", index=False)
    cfg = load_config(None, ["data.patient_id=per_image", "prepare.size=32", f"n_folds={N_FOLDS}",
                             "prepare.workers=1"])
    prepare(cfg, data, str(root / "tf"), None)
    return root / "tf"


def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    # without the KERAS_BACKEND an in-process run of this session set: the subprocess picks its own
    env = {**{k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True, env=env)


def names_of(paths, fields=("image_name", "source", "target")) -> pd.DataFrame:
    ds = tf.data.TFRecordDataset([str(p) for p in paths]).map(lenient_parse(fields))
    rows = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()} for ex in ds.as_numpy_iterator()]
    return pd.DataFrame(rows, columns=list(fields))


def fold_names(tfrec) -> dict[int, set]:
    """The competition images of each fold, from the real shards."""
    shardset = find_shards(str(tfrec), N_FOLDS)
    return {k: set(names_of([s.path for s in shardset.validation([k])]).image_name) for k in range(N_FOLDS)}


# ---------------------------------------------------------------- through the CLI (slow: tracing a CycleGAN)


@pytest.mark.slow  # ~90 s on 2 busy cores: two folds of a U-Net CycleGAN, then a train run over them
def test_unet_synthetic_shards_train_their_own_fold_only_and_never_reach_validation(tfrecords, tmp_path):
    out = tmp_path / "synth"
    assert main(["synth", "--tfrecords", str(tfrecords), "--out", str(out), "--generator", "unet",
                 "--steps", "4", *TINY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "melanoma-synthetic" and manifest["image_size"] == 32
    per_fold = fold_names(tfrecords)
    sources = sources_from_folder("synthetic", str(out), 0.2)
    assert sorted(sorted(s.folds) for s in sources) == [[0], [1]]
    for k in range(N_FOLDS):
        mine = names_of([s.path for src in for_fold(sources, k) for s in src.shards])
        assert len(mine) > 0 and (mine.target == 1).all() and (mine.source == f"synthetic:{k}").all()
        origin = mine.image_name.str.split("_", n=2).str[2]
        assert (mine.image_name.str.split("_", n=2).str[1] == str(k)).all()
        # the leakage check: no synthetic image of fold k comes from fold k's validation images
        assert not set(origin) & per_fold[k]
        assert set(origin) <= set().union(*(per_fold[j] for j in range(N_FOLDS) if j != k))
        index = pd.read_csv(out / f"fold{k}" / "index.csv")
        assert sorted(index.image_name) == sorted(mine.image_name)
        assert list(pd.read_csv(out / f"fold{k}" / "history.csv").step) == [1, 2, 3, 4]
        assert {p.name for p in (out / f"fold{k}" / "samples").iterdir()} == {"step_000002.png", "step_000004.png"}
    with pytest.raises(InputError, match="melanoma synth"):  # never read as competition folds
        find_shards(str(out), N_FOLDS)

    run = tmp_path / "run"
    assert main(["train", "--tfrecords", str(tfrecords), "--out", str(run), "--model", "small_cnn_32", "--size", "32",
                 "--epochs", "1", "--batch-size", "8", "--weights", "none", "--set", f"n_folds={N_FOLDS}",
                 "--set", "train.tensorboard=false", "--set", f"train.synthetic={out}",
                 "--set", "train.synthetic_share=0.25"]) == 0
    oof, test = pd.read_csv(run / "oof.csv"), pd.read_csv(run / "test_pred.csv")
    assert not oof.image_name.str.startswith("synth_").any() and not test.image_name.str.startswith("synth_").any()
    assert sorted(oof.image_name) == sorted(set().union(*per_fold.values()))
    metrics = json.loads((run / "metrics.json").read_text())
    for k in range(N_FOLDS):
        assert metrics["folds"][str(k)]["extra_images"] == {"synthetic": manifest["folds"][str(k)]["images"]}


@pytest.mark.slow  # 45-100 s on 2 busy cores: one fold of a ResNet CycleGAN, killed, then continued
def test_resnet9_killed_after_a_checkpoint_continues_from_it(tfrecords, tmp_path):
    from melanoma.synth.loop import KILL_AT_STEP

    out = tmp_path / "synth"
    args = ["synth", "--tfrecords", str(tfrecords), "--out", str(out), "--generator", "resnet9", "--steps", "6",
            "--fold-ids", "0", *TINY]
    killed = run_cli(args, {KILL_AT_STEP: "4"})  # SIGKILL right after the step-4 checkpoint
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    fold = out / "fold0"
    with np.load(fold / "checkpoint.npz") as z:
        assert int(z["step"]) == 4
    before = pd.read_csv(fold / "history.csv")
    assert list(before.step) == [1, 2, 3, 4] and not (fold / "done.json").exists()
    assert not (out / "manifest.json").exists()  # nothing to train on until the fold is finished
    assert not list(out.rglob("*.tmp"))  # every write was atomic: the kill left no half-written file

    assert main(args) == 0  # the same command, in this process
    after = pd.read_csv(fold / "history.csv")
    assert list(after.step) == [1, 2, 3, 4, 5, 6]
    pd.testing.assert_frame_equal(after.head(4), before)  # the steps before the interruption are kept, not redone
    done = json.loads((fold / "done.json").read_text())
    assert done["start"] == 4 and done["steps_run"] == 2  # continued from the checkpoint's step

    # Written images decode like the real ones: JPEG -> uint8 of the stored side (the models cast inside).
    manifest = json.loads((out / "manifest.json").read_text())
    synth = tf.data.TFRecordDataset(str(out / manifest["shards"][0]["file"])).map(lenient_parse(("image",)))
    real_shard = find_shards(str(tfrecords), N_FOLDS).validation([1])[0].path
    real = tf.data.TFRecordDataset(real_shard).map(lenient_parse(("image",)))
    for ds in (synth, real):
        data = next(iter(ds))["image"]
        raw = tf.io.decode_jpeg(data, channels=3)
        assert raw.dtype == tf.uint8 and tuple(raw.shape) == (32, 32, 3)
        pixels = decode_image(data, 32, 32).numpy()
        assert pixels.dtype == np.uint8 and pixels.max() > 1

    # Other settings into the same folder are refused before anything changes.
    assert main([*args, "--set", "synth.cycle_weight=5"]) == 2


@pytest.mark.slow  # ~30 s: 200 steps of a width-8 U-Net CycleGAN at 32 px
def test_the_cyclegan_learns_its_cycle_on_demo_images(tfrecords, tmp_path):
    out = tmp_path / "synth"
    assert main(["synth", "--tfrecords", str(tfrecords), "--out", str(out), "--steps", "200", "--fold-ids", "0",
                 *TINY, "--set", "synth.gen_filters=8", "--set", "synth.disc_filters=8",
                 "--set", "synth.checkpoint_every=100", "--set", "synth.sample_every=100"]) == 0
    history = pd.read_csv(out / "fold0" / "history.csv")
    first, last = history.head(30).mean(), history.tail(30).mean()
    # a 300-step run of this size took cycle L1 from 0.87 to 0.48; an update that did not train stays near 0.9
    assert last["cycle"] < 0.8 * first["cycle"] and last["identity"] < 0.8 * first["identity"]
    assert np.isfinite(history[["g_loss", "d_loss"]].to_numpy()).all()


@pytest.mark.slow  # a subprocess on the JAX backend: 45-80 s on 2 busy cores
def test_synth_runs_on_the_jax_backend(tfrecords, tmp_path):
    out = tmp_path / "synth"
    res = run_cli(["synth", "--tfrecords", str(tfrecords), "--out", str(out), "--generator", "unet", "--steps", "2",
                   "--fold-ids", "1", "--backend", "jax", *TINY])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "backend jax" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["folds"]) == ["1"] and manifest["folds"]["1"]["images"] > 0


# ---------------------------------------------------------------- fast: networks, losses, checkpoints, mixing


def tiny(**over):
    values = {"synth.size": 32, "synth.gen_filters": 4, "synth.disc_filters": 4, "synth.resnet_blocks": 2,
              "synth.steps": 10, **{f"synth.{k}": v for k, v in over.items()}}
    return apply_overrides(Config(), values).synth


def test_generators_keep_the_image_shape_and_the_unet_depth_follows_the_side():
    import keras

    from melanoma.synth.models import generator, halvings, patch_discriminator

    assert (halvings(256, 8), halvings(224, 8), halvings(32, 8), halvings(32, 3)) == (8, 5, 5, 3)
    for kind, size in (("unet", 224), ("resnet9", 224), ("unet", 32), ("resnet9", 32)):
        g = generator(kind, size, 4, 8, 2, "g")
        y = keras.ops.convert_to_numpy(g(np.zeros((1, size, size, 3), np.float32)))
        assert y.shape == (1, size, size, 3) and np.abs(y).max() <= 1  # tanh
    d = patch_discriminator(32, 4, 3, "d")
    assert tuple(d.output_shape) == (None, 4, 4, 1)  # a map of patch scores


def test_losses_least_squares_cycle_and_identity():
    import keras

    from melanoma.synth.losses import discriminator_objective, generator_objective, lsgan

    ones = np.ones((1, 4, 4, 1), np.float32)
    assert float(lsgan(ones, True)) == 0 and float(lsgan(ones, False)) == 1
    a, b = np.full((1, 8, 8, 3), -0.5, np.float32), np.full((1, 8, 8, 3), 0.5, np.float32)
    same = lambda x: x  # noqa: E731
    fooled = lambda x: keras.ops.ones((1, 4, 4, 1))  # noqa: E731
    total, parts, _ = generator_objective(same, same, fooled, fooled, a, b, 10.0, 1.0)
    assert float(total) == 0 and all(float(v) == 0 for v in parts.values())
    flip = lambda x: -x  # noqa: E731  G(a) = b and F(b) = a: perfect cycle, identity off by |2x|
    total, parts, _ = generator_objective(flip, flip, fooled, fooled, a, b, 10.0, 1.0)
    assert float(parts["cycle"]) == 0 and float(parts["identity"]) == pytest.approx(2.0)
    assert float(total) == pytest.approx(2.0)
    assert float(discriminator_objective(fooled, fooled, a, b, a, b)) == pytest.approx(1.0)  # fakes scored 1


def test_checkpoint_round_trip_and_a_mismatched_one_is_refused(tmp_path):
    from melanoma.synth import loop

    nets = loop.build_nets(tiny(unet_depth=2, disc_layers=1))  # few variables: assigning each costs
    start = loop.snapshot(nets)
    for v in nets.state_variables():
        v.assign(v.value + 1)
    loop.save_checkpoint(tmp_path / "c.npz", nets, 7)
    loop.reset(nets, start)
    assert loop.load_checkpoint(tmp_path / "c.npz", nets) == 7
    assert all(np.allclose(now, then + 1) for now, then in zip(loop.snapshot(nets), start))
    with pytest.raises(InputError, match="do not match"):
        loop.load_checkpoint(tmp_path / "c.npz", loop.build_nets(tiny(unet_depth=2, disc_layers=1, gen_filters=2)))


def test_settings_are_checked_before_anything_is_written(tmp_path):
    from melanoma.synth.stage import SETTINGS, _check_folder

    with pytest.raises(ConfigError, match="synth.size"):
        load_config(None, ["synth.size=30"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a `melanoma synth` folder"):
        _check_folder(tmp_path / "other", {"synth": {}})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / SETTINGS).write_text(json.dumps({"seed": 1, "synth": {"steps": 4}}))
    _check_folder(tmp_path / "mine", {"seed": 1, "synth": {"steps": 4}})
    with pytest.raises(ConfigError, match="synth.steps = 4, now 8"):
        _check_folder(tmp_path / "mine", {"seed": 1, "synth": {"steps": 8}})


def write_white(folder, fold: int, n: int) -> None:
    """A hand-made synth folder: n white synthetic images tagged synthetic:<fold>."""
    folder.mkdir(parents=True, exist_ok=True)
    img = tf.io.encode_jpeg(np.full((32, 32, 3), 255, np.uint8)).numpy()
    with tf.io.TFRecordWriter(str(folder / f"s{fold}.tfrec")) as w:
        for i in range(n):
            w.write(serialize_example({"image": img, "image_name": f"synth_{fold}_X{i}", "patient_id": 0, "sex": -1,
                                       "age_approx": -1, "anatom_site_general_challenge": -1, "diagnosis": -1,
                                       "target": 1, "source": f"synthetic:{fold}"}, "train"))


def test_synthetic_share_caps_the_share_of_a_batch_and_other_folds_get_none(tfrecords, tmp_path):
    folder = tmp_path / "synth"
    write_white(folder, 0, 200)
    (folder / "manifest.json").write_text(json.dumps({"format": "melanoma-synthetic", "image_size": 32,
        "n_folds": N_FOLDS, "shards": [{"file": "s0.tfrec", "split": "train", "fold": 0, "count": 200,
                                        "positives": 200, "train_only": True, "source": "synthetic:0"}]}))
    cfg = apply_overrides(Config(), {"train.size": 32, "train.synthetic": str(folder),
                                     "train.synthetic_share": 0.25})
    sources = sources_from_folder("synthetic", str(folder), cfg.train.sources.synthetic_share)
    shardset = find_shards(str(tfrecords), N_FOLDS)

    def share(fold: int, batches: int = 30) -> float:
        base = shardset.train(exclude=[fold])
        ds = train_dataset(base, cfg.train, 32, 16, None, fold, augment=False, extras=for_fold(sources, fold),
                           base_images=sum(s.count for s in base))
        white = [(x.numpy().reshape(16, -1).min(axis=1) > 240).mean() for x, _ in ds.take(batches)]
        return float(np.mean(white))

    assert share(0) == pytest.approx(0.25, abs=0.06)  # 200 synthetic vs 12 real: capped from 94% to 25%
    assert share(1, 5) == 0  # tagged for fold 0: fold 1 never draws them
