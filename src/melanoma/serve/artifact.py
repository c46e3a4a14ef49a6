"""The exported artefact: model.json (everything inference needs) and the model it describes.

`Artifact.load(model_dir)` gives one object that `predict` and `serve` share: the image preprocessing
(`melanoma.data.images.model_input` with prepare's settings), the metadata encoding (melanoma.data.metadata,
the one definition training uses too), the model call, the calibrator and the thresholds.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.data.schema import AGE, SEX, SITE
from melanoma.errors import ConfigError, input_error
from melanoma.files import read_json
from melanoma.data import metadata
from melanoma.data.images import ImageSettings, model_input

FORMAT_VERSION = 1
MODEL_FILE, INFO_FILE = "model.keras", "model.json"
MAX_AGE = 120.0


class BadMetadata(ValueError):
    """A metadata value the model cannot take; the message names the field, the value and what is allowed."""


# ---------------------------------------------------------------- calibrator (the report's, melanoma.calibration)

def apply_calibrator(p: np.ndarray, calibrator: dict | None) -> np.ndarray:
    """The exported calibrator applied as the report and the blend apply it; identity without one."""
    from melanoma import calibration

    return p if calibrator is None else calibration.apply(calibrator, p)


# ---------------------------------------------------------------- metadata

@dataclass(frozen=True)
class MetaEncoder:
    """Raw sex / age / site -> record codes -> the network's vector (melanoma.data.metadata.encode)."""

    sex: tuple[str, ...]
    site: tuple[str, ...]

    @classmethod
    def from_info(cls, meta: dict) -> MetaEncoder:
        return cls(tuple(meta["vocab"][SEX]), tuple(meta["vocab"][SITE]))

    def codes(self, sex: Any = None, age: Any = None, site: Any = None) -> tuple[int, int, int]:
        """Validated codes (-1 = missing); BadMetadata names the field and what it accepts."""
        return (self._code(SEX, sex, self.sex), self._age(age), self._code(SITE, site, self.site))

    @staticmethod
    def _code(field: str, value: Any, vocab: tuple[str, ...]) -> int:
        if _missing(value):
            return -1
        v = str(value).strip().lower()
        if v not in vocab:
            raise BadMetadata(f"{field} {value!r} is not one of: {', '.join(vocab)} (or empty for unknown)")
        return vocab.index(v)

    @staticmethod
    def _age(value: Any) -> int:
        if _missing(value):
            return -1
        try:
            age = float(value)
        except (TypeError, ValueError):
            raise BadMetadata(f"{AGE} {value!r} is not a number") from None
        if not math.isfinite(age) or not 0 <= age <= MAX_AGE:
            raise BadMetadata(f"{AGE} {value!r} must be between 0 and {MAX_AGE:g} (or empty for unknown)")
        return int(round(age))  # records store whole years (prepare rounds)

    @staticmethod
    def vector(codes: tuple[int, int, int]) -> np.ndarray:
        return metadata.encode(*(np.int64(c) for c in codes))

    @staticmethod
    def is_empty(codes: tuple[int, int, int]) -> bool:
        """No metadata at all: the image alone is scored (the model learnt this case by row dropout)."""
        return all(c < 0 for c in codes)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


# ---------------------------------------------------------------- the artefact

