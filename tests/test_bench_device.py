"""bench/device.sh, the device check prepared for the first accelerator, runs end to end in its dry run: the same
code at 32 px on the CPU, both backends, training with the augmentation in tf.data and in the model, TTA."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two backends' processes, six small compiles: 2-5 minutes on 2 shared cores
def test_device_check_dry_run_measures_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    res = subprocess.run([str(ROOT / "bench" / "device.sh"), "--dry-run", "--json", str(tmp_path / "out.json")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    figures = {(r["backend"], r["measure"]): r for r in results if r["kind"] == "figure"}
    for backend in ("tensorflow", "jax"):
        for measure in ("train_data", "train_model", "tta"):
            assert figures[(backend, measure)]["img_s"] > 0, (backend, measure)
    assert figures[("jax", "train_model")]["batch"] == 8  # 4 per device on 2 devices: DataParallel and prefetch
    assert figures[("jax", "tta")]["views"] == 5  # plain, 3 flips, 1 random view, made on the device
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| 20")]
    assert len(rows) == 2 and all(ln.count("|") == 11 for ln in rows)  # one RESULTS.md row per backend


def test_device_check_names_what_is_missing(tmp_path):
    """Without the frameworks it stops at once with one line naming them (the device machine installs nothing)."""
    bare = tmp_path / "bare"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    res = subprocess.run([str(bare / "bin" / "python"), str(ROOT / "bench" / "device.py"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("device.sh: error:") and "tensorflow" in lines[0]
