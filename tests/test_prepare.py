"""prepare at scale: resumable after a kill, bad images (fail / skip), image conversions, gfile outputs."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from conftest import ROOT, textured_image, textured_layout
from melanoma.config import Config, apply_overrides
from melanoma.errors import InputError
from melanoma.data.images import BadImage, load_rgb
from melanoma.data.reader import find_shards, parse_fn
from melanoma.data.prepare import prepare


def cfg_for(**values):
    return apply_overrides(Config(), {"prepare.size": 16, "n_folds": 2, "prepare.workers": 1, **values})


def shard_digest(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tfrec"))}


def leftovers(out):
    return [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or ".prepare-work" in str(p)]


# Each kill runs prepare in a fresh interpreter (~8 s of CPU): the shard-phase kill is in the fast suite, the
# decode-phase kill with two workers in make test-all.
@pytest.mark.parametrize("hook,value,workers", [
    ("MELANOMA_PREPARE_KILL_AFTER_SHARDS", "3", 1),
    pytest.param("MELANOMA_PREPARE_KILL_AFTER_CHUNKS", "1", 2, marks=pytest.mark.slow)])
def test_killed_prepare_resumes_to_the_same_shards(tmp_path, hook, value, workers):
    """Must hold: kill prepare halfway (SIGKILL, in the shard phase or the decode phase), re-run it: the same
    shard names, counts and bytes as an uninterrupted run, and no temporary files."""
    data = textured_layout(tmp_path / "data", n_train=150, n_test=10, n_patients=30)
    settings = {"prepare.shard_mb": 0.01}
    whole = prepare(cfg_for(**settings), data, tmp_path / "whole")

    out = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "melanoma", "-q", "prepare", "--data", str(data), "--out", str(out), "--size", "16",
           "--n-folds", "2", "--workers", str(workers), "--set", "prepare.shard_mb=0.01"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **{hook: value})
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "manifest.json").exists()
    work = out / ".prepare-work"
    assert (work / "chunks").is_dir()
    if "SHARDS" in hook:
        assert len(list(out.glob("train*.tfrec"))) == 3 and list(out.glob(".*.tfrec.tmp"))  # killed mid-shard

    resumed = prepare(cfg_for(**{**settings, "prepare.workers": workers}), data, out)
    assert [(s["file"], s["count"]) for s in resumed["shards"]] == [(s["file"], s["count"]) for s in whole["shards"]]
    assert shard_digest(out) == shard_digest(tmp_path / "whole")
    assert not leftovers(out) and not leftovers(tmp_path / "whole")
    assert len(whole["shards"]) > 6


def test_rerun_of_a_complete_folder_keeps_verified_shards(textured_data, tmp_path, caplog):
    out = tmp_path / "tf"
    first = prepare(cfg_for(**{"prepare.shard_mb": 0.01}), textured_data, out)
    digest = shard_digest(out)
    (out / first["shards"][0]["file"]).write_bytes(b"corrupt")  # one damaged shard is redone, the rest kept
    with caplog.at_level("INFO"):
        prepare(cfg_for(**{"prepare.shard_mb": 0.01}), textured_data, out)
    assert f"{len(first['shards']) - 1} of {len(first['shards'])} shards already complete" in caplog.text
    assert shard_digest(out) == digest
    # Another size: a new plan, old shards replaced, no stray files.
    prepare(cfg_for(**{"prepare.size": 24}), textured_data, out)
    assert json.loads((out / "manifest.json").read_text())["image_size"] == 24
    assert set(shard_digest(out)) == {s["file"] for s in json.loads((out / "manifest.json").read_text())["shards"]}


# ---------------------------------------------------------------- bad images

@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory):
    """A 10,000 x 10,000 JPEG (100 MP: above PIL's default decompression-bomb warning limit)."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    img = Image.new("L", (10000, 10000), 0)
    img.paste(255, (2500, 3000, 7000, 7500))  # a square, not halves: halves would be flagged as stripes
    img.save(path, quality=50)
    return path


def bad_files(folder):
    """name -> (writer, expected reason fragment) for each kind of unusable file."""
    good = folder / "good.jpg"
    textured_image(1, (64, 48)).save(good, quality=90)
    data = good.read_bytes()
    return {
        "truncated": (lambda p: p.write_bytes(data[: len(data) // 2]), "cannot decode"),
        "empty": (lambda p: p.write_bytes(b""), "empty file"),
        "garbage": (lambda p: p.write_bytes(b"this is not an image"), "cannot decode"),
    }


def test_images_of_every_kind_become_rgb(tmp_path, huge_jpeg):
    rgb = textured_image(2, (60, 40))
    cases = {
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, format="JPEG"),
        "gray.jpg": lambda p: rgb.convert("L").save(p, format="JPEG"),
        "png_in.jpg": lambda p: rgb.save(p, format="PNG"),
        "rgba.png": lambda p: rgb.convert("RGBA").save(p, format="PNG"),
        "palette.png": lambda p: rgb.convert("P").save(p, format="PNG"),
        "gray16.png": lambda p: Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 256)).save(p),
    }
    for name, write in cases.items():
        write(tmp_path / name)
        img, w, h = load_rgb(tmp_path / name, 16)
        assert img.mode == "RGB" and (w, h) == (60, 40), name
        assert np.asarray(img).std() > 5, name  # real content, not a blank conversion
    img, w, h = load_rgb(huge_jpeg, 64)  # decoded with JPEG draft scaling: 1/8 scale, not 300 MB
    assert (w, h) == (10000, 10000) and max(img.size) <= 1250
    with pytest.raises(BadImage, match="exceeds prepare.max_pixels"):
        load_rgb(huge_jpeg, 64, max_pixels=50_000_000)
    for name, (write, reason) in bad_files(tmp_path).items():
        write(tmp_path / f"{name}.jpg")
        with pytest.raises(BadImage, match=reason):
            load_rgb(tmp_path / f"{name}.jpg", 16)


def test_bad_images_fail_with_file_and_row_or_are_skipped_and_listed(textured_data, tmp_path, huge_jpeg):
    train = pd.read_csv(textured_data / "train.csv")
    broken = {train.image_name[3]: "truncated", train.image_name[10]: "empty", train.image_name[20]: "garbage"}
    for (name, kind), (write, _) in zip(broken.items(), bad_files(tmp_path).values()):
        write(textured_data / "jpeg" / "train" / f"{name}.jpg")
    big = train.image_name[30]
    (textured_data / "jpeg" / "train" / f"{big}.jpg").write_bytes(huge_jpeg.read_bytes())
    with pytest.raises(InputError, match=r"train.csv, line 5: cannot read image .*ISIC_0000003.jpg: cannot decode"):
        prepare(cfg_for(), textured_data, tmp_path / "fail")
    assert not [p for p in (tmp_path / "fail").rglob("*") if p.is_file()]  # nothing half-written

    out = tmp_path / "skip"
    m = prepare(cfg_for(**{"prepare.on_bad_image": "skip", "prepare.max_pixels": 50_000_000}), textured_data, out)
    skipped = {s["image_name"]: s for s in m["skipped"]}
    assert set(skipped) == set(broken) | {big}
    assert skipped[big]["reason"].startswith("10000x10000") and skipped[big]["line"] == 32
    assert m["counts"]["train"] == len(train) - 4
    names = set()
    for s in find_shards(str(out)).train():
        parse = parse_fn("train", ("image_name",))
        names |= {parse(r)["image_name"].numpy().decode() for r in tf.data.TFRecordDataset(s.path)}
    assert names == set(train.image_name) - set(skipped)
    test_names = set(pd.read_csv(textured_data / "test.csv").image_name)
    assert set(pd.read_csv(out / "image_sizes.csv").image_name) == (set(train.image_name) | test_names) - set(skipped)
    assert sum(f["images"] for f in m["folds"].values()) == len(train) - 4  # the fold table counts what is in shards
    # folds.csv still covers train.csv (later stages read it with train.csv)
    assert len(pd.read_csv(out / "folds.csv")) == len(train)

    # The huge image is accepted under the default limit (draft-decoded), its original size recorded.
    m = prepare(cfg_for(**{"prepare.on_bad_image": "skip"}), textured_data, tmp_path / "big")
    assert big not in {s["image_name"] for s in m["skipped"]}


def test_writer_goes_through_gfile_paths(textured_data, tmp_path):
    """The output path is used as a string (no Path folding of gs://), written with tf.io.gfile."""
    out = str(tmp_path / "gf") + "/"
    m = prepare(cfg_for(), textured_data, out)
    assert tf.io.gfile.exists(out + "manifest.json") and tf.io.gfile.exists(out + "folds.csv")
    assert all(tf.io.gfile.exists(out + s["file"]) for s in m["shards"])
    assert all(len(s["sha256"]) == 64 for s in m["shards"])


def test_prepare_writes_the_image_hashes_that_external_dedup_reads(textured_data, tmp_path):
    from melanoma.data.images import dhash, view_of
    from melanoma.image.sources import hashes_of

    out = tmp_path / "tf"
    prepare(cfg_for(), textured_data, out)
    table = pd.read_csv(out / "image_hashes.csv", dtype=str, keep_default_na=False)
    train = pd.read_csv(textured_data / "train.csv")
    assert set(train["image_name"]) <= set(table["image_name"])
    name = train["image_name"].iloc[0]
    expected = dhash(view_of(textured_data / "jpeg" / "train" / f"{name}.jpg", 200_000_000))
    assert table.set_index("image_name").loc[name, "image_hash"] == f"{expected:016x}"
    assert hashes_of(str(out))[name] == f"{expected:016x}"
