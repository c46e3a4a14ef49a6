"""Post-hoc calibrators fitted on OOF predictions, saved as JSON so `blend` can apply them without refitting.

- isotonic: a monotone step function of the score (scikit-learn's IsotonicRegression), stored as its knots and
  applied with linear interpolation between them (what IsotonicRegression.predict does);
- platt: a logistic regression on the logit of the score, p = sigmoid(a * logit(s) + b). Scores outside
  (0, 1) are clipped first; ranks scaled to (0, 1] (a blend) are scores like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melanoma.errors import ConfigError, input_error
from melanoma.files import read_json, write_json

CALIBRATION_METHODS = ("isotonic", "platt")
_EPS = 1e-6


def _logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(s / (1.0 - s))


def fit(y, score, method: str = "isotonic") -> dict[str, Any]:
    """A calibrator as a JSON-ready dict (method and parameters)."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if len(np.unique(y)) < 2:
        raise ValueError("a calibrator needs both classes in the OOF predictions")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(score, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    from sklearn.linear_model import LogisticRegression

    # C large: plain maximum likelihood, as Platt scaling is defined (no shrinkage towards 0.5).
    lr = LogisticRegression(C=1e6).fit(_logit(score)[:, None], y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def apply(cal: dict[str, Any], score) -> np.ndarray:
    score = np.asarray(score, dtype=np.float64)
    if cal["method"] == "isotonic":
        return np.interp(score, np.asarray(cal["x"]), np.asarray(cal["y"]))
    z = cal["a"] * _logit(score) + cal["b"]
    return 1.0 / (1.0 + np.exp(-z))


def save_calibrator(path: str | Path, cal: dict[str, Any], **info: Any) -> Path:
    return write_json(path, {**cal, **info})


def load_calibrator(path: str | Path) -> dict[str, Any]:
    """A calibrator written by `save_calibrator` (the report's calibrator.json); one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "calibrator file not found (write one with `melanoma report`, or use "
                                "blend.calibrate: isotonic|platt to fit one on the blend's OOF)")
    try:
        cal = read_json(path)
    except ValueError as e:
        raise input_error(path, f"not valid JSON: {e}") from None
    needed = {"isotonic": ("x", "y"), "platt": ("a", "b")}.get(cal.get("method") if isinstance(cal, dict) else None)
    if needed is None or any(k not in cal for k in needed):
        raise input_error(path, "not a calibrator: expected method isotonic (x, y) or platt (a, b)")
    return cal
