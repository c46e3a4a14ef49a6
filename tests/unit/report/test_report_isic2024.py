"""`melanoma report` on ISIC 2024 runs: pAUC leads (log, report.json, the summary table), and the patients and
sites come from train-metadata.csv / test-metadata.csv."""

from __future__ import annotations

import json
import logging

from helpers.isic2024 import make_small_set, write_image_run
from melanoma.blend import run_blend
from melanoma.config import Config, apply_overrides
from melanoma.report import report


def test_report_leads_with_pauc_and_reads_the_2024_metadata(tmp_path, caplog):
    data, folds = make_small_set(tmp_path)
    image = write_image_run(tmp_path / "image", folds, data, signal=0.5, seed=1)
    tabular = write_image_run(tmp_path / "tabular", folds, data, signal=0.2, seed=2)
    cfg = apply_overrides(Config(), {"paths.data": str(data), "paths.tfrecords": str(tmp_path / "no-records"),
                                     "paths.test_labels": str(data / "test_labels.csv"),  # isic_id,target
                                     "report.bootstrap": 30, "report.gallery_size": 0, "report.gradcam": False,
                                     "report.min_positives": 1})
    run_blend(cfg, [image, tabular], tmp_path / "sub" / "submission.csv", data / "sample_submission.csv")
    with caplog.at_level(logging.INFO, logger="melanoma.report.build"):
        rep = report(cfg, [image, tabular, tmp_path / "sub" / "blend.json"], tmp_path / "report")
    assert rep["metric"] == "pauc" and [r["metric"] for r in rep["runs"]] == ["pauc"] * 3
    assert rep["settings"]["resampling"] == "patients" and rep["runs"][0]["oof"]["units"] == 12
    assert "site" in rep["runs"][0]["oof"]["subgroups"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.index("pAUC above 80% TPR") < page.index("AUC [95% CI]")
    assert any(m.startswith("report: image OOF pAUC ") and ", AUC " in m for m in caplog.messages)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["metric"] == "pauc"
