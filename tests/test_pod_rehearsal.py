"""The pod-slice rehearsal (scripts/pod_rehearsal.py): 2 JAX processes x 4 CPU devices on localhost train
like 1 process x 8 devices, and a process that dies stops the other with one line, the run resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from test_train import N_FOLDS, run_cli, write_learnable_records

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pod_rehearsal.py"
TINY = ["train.model=simple_cnn", "train.size=32", "train.batch_size=4", "train.weights=none",
        f"n_folds={N_FOLDS}", "train.folds=[0]", "train.warmup_epochs=0"]


def rehearse(rec: Path, out: Path, *extra: str, timeout: int = 1500) -> tuple[dict, subprocess.CompletedProcess]:
    sets = [x for kv in TINY for x in ("--set", kv)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--tfrecords", str(rec), "--out", str(out), *sets, *extra],
                         capture_output=True, text=True, env=env, timeout=timeout)
    return json.loads(res.stdout.strip().splitlines()[-1]), res


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    write_learnable_records(root)
    return root


@pytest.mark.slow  # three JAX processes: minutes on 2 shared cores
def test_two_processes_write_one_run_like_one_process_of_eight_devices(rec, tmp_path):
    found, res = rehearse(rec, tmp_path, "--set", "train.epochs=1")
    assert res.returncode == 0, (found, res.stderr[-3000:])
    assert found["pod_rc"] == [0, 0] and found["same_files"], found
    assert found["once"] and found["test_once"] and found["oof_rows"] == found["oof_unique_ids"] == 40
    assert found["max_oof_difference"] <= 1e-4 and found["max_test_difference"] <= 1e-4, found
    logs = [(tmp_path / f"pod.process{i}.log").read_text() for i in range(2)]
    assert "hosts: process 0 of 2" in logs[0] and "hosts: process 1 of 2" in logs[1]
    # process 1 writes nothing but its log: every line it logs says whose it is
    own = [ln for ln in logs[1].splitlines() if ln[:2].isdigit() and ln[2] == ":"]
    assert own and all("[process 1/2]" in ln for ln in own), own[:3]


@pytest.mark.slow
def test_a_killed_process_stops_the_other_with_one_line_and_the_run_resumes(rec, tmp_path):
    """Process 1 is killed during the 2nd of 3 epochs: process 0 ends within the heartbeat bound with one
    error line, the run folder holds epoch 1's backup, and a 1-process run of the same command resumes it."""
    out = tmp_path / "pod"
    found, res = rehearse(rec, tmp_path, "--set", "train.epochs=3", "--no-frozen", "--heartbeat", "5",
                          "--kill-after-epochs", "1")
    assert found["pod_rc"][0] not in (0, None), found
    assert found["after_kill"][0] is not None and found["after_kill"][0] < 120, found
    last = found["last_lines"][0]
    assert len(last) == 1 and last[0].startswith("melanoma: error:"), found
    history = pd.read_csv(out / "fold0" / "history.csv")
    assert list(history["epoch"]) == [0], history
    assert (out / "fold0" / "backup").is_dir()
    sets = [x for kv in TINY for x in ("--set", kv)]
    resumed = run_cli(["train", "--tfrecords", str(rec), "--out", str(out), *sets, "--set", "train.epochs=3",
                       "--set", "train.backend=jax", "--set", "train.cpu_replicas=8", "--set", "train.hosts=1",
                       "--set", "train.tensorboard=false", "--set", "train.lr_max_per_image=1e-3"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert list(pd.read_csv(out / "fold0" / "history.csv")["epoch"]) == [0, 1, 2]
