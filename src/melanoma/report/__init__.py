"""The evaluation report (`melanoma report`) and the paired comparison of two runs (`melanoma compare`).

- metrics: vectorised AUC, pAUC (ISIC 2024), average precision, calibration error, operating points, DeLong;
- evaluate: the patient bootstrap that gives every interval, ROC/PR bands and subgroup AUCs;
- calibration: isotonic / Platt calibrators fitted on OOF, saved as JSON for `blend.calibrate`;
- figures, gallery (+ gradcam), html: what the page shows; build: reading, orchestration, writing.
"""

from melanoma.report.build import compare, format_compare, report

__all__ = ["report", "compare", "format_compare"]
