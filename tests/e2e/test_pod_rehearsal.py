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

from helpers.paths import ROOT
from helpers.runs import N_FOLDS, write_learnable_records

SCRIPT = ROOT / "scripts" / "pod_rehearsal.py"
TINY = ["train.model=simple_cnn", "train.size=32", "train.batch_size=4", "train.weights=none",
        f"n_folds={N_FOLDS}", "train.folds=[0]", "train.optimizer.warmup_epochs=0"]


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
    """Process 1 is killed during the 2nd of 3 epochs: process 0 ends by itself (the heartbeat bound, 10 s
    here; the rehearsal's timeout would kill it otherwise) with one error line and no stack trace, the run
    folder holds epoch 1's backup, and the same 2-process command resumes from there."""
    out = tmp_path / "pod"
    sets = ("--set", "train.epochs=3", "--no-frozen", "--heartbeat", "10")
    found, res = rehearse(rec, tmp_path, *sets, "--kill-after-epochs", "1")
    assert found["pod_rc"][0] not in (0, -9, None), found  # -9: still running at the timeout
    log0 = (tmp_path / "pod.process0.log").read_text()
    assert found["last_lines"][0] == [log0.strip().splitlines()[-1]], found
    assert found["last_lines"][0][0].startswith("melanoma: error: another host of this job stopped"), found
    assert "Check failure stack trace" not in log0 and "Traceback" not in log0
    assert list(pd.read_csv(out / "fold0" / "history.csv")["epoch"]) == [0]
    # the backup resumes at epoch 1 (Keras counts the epoch to start at): the last completed epoch's state
    assert json.loads((out / "fold0" / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    found, res = rehearse(rec, tmp_path, *sets, "--pod-only")
    assert found["pod_rc"] == [0, 0], (found, res.stderr[-2000:])
    assert "resuming" in (tmp_path / "pod.process0.log").read_text()
    history = pd.read_csv(out / "fold0" / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2] and (out / "fold0" / "done.json").is_file()
