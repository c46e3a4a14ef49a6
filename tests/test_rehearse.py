"""`make rehearse` in CI: the generated notebook executed on Kaggle's and Colab's package sets (scripts/rehearse.py).

It installs from the package registry the first time (cached in .rehearse/ after), so it is slow: minutes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 15 minutes the first time (three virtualenvs), less with them cached
def test_the_notebook_runs_on_every_image_and_ends_in_a_submission():
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "rehearse.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    summary = res.stdout[res.stdout.index("all passed"):]
    for image in ("kaggle-tpu", "colab-tpu", "kaggle-gpu"):
        line = next(ln for ln in summary.splitlines() if ln.strip().startswith(image))
        assert "Python 3.1" in line and "JAX" in line and "Keras 3.13.2" in line and "TensorFlow 2.2" in line, line
