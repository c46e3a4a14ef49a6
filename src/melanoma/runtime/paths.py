"""The paths a run reads and writes (`RunPaths`), resolved from the config and the place (on Kaggle or Colab,
the keys left at their defaults come from the place); the image run folders of a config (one, or one per
variant)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from melanoma.config import Config
from melanoma.runtime.place import Place, auto_paths


@dataclass(frozen=True)
class RunPaths:
    data: Path
    tfrecords: Path | str  # a str for gs:// URLs
    folds: Path
    image_run: Path
    tabular_run: Path
    submission: Path
    sample_submission: Path | None
    test_labels: Path | None


def resolve_paths(cfg: Config, place: Place | None = None) -> RunPaths:
    """The config's paths; on Kaggle or Colab, the keys left at their defaults come from the place
    (melanoma.runtime.place; `place` fakes one in tests)."""
    p = auto_paths(cfg, place)
    data, runs = Path(p.data), Path(p.runs)
    sample = Path(p.sample_submission) if p.sample_submission else data / "sample_submission.csv"
    # A gs:// URL stays a string: Path would fold its "//" (the TFRecord reader goes through tf.io.gfile).
    tfrecords = p.tfrecords if "://" in p.tfrecords else Path(p.tfrecords)
    return RunPaths(data=data, tfrecords=tfrecords, folds=runs / "folds.csv", image_run=runs / "image",
                    tabular_run=runs / "tabular", submission=Path(p.submission),
                    sample_submission=sample if sample.is_file() or p.sample_submission else None,
                    test_labels=Path(p.test_labels) if p.test_labels else None)


def image_run_configs(cfg: Config, paths: RunPaths) -> list[tuple[Config, Path]]:
    """The image models to train: the train section into PATHS.runs/image, or each variant (melanoma.config.variants)
    into PATHS.runs/image-NAME."""
    if not cfg.variants:
        return [(cfg, paths.image_run)]
    from melanoma.config.variants import variant_configs, variant_dir

    return [(vcfg, variant_dir(paths.image_run.parent, name)) for name, vcfg in variant_configs(cfg)]
