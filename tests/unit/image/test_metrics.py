"""The training-time partial AUC (ISIC 2024's metric as a Keras metric) against the competition's definition."""

from __future__ import annotations

import numpy as np
import pytest

from melanoma.config import load_config
from melanoma.data.competition import ISIC2024, SIIM2020
from melanoma.image.metrics import PartialAUC, validation_metrics
from melanoma.scoring import partial_auc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_auc_metric_matches_the_competition_code(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(3000) < 0.05).astype("float32")
    p = np.clip(rng.normal(0.3 + 0.25 * y, 0.15), 0, 1).astype("float32")  # some signal, scores in [0, 1]
    m = PartialAUC()
    for start in range(0, len(y), 500):  # accumulated over batches, as during evaluation
        m.update_state(y[start:start + 500, None], p[start:start + 500, None])
    want = partial_auc(y, p)
    assert 0.02 < want < 0.2  # neither random nor perfect: the comparison means something
    assert float(m.result()) == pytest.approx(want, abs=2e-3)


def test_the_monitor_follows_the_competition():
    tcfg = load_config(None, ["train.weights=none"]).train
    metrics, monitor = validation_metrics(tcfg, ISIC2024)
    assert monitor == "val_pauc" and [m.name for m in metrics] == ["auc", "pauc"]
    metrics, monitor = validation_metrics(tcfg, SIIM2020)
    assert monitor == "val_auc" and [m.name for m in metrics] == ["auc"]