class Artifact:
    """A loaded export: info (model.json), the Keras model, and the functions around it."""

    def __init__(self, info: dict, model, model_dir: Path):
        self.info, self.model, self.dir = info, model, model_dir
        inp = info["input"]
        self.size = int(inp["size"])
        p = inp["prepare"]
        self.settings = ImageSettings(int(p["size"]), p["resize"], int(p["quality"]), int(p["max_pixels"]),
                                      **lesion_settings(p.get("lesion") or {}, model_dir))
        self.stored_size = inp["stored_size"]
        self.uses_meta = bool(info["metadata"]["used"])
        self.meta = MetaEncoder.from_info(info["metadata"])
        self.meta_dim = metadata.META_DIM
        self.calibrator = info.get("calibrator")
        self.thresholds: dict[str, float] = dict(info.get("thresholds") or {})
        self.version = str(info["model_version"])

    @classmethod
    def load(cls, model_dir: str | Path) -> Artifact:
        model_dir = Path(model_dir)
        info_path = model_dir / INFO_FILE
        if not info_path.is_file():
            raise input_error(model_dir, f"no {INFO_FILE}: not a folder written by `melanoma export`")
        try:
            info = read_json(info_path)
        except (ValueError, UnicodeDecodeError) as e:
            raise input_error(info_path, f"not valid JSON ({' '.join(str(e).split())}): the export is damaged; "
                                         "re-run `melanoma export`") from None
        if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
            found = info.get("format_version") if isinstance(info, dict) else None
            raise input_error(info_path, f"format_version {found!r} is not {FORMAT_VERSION}: re-export the run "
                                         "with this version")
        meta = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
        problem = metadata.layout_problem(meta.get("layout"), info_path) if meta.get("used") else None
        if problem:  # an older metadata model: its input has another width, refused in one line
            raise ConfigError(problem)
        model = load_keras_model(model_dir / MODEL_FILE)
        try:
            return cls(info, model, model_dir)
        except (KeyError, TypeError, ValueError) as e:  # a hand-edited or truncated-then-repaired file
            raise input_error(info_path, f"incomplete or malformed ({type(e).__name__}: {e}): re-run "
                                         "`melanoma export`") from None

    def preprocess(self, data: bytes) -> np.ndarray:
        """Image bytes -> model input (raises melanoma.data.images.BadImage)."""
        return model_input(data, self.settings, self.size, self.stored_size)

    def predict(self, images: np.ndarray, meta: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (float64, one per image) for a batch of model inputs (and metadata vectors)."""
        x = {"image": images, "meta": meta} if self.uses_meta else images
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float64).reshape(-1)

    def calibrated(self, p: np.ndarray) -> np.ndarray:
        return apply_calibrator(p, self.calibrator)

    def labels(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """0/1 per threshold name: malignant when the (uncalibrated) probability reaches the threshold."""
        return {name: (p >= t).astype(np.int64) for name, t in self.thresholds.items()}

    def threshold(self, name: str | None) -> tuple[str, float]:
        """The named threshold (None: the first exported one)."""
        if name is None:
            name = next(iter(self.thresholds))
        if name not in self.thresholds:
            raise ConfigError(f"serve.threshold {name!r} is not in model.json (exported: "
                              f"{', '.join(self.thresholds)})")
        return name, self.thresholds[name]


def lesion_settings(lesion: dict, model_dir: Path) -> dict:
    """The lesion step model.json records (exports before it had none), with the shipped segmenter's path."""
    mode = lesion.get("mode", "none")
    segmenter = lesion.get("segmenter") if mode != "none" else None
    path = model_dir / segmenter if segmenter else None
    if path is not None and not path.is_file():
        raise input_error(path, "model.json's lesion step needs this segmenter: re-run `melanoma export`")
    return {"lesion": mode, "lesion_margin": float(lesion.get("margin", 0.1)),
            "segmenter": str(path) if path else None, "segmenter_sha256": lesion.get("segmenter_sha256")}


def load_keras_model(path: Path):
    """model.keras without its training state; our custom layers register themselves on import."""
    if not path.is_file():
        raise input_error(path, "not found: re-run `melanoma export`")
    if not zipfile.is_zipfile(path):  # Keras would call a truncated archive "File not found"
        raise input_error(path, f"not a complete .keras archive ({path.stat().st_size} bytes: truncated or "
                                "damaged): re-run `melanoma export`")
    import keras

    import melanoma.image.models  # noqa: F401  (registers ImagenetPreprocess)
    import melanoma.image.augment  # noqa: F401  (registers Flip)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras reports a damaged archive as anything from ValueError to OSError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise input_error(path, f"cannot be loaded ({type(e).__name__}: {first}): the file is damaged; re-run "
                                "`melanoma export`") from None
