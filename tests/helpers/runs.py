"""Builders of tiny runs shared by the tests: learnable TFRecords, CLI runs (in a subprocess and in-process with
the one-line refusal check), JAX subprocesses on simulated devices, run folders for the output guard."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma.cli import build_parser, main
from melanoma.data.records import serialize_example, shard_name
from melanoma.runtime.backend import XLA_DEVICES_FLAG
from melanoma.scoring import auc

N_FOLDS = 3


def write_learnable_records(root: Path, per_file: int = 40, size: int = 32, seed: int = 0) -> tuple[list, list]:
    """Training files train00..02 and one test file; every 4th image is malignant and has a bright square."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = {"train": [], "test": []}
    k = 0
    for split, n_files in (("train", N_FOLDS), ("test", 1)):
        for f in range(n_files):
            with tf.io.TFRecordWriter(str(root / shard_name(split, f, per_file))) as w:
                for _ in range(per_file):
                    pos = int(k % 4 == 0)
                    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                    if pos:
                        y, x = rng.integers(2, size - 12, 2)
                        img[y:y + 10, x:x + 10] = 230
                    w.write(serialize_example({
                        "image": tf.io.encode_jpeg(img, quality=95).numpy(), "image_name": f"IMG_{k:04d}",
                        "patient_id": k, "sex": k % 3 - 1, "age_approx": 30 + k % 50,
                        "anatom_site_general_challenge": k % 8 - 1, "diagnosis": 0, "target": pos}, split))
                    names[split].append((f"IMG_{k:04d}", pos))
                    k += 1
    return names["train"], names["test"]


def train_args(rec: Path, out: Path, epochs: int = 3, *extra: str) -> list[str]:
    return ["train", "--tfrecords", str(rec), "--out", str(out), "--model", "simple_cnn", "--size", "32",
            "--epochs", str(epochs), "--batch-size", "8", "--weights", "none", "--set", f"n_folds={N_FOLDS}",
            "--set", "train.lr_max_per_image=1e-3", "--set", "train.warmup_epochs=0",
            "--set", "train.tensorboard=false", *extra]


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    return subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True, env=env, **kw)


def fold_aucs_above(oof: pd.DataFrame, threshold: float) -> bool:
    # Per fold: each fold's model has its own calibration, which blurs the pooled AUC of a tiny set.
    return all(auc(g.target, g.pred) > threshold for _, g in oof.groupby("fold"))


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


def jax_train(rec: Path, out: Path, epochs: int, *extra: str, devices: int = 8) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    args = train_args(rec, out, epochs, "--backend", "jax", "--set", f"train.cpu_replicas={devices}",
                      "--batch-size", "2", *extra)
    return subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}, timeout=600)


def tree_hash(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            h.update(str(p.relative_to(root)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def refused(capsys, argv, *culprits, roots=()) -> str:
    """Run the CLI; assert exit 2, exactly one stderr line naming every culprit, and untouched folders."""
    before = tree_hash(*roots)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("melanoma: error: "), err
    for c in culprits:
        assert str(c) in lines[0], (c, lines[0])
    assert "np.float64" not in lines[0] and "np.int64" not in lines[0]
    assert tree_hash(*roots) == before
    return lines[0]


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command of the parser, `kaggle download` style for the ones with actions."""
    found = {}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        inner = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if inner:
            found.update({f"{name} {action}": q for action, q in inner[0].choices.items()})
        else:
            found[name] = p
    return found


ALL = commands(build_parser())


def write_run(folder: Path, stage: str = "train", pred=(0.2, 0.8, 0.4, 0.9)) -> Path:
    folder.mkdir(parents=True)
    n = len(pred)
    pd.DataFrame({"image_name": [f"ISIC_{i:07d}" for i in range(n)], "target": [i % 2 for i in range(n)],
                  "pred": list(pred), "fold": [i % 2 for i in range(n)]}).to_csv(folder / "oof.csv", index=False)
    pd.DataFrame({"image_name": ["ISIC_9000000", "ISIC_9000001"], "target": [0.1, 0.7]}).to_csv(
        folder / "test_pred.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"stage": stage, "package": "melanoma"}))
    return folder


# Collectives in compiled HLO text, as (op, elements of each array it produces); shared with test_backend.
COLLECTIVES_CODE = """
import re
import numpy as np

def collectives(hlo):
    found = []
    for line in hlo.splitlines():
        m = re.search(r"\\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\\(", line)
        if m:
            found += [(m.group(1), int(np.prod([int(d) for d in dims.split(",") if d])))
                      for dims in re.findall(r"\\[([\\d,]*)\\]", line[:m.start()])]
    return found

def train_step_hlo(model, x, y):
    import jax
    from keras.src.backend.jax.trainer import _distribute_data
    model.optimizer.build(model.trainable_variables)
    model._symbolic_build(data_batch=(x, y))
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    return jax.jit(model.train_step).lower(state, _distribute_data((x, y))).compile().as_text()
"""
