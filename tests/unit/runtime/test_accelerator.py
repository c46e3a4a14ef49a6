"""On a machine with a GPU or TPU (skipped elsewhere): the backend melanoma picks sees it, and a tiny training
runs on it (`pytest -m accelerator` on such a machine). No CPU fallback may pass them."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from helpers.runs import train_args, write_learnable_records

pytestmark = pytest.mark.accelerator


def test_doctor_sees_the_accelerator_and_lists_no_problem():
    out = subprocess.run([sys.executable, "-m", "melanoma", "doctor", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["devices"]["kind"] in ("gpu", "tpu"), report["devices"]
    assert report["problems"] == []


def test_a_tiny_training_runs_on_the_accelerator(tmp_path):
    rec = tmp_path / "rec"
    write_learnable_records(rec)
    out = subprocess.run([sys.executable, "-m", "melanoma", *train_args(rec, tmp_path / "run", 2)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    devices = next(line for line in out.stderr.splitlines() if "train: backend" in line).lower()
    assert "gpu" in devices or "tpu" in devices, devices  # the accelerator, never a CPU fallback
    oof = pd.read_csv(tmp_path / "run" / "oof.csv")
    assert oof["pred"].notna().all() and len(oof) > 0
