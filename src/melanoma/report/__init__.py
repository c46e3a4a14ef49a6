"""The evaluation report (`melanoma report`) and the paired comparison of two runs (`melanoma compare`).

- metrics: vectorised AUC, pAUC (ISIC 2024), average precision, calibration error, operating points, DeLong;
- evaluate: the patient bootstrap that gives every interval, ROC/PR bands and subgroup AUCs;
- calibration: isotonic / Platt calibrators fitted on OOF, saved as JSON for `blend.calibrate`;
- figures, gallery (+ gradcam), html: what the page shows; build: reading, orchestration, writing;
- stage: the `report` stage of `melanoma run`; commands: the `report` and `compare` commands.

report, compare and format_compare load lazily (PEP 562): `import melanoma.report.commands` never imports
SciPy or scikit-learn, so `melanoma --help` stays fast.
"""

__all__ = ["report", "compare", "format_compare"]


def __getattr__(name: str):
    if name in __all__:
        from melanoma.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
