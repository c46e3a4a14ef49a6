"""Issue 26: each traceback found by the red-team pass is one line now (exit 2 for bad input, 3 for the
environment), and every input is byte-identical afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from melanoma.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability import tree_hash  # noqa: E402


def one_line(capsys, argv, status: int, *culprits, roots=()) -> str:
    before = tree_hash(*roots)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == status and len(err) == 1 and err[0].startswith("melanoma: error: "), (code, err)
    assert all(str(c) in err[0] for c in culprits), (culprits, err[0])
    assert tree_hash(*roots) == before
    return err[0]


# ---------------------------------------------------------------- config files and values

def test_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("train: {epochs: 2}  # réglages\n".encode("latin-1"))
    one_line(capsys, ["folds", "--config", config], 2, "latin1.yaml", "not UTF-8", "0xe9", roots=[tmp_path])


def test_config_with_a_duplicate_key_names_key_and_line(tmp_path, capsys):
    config = tmp_path / "dup.yaml"
    config.write_text("train:\n  epochs: 3\n  model: simple_cnn\n  epochs: 30\n")
    one_line(capsys, ["folds", "--config", config], 2, "dup.yaml, line 4", "duplicate key 'epochs'",
             "first on line 2", roots=[tmp_path])


@pytest.mark.parametrize("argv, culprit", [
    (["folds", "--set", "train.model=[1,2"], "--set train.model: the value '[1,2' is not valid YAML"),
    (["folds", "--set", "paths={data: x"], "--set paths"),
    (["ablate", "--vary", "train.model=[a,b"], "--vary train.model"),
])
def test_unparsable_values(tmp_path, capsys, argv, culprit):
    one_line(capsys, argv, 2, culprit, roots=[tmp_path])


def test_folds_with_more_folds_than_patients(tmp_path, capsys):
    """Found by the CLI fuzz test: a ValueError traceback from the folds function."""
    from conftest import textured_layout

    data = textured_layout(tmp_path / "data", n_train=8, n_test=2, n_patients=4)
    one_line(capsys, ["folds", "--data", data, "--out", tmp_path / "f.csv"], 2, "train.csv",
             "4 patients cannot fill 5 folds", "--n-folds 4", roots=[tmp_path])


# ---------------------------------------------------------------- exported models and predict

@pytest.fixture
def model_dir(tmp_path) -> Path:
    from melanoma.serve.artifact import FORMAT_VERSION

    d = tmp_path / "model"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"format_version": FORMAT_VERSION}))
    (d / "model.keras").write_bytes(b"PK\x03\x04 only the start of an archive")
    return d


@pytest.fixture
def images(tmp_path) -> Path:
    from PIL import Image

    d = tmp_path / "images"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "a.jpg")
    return d


def test_truncated_model_keras(model_dir, images, tmp_path, capsys):
    one_line(capsys, ["predict", "--model", model_dir, "--images", images, "--out", tmp_path / "p.csv"], 2,
             "model.keras", "truncated or damaged", "re-run `melanoma export`", roots=[tmp_path])
    assert not (tmp_path / "p.csv").exists()


def test_corrupt_model_json(model_dir, images, tmp_path, capsys):
    (model_dir / "model.json").write_text('{"format_version": 1, "input": {"si')
    for argv in (["predict", "--model", model_dir, "--images", images, "--out", tmp_path / "p.csv"],
                 ["serve", "--model", model_dir]):
        one_line(capsys, argv, 2, "model.json", "not valid JSON", roots=[tmp_path])


def test_header_only_csv_to_predict(model_dir, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text("image_name\n")
    one_line(capsys, ["predict", "--model", model_dir, "--images", listing, "--out", tmp_path / "p.csv"], 2,
             "list.csv", "no rows", roots=[tmp_path])


# ---------------------------------------------------------------- serve

def test_serve_without_the_extra_names_it(model_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    monkeypatch.delitem(sys.modules, "melanoma.serve.app", raising=False)
    one_line(capsys, ["serve", "--model", model_dir], 3, "pip install 'melanoma[serve]'", "fastapi",
             roots=[tmp_path])


class FakeArtifact:
    """What create_app needs of an export, without Keras."""
    version, uses_meta, info = "fake-1", False, {}
    meta = SimpleNamespace(codes=lambda *a: (-1, -1, -1), vector=lambda c: None)

    def threshold(self, name):
        return "p50", 0.5

    def predict(self, x, meta=None):
        return np.full(len(x), 0.5)


def test_serve_on_a_port_in_use_says_so_before_serving(model_dir, tmp_path, capsys, monkeypatch):
    from melanoma.serve import app as app_module

    monkeypatch.setattr(app_module.Artifact, "load", classmethod(lambda cls, d: FakeArtifact()))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_line(capsys, ["serve", "--model", model_dir, "--port", port, "--set", "serve.warmup=false"], 3,
                        f"127.0.0.1:{port}", "choose another --port", roots=[tmp_path])
    assert "serve:" in line  # and nothing was logged as serving (one_line: the only stderr line)


def test_client_disconnect_during_an_upload_is_no_traceback(caplog):
    from melanoma.config import ServeConfig
    from melanoma.serve.app import create_app

    app = create_app(FakeArtifact(), ServeConfig(warmup=False))
    messages = [{"type": "http.request", "body": b"--b\r\nContent-Disposition: form-data; name=\"image\"; "
                 b"filename=\"a.jpg\"\r\n\r\n\xff\xd8 half an upload", "more_body": True},
                {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")], "client": ("127.0.0.1", 5),
             "server": ("127.0.0.1", 8000)}
    with caplog.at_level(logging.DEBUG):
        asyncio.run(app(scope, receive, send))
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert "client disconnected during the upload" in caplog.text
    assert sent and sent[0]["status"] == 400


# ---------------------------------------------------------------- damaged TFRecords

def _records(path: Path, n: int) -> Path:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(n):
            w.write(b"record %d " % i * 50)
    return path


def test_a_damaged_shard_is_named(tmp_path):
    import tensorflow as tf

    from melanoma.data.records import damaged_shard, shard_read_error

    good, bad = _records(tmp_path / "train00-3.tfrec", 3), _records(tmp_path / "train01-3.tfrec", 3)
    bad.write_bytes(bad.read_bytes()[:-40])  # truncated, as by a copy cut short
    assert damaged_shard([str(good)]) is None
    path, problem = damaged_shard([str(good), str(bad)])
    assert path == str(bad) and "truncated" in problem
    err = shard_read_error(tf.errors.DataLossError(None, None, "truncated record at 180"), 1, [str(good), str(bad)])
    msg = str(err)
    assert msg.startswith(str(bad)) and "fold 1" in msg and "melanoma prepare" in msg and "\n" not in msg
    flipped = bytearray(good.read_bytes())
    flipped[30] ^= 0xFF  # a corrupted byte: the record's checksum catches it
    good.write_bytes(bytes(flipped))
    assert damaged_shard([str(good)])[0] == str(good)
    assert shard_read_error(ValueError("other"), 1, [str(good)]) is None


@pytest.mark.slow  # prepare + two short trainings through the CLI: about a minute on 2 cores
def test_train_on_a_damaged_shard_names_it_keeps_finished_folds_and_resumes(tmp_path, capsys):
    from conftest import textured_layout

    data = textured_layout(tmp_path / "data", n_train=24, n_test=4, n_patients=8)
    tf_dir, run = tmp_path / "tf", tmp_path / "run"
    prep = ["prepare", "--data", data, "--out", tf_dir, "--size", 32, "--n-folds", 2]
    assert main([str(a) for a in prep]) == 0
    train = ["-q", "train", "--tfrecords", tf_dir, "--out", run, "--model", "simple_cnn", "--size", 32, "--epochs", 1,
             "--batch-size", 8, "--weights", "none", "--tta", 1, "--set", "train.verbose=0"]
    assert main([str(a) for a in train + ["--fold-ids", "0"]]) == 0
    shard = next(tf_dir.glob("train01-*.tfrec"))
    shard.write_bytes(shard.read_bytes()[:-100])
    capsys.readouterr()
    line = one_line(capsys, train + ["--fold-ids", "0,1"], 2, shard, "damaged TFRecord", "melanoma prepare",
                    roots=[])
    assert "fold 1" in line or "index" in line
    assert (run / "fold0" / "done.json").is_file() and (run / "resume.json").is_file()
    assert main([str(a) for a in prep]) == 0  # the prepare verifies checksums and rewrites the damaged shard
    assert main([str(a) for a in train + ["--fold-ids", "0,1"]]) == 0
    assert sorted(pd.read_csv(run / "oof.csv").fold.unique()) == [0, 1]
