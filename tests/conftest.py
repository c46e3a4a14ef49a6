"""Shared fixtures: tiny competition-layout folders made from the shipped demo images or generated ones."""

from __future__ import annotations

import os
from pathlib import Path

# Quiet TensorFlow's C++ logging; tests only (it must be set before TensorFlow is imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# bench/ tooling the tests drive too (bench/loadtest.py: the serving load generator)
import sys  # noqa: E402

import pandas as pd
import pytest
from helpers.layouts import copy_demo_layout, textured_layout  # noqa: F401
from helpers.paths import DEMO, ROOT, SHARED  # noqa: F401

sys.path.insert(0, str(ROOT / "bench"))






@pytest.fixture
def demo_subset(tmp_path) -> Path:
    """40 training and 10 test images of the shipped demo set, in competition layout."""
    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"})
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"})
    train = pd.concat([train[train.target == 1].head(14), train[train.target == 0].head(26)]).sort_values(
        "image_name")
    test = test.head(10)
    root = tmp_path / "data"
    copy_demo_layout(root, train, test)
    test[["image_name"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    return root












@pytest.fixture
def textured_data(tmp_path) -> Path:
    return textured_layout(tmp_path / "data")






def pytest_addoption(parser):
    parser.addoption("--shared-data", action="store_true",
                     help="also run the tests marked shared_data, which read ../shared (not part of the repository)")


def pytest_collection_modifyitems(config, items):
    """Tests that read ../shared are left out (deselected, never skipped) unless --shared-data asks for them:
    the suite depends only on what the repository holds."""
    if not config.getoption("--shared-data"):
        kept = [item for item in items if "shared_data" not in item.keywords]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if "shared_data" in item.keywords])
            items[:] = kept
    if any("accelerator" in item.keywords for item in items):
        found = accelerators()
        for item in items:
            if "accelerator" in item.keywords and not found:
                item.add_marker(pytest.mark.skip(reason="no GPU or TPU visible (accelerator test)"))


def accelerators() -> list[str]:
    """The GPUs/TPUs this machine shows (nvidia-smi or a TPU device node), without importing a framework."""
    import shutil
    import subprocess

    found = [f"tpu {p}" for p in ("/dev/accel0", "/dev/vfio/0") if Path(p).exists()]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        found += [line for line in out.splitlines() if line.startswith("GPU")]
    return found


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from helpers.runs import (
        write_learnable_records,  # imports TensorFlow: only when a test asks
    )

    root = tmp_path_factory.mktemp("records")
    train_names, test_names = write_learnable_records(root)
    return root, train_names, test_names
