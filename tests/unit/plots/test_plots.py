"""Training-curve PNGs: right size, really drawn, and robust to missing columns, NaN and a single epoch."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.plots import nice_ticks, training_curves


def history(n: int = 8) -> pd.DataFrame:
    e = np.arange(n)
    return pd.DataFrame({"epoch": e, "loss": 0.7 * np.exp(-e / 4) + 0.1, "auc": 1 - 0.5 * np.exp(-e / 3),
                         "val_loss": 0.8 * np.exp(-e / 5) + 0.2, "val_auc": 0.9 - 0.4 * np.exp(-e / 3),
                         "learning_rate": np.where(e < 3, 1e-5 * (e + 1), 3e-5 * 0.8 ** (e - 3))})


def colours(png) -> set[tuple[int, int, int]]:
    img = Image.open(png).convert("RGB")
    return {c for _, c in img.getcolors(maxcolors=1 << 20)}


# Series colours (loss, val_loss, auc, val_auc, learning rate): each must appear where its column is present.
LOSS, VAL_LOSS, AUC, VAL_AUC, LR = (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)


def test_full_history(tmp_path):
    out = training_curves(history(), tmp_path / "fold0" / "curves.png", "fold 0")
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (960, 400)
    assert {LOSS, VAL_LOSS, AUC, VAL_AUC, LR} <= colours(out)
    assert not [p for p in out.parent.iterdir() if p.name != "curves.png"]  # atomic: no temporary left


@pytest.mark.parametrize("frame", [
    history().drop(columns=["val_loss", "val_auc", "learning_rate"]),  # no validation, no lr
    history().drop(columns=["epoch"]),  # epochs from the row order
    history(1),  # a single epoch: points, not lines
    history().assign(val_auc=lambda d: d.val_auc.where(d.epoch != 3)),  # a NaN breaks the line
    pd.DataFrame({"epoch": [0, 1], "loss": [np.nan, np.nan], "auc": ["x", None]}),  # nothing finite
    pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.5, 0.5, 0.5]}),  # flat line: no zero-height range
])
def test_partial_histories_still_draw(tmp_path, frame):
    out = training_curves(frame, tmp_path / "c.png", "partial", size=(640, 300))
    assert Image.open(out).size == (640, 300)
    found = colours(out)
    assert len(found) >= 3  # not blank: text, frame and grid at least
    for column, colour in (("loss", LOSS), ("auc", AUC), ("val_auc", VAL_AUC)):
        if column in frame and pd.to_numeric(frame[column], errors="coerce").notna().any():
            assert colour in found, column


def test_empty_history(tmp_path):
    out = training_curves(pd.DataFrame(columns=["epoch", "loss"]), tmp_path / "c.png", "empty")
    assert Image.open(out).size == (960, 400)


def test_nice_ticks():
    assert nice_ticks(0.31, 0.72) == [0.4, 0.5, 0.6, 0.7]
    assert nice_ticks(0, 11) == [0, 2.5, 5, 7.5, 10]
    assert nice_ticks(1.0, 1.0) == [1.0]
