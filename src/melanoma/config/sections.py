"""The config's sections: one dataclass per section, every setting declared once with `setting(default, help)`
(the help is the CLI flag's help: config/flags.py). The train section is in config/train.py. Loading, overrides
and checks: melanoma.config.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from melanoma.config.train import AugmentConfig, TrainConfig  # noqa: F401  (re-exported)
from melanoma.names import owner_problem, slug_problem
from melanoma.config.typed import (  # noqa: F401  (re-exported)
    Count, Dropout, NonNegative, Positive, PositiveInt, Range, Seed, Share, setting,
)


# The stages of `melanoma run`, in order: declared here once (the stage registry checks its names against it).
Stage = Literal["folds", "prepare", "train", "tabular", "blend", "report"]
STAGES: tuple[str, ...] = typing.get_args(Stage)

@dataclass
class PathsConfig:
    """Where the stages of `melanoma run` read and write (each stage command also takes them as flags)."""

    data: str = setting("data/demo", 'competition layout: train.csv, test.csv, jpeg/train, jpeg/test')
    tfrecords: str = setting("tfrecords/demo",
        'the sharded TFRecords: written by prepare, read by train (a gs:// path works)')
    runs: str = setting("runs/demo", 'folds.csv, image/ and tabular/ run folders go here')
    submission: str = setting("submissions/submission.csv", "the blend's submission.csv (blend.json beside it)")
    sample_submission: str | None = setting(None, 'default: DATA/sample_submission.csv when it exists')
    test_labels: str | None = setting(None, 'optional image_name,target file to report a held-out test AUC')


@dataclass
class DataConfig:
    """How train.csv and test.csv are read (every stage reads them the same way)."""

    patient_id: Literal["required", "per_image"] = setting("required",
        "required: a patient_id column must exist (without it a patient's images could land in several folds and "
        'leak); per_image: without one, each image is its own patient (the ISIC archive has no ids). Empty ids in an '
        'existing column always mean one patient per image (said in the log).')


@dataclass
class PrepareConfig:
    size: Annotated[int, Range(16, 4096)] = setting(256, 'stored image side in pixels')
    resize: Literal["crop", "pad", "stretch"] = setting("crop",
        'crop: center-crop to square; pad: pad to square; stretch: ignore aspect ratio')
    quality: Annotated[int, Range(1, 100)] = setting(95, 'JPEG quality of the stored images')
    shard_mb: Positive = setting(150.0, 'target shard size; TPU input wants about 100-200 MB')
    workers: Count = setting(0, 'processes decoding images in parallel (0 = one per core)')
    on_bad_image: Literal["fail", "skip"] = setting("fail",
        'fail: stop naming the file and CSV row; skip: log, list in the manifest, leave out')
    max_pixels: PositiveInt = setting(200_000_000, "larger images are bad images (PIL's bomb limit, made a setting)")
    dup_max_distance: Annotated[int, Range(0, 15)] = setting(4,
        'near-duplicates: dHash (64 bits) within this many bits')
    duplicates: str | None = setting(None,
        'optional duplicates CSV (image_name_1, image_name_2), as the competition ships')
    drop_duplicates: bool = setting(False, 'keep one image per duplicate group (else: duplicates share a fold)')
    external: list[str] = setting(default_factory=list, help='extra training data folders (ISIC 2019 or competition)')
    upsample_malignant: PositiveInt = setting(1,
        'extra copies of malignant training images (train-only shards; 1 = none)')
    lesion: Literal["none", "mask", "crop"] = setting("none",
        'Lesion step before the resize (the same in prepare, predict and serve): none | mask (background blacked out)'
        ' | crop (a square box around the lesion, with lesion_margin). Masks come from prepare.segmenter, else the '
        'classical method (Otsu on darkness + saturation, largest component, holes filled; melanoma.segment).')
    segmenter: str | None = setting(None,
        'a `melanoma segment train` folder (or its segmenter.keras); None: classical')
    lesion_margin: Annotated[float, Range(0, 2)] = setting(0.1,
        'crop: added on each side, as a share of the lesion box side')


@dataclass
class TabularConfig:
    hidden: list[PositiveInt] = setting(default_factory=lambda: [64, 32], help="mlp: units of the hidden layers")
    dropout: Dropout = setting(0.2, "mlp: dropout after each hidden layer")
    epochs: PositiveInt = setting(40, "mlp: training epochs")
    batch_size: PositiveInt = setting(256, "mlp: rows per step")
    learning_rate: Positive = setting(1e-3, "mlp: Adam learning rate")
    smote: bool = setting(True, "mlp_smote: oversample the minority class with SMOTE inside each training fold")
    smote_k: PositiveInt = setting(5, 'SMOTE k_neighbors (lowered automatically for tiny minority classes)')
    smote_ratio: Annotated[float, Range(0, 1, min_open=True)] = setting(0.5,
        'minority / majority after SMOTE (imblearn sampling_strategy)')
    model: Literal["auto", "mlp_smote", "logreg", "gbm", "lgbm", "hgb", "xgboost", "catboost", "all"] = setting(
        "auto", 'auto | mlp_smote | logreg | gbm | lgbm | hgb | xgboost | catboost | all. auto: each of auto_models in '
        "RUN/<model>/, the best OOF score (the competition's metric) at RUN/ itself; all: the same over every model "
        'of the competition. siim2020: mlp_smote, logreg, gbm, lgbm, hgb; isic2024: lgbm, hgb, xgboost, catboost '
        '(the last two when installed)')
    auto_models: list[Literal["mlp_smote", "logreg", "gbm", "lgbm", "hgb", "xgboost", "catboost"]] = setting(
        default_factory=lambda: ["lgbm", "hgb", "logreg"],
        help="the models `auto` trains and chooses among (isic2024: those of its models listed here)")
    seeds: PositiveInt | None = setting(None,
        'isic2024: models per fold, each with its own seed and its own draw of negatives, predictions averaged '
        '(None: 3)')
    negative_ratio: Count | None = setting(None,
        'isic2024: negatives kept per positive in each training fold, drawn at random per seed (validation and '
        'test rows are all predicted); 0 keeps every negative (None: 20)')
    image_runs: list[str] = setting(default_factory=list, help=
        "Image run folders (oof.csv, test_pred.csv, on the same folds.csv) whose out-of-fold predictions become "
        "features, joined by id, with their z-score and rank within the patient")
    test_predictions: Literal["fold_mean", "refit"] = setting("fold_mean",
        'Test predictions: fold_mean (the mean of the fold models) | refit (one more model on every training row)')
    context: bool = setting(True, 'patient-context features (images per patient, age rank, site share, ...)')
    logreg_C: Positive = setting(1.0, 'inverse L2 strength of the logistic regression')
    gbm_max_iter: PositiveInt = setting(300, 'boosting rounds (an upper bound with early stopping)')
    gbm_learning_rate: Positive = setting(0.05, "gbm: shrinkage per round")
    gbm_max_leaf_nodes: Annotated[int, Range(2)] = setting(15, 'leaves per tree')
    gbm_min_samples_leaf: PositiveInt = setting(40, 'rows per leaf at least: guards against fitting the few positives')
    gbm_early_stopping: bool = setting(True, 'stop on the log-loss of a seeded 10% of the training fold')
    gbm_importance_repeats: Count = setting(3, 'permutation-importance shuffles per feature and fold (0: none)')
    image_size: Literal["auto", "off"] = setting("auto",
        "Original image width/height as features: auto (from train.csv/test.csv, else the TFRecords folder's "
        "image_sizes.csv or the public TFRecords' train.csv/test.csv) | off (never used)")
    image_stats: Literal["auto", "off"] = setting("auto",
        'File size and colour statistics of each image (mean/std per channel, centre-vs-border contrast) and their '
        "difference from the patient's mean: auto (from DATA/jpeg/, else the TFRecords folder, when every image is "
        'there; cached in RUN/image_stats.csv) | off')
    inner_validation: Annotated[float, Range(0, 0.5, min_open=True)] = setting(0.2,
        'lgbm and hgb: early stopping on this share of the training patients, held out whole, then a refit')
    early_stopping_rounds: PositiveInt = setting(50, 'rounds without a better inner-validation score before stopping '
                                                     "(siim2020's lgbm and hgb, on the log-loss)")
    pauc_patience: PositiveInt = setting(200,
        "isic2024: rounds without a better pAUC of the held-out patients before the trees stop (pAUC on a few dozen "
        'positives stays flat for dozens of rounds: 50 stopped some seeds after a handful)')
    lgbm_max_rounds: PositiveInt = setting(2000, "lgbm: boosting rounds at most (early stopping ends sooner)")
    lgbm_learning_rate: Positive = setting(0.02, "lgbm: shrinkage per round")
    lgbm_num_leaves: Annotated[int, Range(2)] = setting(7, "lgbm: leaves per tree")
    lgbm_min_child_samples: PositiveInt = setting(100, 'rows per leaf at least')
    lgbm_feature_fraction: Annotated[float, Range(0, 1, min_open=True)] = setting(0.6, 'features tried per tree')
    lgbm_bagging_fraction: Annotated[float, Range(0, 1, min_open=True)] = setting(0.8, 'rows drawn per tree')
    lgbm_lambda_l2: NonNegative = setting(5.0, "lgbm: L2 penalty on leaf values")
    hgb_max_iter: PositiveInt = setting(1000, "hgb: boosting rounds at most (early stopping ends sooner)")
    hgb_learning_rate: Positive = setting(0.03, "hgb: shrinkage per round")
    hgb_max_leaf_nodes: Annotated[int, Range(2)] = setting(7, "hgb: leaves per tree")
    hgb_min_samples_leaf: PositiveInt = setting(100, "hgb: rows per leaf at least")
    hgb_l2_regularization: NonNegative = setting(5.0, "hgb: L2 penalty on leaf values")
    hgb_max_features: Annotated[float, Range(0, 1, min_open=True)] = setting(0.6, 'features tried per split')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        if not self.auto_models:
            return "auto_models: expected at least one model, got []"
        return None if self.hidden else "hidden: expected at least one layer size, got []"


@dataclass
class BlendConfig:
    step: Annotated[float, Range(0, 1, min_open=True)] = setting(0.05,
        'grid step of the weight search on the OOF predictions')
    method: Literal["weighted", "rank", "power"] = setting("weighted",
        'weighted: rank mean, weights fitted on OOF AUC | rank: plain rank average | power: power mean of ranks')
    power: Annotated[float, Range(-10, 10)] = setting(2.0,
        'exponent of method: power (0 = geometric mean; higher favours confident runs)')
    tabular_weight: Share | None = setting(None,
        'Total weight of the metadata runs (run.json stage "tabular"), e.g. 0.25; None: as found by the method.')
    calibrate: str = setting("none",
        'Calibrate the blended score into a probability: none | isotonic | platt (fitted on the blended OOF) | the '
        'path of a calibrator.json written by `melanoma report` (fitted on the same kind of score).')
    partial: bool = setting(False,
        'When training stopped at train.checkpoints.time_budget with folds left, `melanoma run` skips tabular and '
        'blend (no submission) until a later session finishes them; true: blend the finished folds anyway')


@dataclass
class ReportConfig:
    """`melanoma report` and the report stage of `melanoma run` (see melanoma.report)."""

    out: str | None = setting(None, 'report folder; default: PATHS.runs/report')
    bootstrap: Annotated[int, Range(0, 100_000)] = setting(1000, 'patient resamples for the 95% intervals (0: none)')
    seed: Seed | None = setting(None, "bootstrap seed; None: the config's seed")
    sensitivities: list[Annotated[float, Range(0, 1, min_open=True)]] = setting(
        default_factory=lambda: [0.8, 0.9, 0.95], 
        help="operating points: thresholds on the OOF for these sensitivities")
    min_positives: PositiveInt = setting(5, 'a subgroup with fewer positives gets no AUC, only a note')
    size_groups: PositiveInt = setting(6, 'image-size (camera) subgroups: the most common sizes; the rest are "other"')
    calibration: Literal["isotonic", "platt", "none"] = setting("isotonic", 'post-hoc calibrator fitted on the OOF')
    calibration_bins: Annotated[int, Range(2, 100)] = setting(10,
        'equal-width bins of the reliability diagram and ECE')
    gallery_size: Count = setting(6, 'most confident false negatives and false positives shown (each)')
    gradcam: bool = setting(True, 'heat maps in the gallery (image runs with their fold weights)')


@dataclass
class KaggleConfig:
    """Kaggle and Colab settings: `melanoma kaggle ...`, `melanoma submit` and the auto-detected paths.

    Credentials are never config keys: they stay in ~/.kaggle or the environment (see melanoma.kaggle.api).
    """

    competition: str = setting("siim-isic-melanoma-classification", "the Kaggle competition slug")
    username: str | None = setting(None, 'kernel owner; default: the username of the credentials')
    slug: str = setting("melanoma-tpu", 'kernel id is USERNAME/SLUG; the title must slugify to it')
    title: str = setting("Melanoma TPU", "the notebook's title on Kaggle")
    accelerator: Literal["tpu", "gpu", "none"] = setting("tpu", 'tpu (TPU v5e-8) | gpu (T4 x2) | none')
    private: bool = setting(True, "push the notebook as private")
    internet: bool = setting(True, "the notebook pip-installs the package's dependencies")
    source: str = setting("https://github.com/YOUR-GITHUB-NAME/melanoma.git",
        'Where the notebook gets this repository: a git URL (needs internet) or /kaggle/input/<dataset>')
    colab_root: str = setting("/content/drive/MyDrive/melanoma", 'in Colab: data, runs, submission under this folder')
    colab_tfrecords: str | None = setting(None, 'in Colab: TFRecords folder, e.g. gs://BUCKET/melanoma-384x384')
    chain: bool = setting(False,
        "Chain sessions: the pushed notebook takes its own previous version's output as an input (kernel_sources) and"
        " `melanoma run` continues from the finished folds found there (Kaggle's 9-hour limit per session).")
    wheels: str | None = setting(None,
        'Offline notebooks (internet off): the slug of your dataset of wheels, from `melanoma kaggle wheels`.')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        # Each becomes part of a path (data/<competition>, runs/kaggle/<slug>) and of a Kaggle id.
        return (slug_problem(self.slug, "slug") or slug_problem(self.competition, "competition")
                or (owner_problem(self.username, "username") if self.username is not None else None))


@dataclass
class SegmentConfig:
    """`melanoma segment train`: a small U-Net (Dice + BCE) on ISIC_x.jpg images and ISIC_x_segmentation.png masks."""

    size: Annotated[int, Range(16, 1024)] = setting(128, 'network input side (images and masks are resized to it)')
    width: PositiveInt = setting(16, 'filters of the first level, doubled at each level down')
    depth: Annotated[int, Range(1, 6)] = setting(3, 'poolings; size must be divisible by 2**depth')
    epochs: PositiveInt = setting(20, 'training epochs of steps_per_epoch batches each')
    steps_per_epoch: Count = setting(0, 'batches per epoch (0: one pass over the training images)')
    batch_size: PositiveInt = setting(16, 'image/mask pairs per training step')
    learning_rate: Positive = setting(1e-3, 'Adam')
    dice_weight: Share = setting(0.5, 'loss = dice_weight x soft Dice loss + (1 - dice_weight) x binary cross-entropy')
    val_share: Annotated[float, Range(0, 1, True, True)] = setting(0.2,
        'images held out (per image: no patient ids) for Dice/Jaccard')
    threshold: Annotated[float, Range(0, 1, True, True)] = setting(0.5, 'probability above which a pixel is lesion')
    augment: bool = setting(True, 'random flips and transposes of image and mask together')
    seed: Seed | None = setting(None, "split and initialisation; None: the config's seed")
    figure_images: Count = setting(6, 'held-out predictions drawn in predictions.png')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        if self.size % 2 ** self.depth:
            return f"size: {self.size} is not divisible by 2**depth = {2 ** self.depth}: change size or depth"
        return None


@dataclass
class SynthConfig:
    """`melanoma synth`: per fold, a CycleGAN turns benign training images into synthetic melanomas (melanoma.synth).

    The defaults are the seeds' recipe: least-squares GAN loss, cycle weight 10, identity weight 1, Adam 2e-4 with
    beta1 0.5, instance norm, a U-Net (256 px) or ResNet-9 (224 px) generator and a 70x70 PatchGAN."""

    out: str | None = setting(None, 'folder to write (default: train.sources.synthetic)')
    generator: Literal["unet", "resnet9"] = setting("unet",
        'unet: pix2pix U-Net with skips | resnet9: ResNet blocks between 2 down/up-samplings')
    size: Annotated[int, Range(16, 1024)] = setting(256,
        'side the CycleGAN works at (a multiple of 4); outputs are resized to the stored side')
    gen_filters: PositiveInt = setting(64,
        'generator width: filters of its first layer (doubled per level, at most x8)')
    disc_filters: PositiveInt = setting(64, 'PatchGAN width: filters of its first layer')
    disc_layers: Annotated[int, Range(1, 6)] = setting(3, 'PatchGAN stride-2 convolutions (3: the 70x70 PatchGAN)')
    unet_depth: Annotated[int, Range(1, 8)] = setting(8,
        'U-Net down-samplings at most (fewer when the side stops halving evenly)')
    resnet_blocks: PositiveInt = setting(9, 'residual blocks of the resnet9 generator')
    cycle_weight: NonNegative = setting(10.0, 'weight of the L1 cycle-consistency loss (each direction)')
    identity_weight: NonNegative = setting(1.0, 'weight of the L1 identity loss: G(malignant) should stay malignant')
    learning_rate: Positive = setting(2e-4, 'Adam, both generators and both discriminators')
    beta_1: Share = setting(0.5, "Adam's first-moment decay")
    decay_from: Share = setting(0.5,
        'the learning rate falls linearly to 0 over the steps after this share of the budget')
    batch_size: PositiveInt = setting(1, 'image pairs per step (CycleGAN: 1)')
    steps: PositiveInt = setting(20000, 'step budget per fold: training stops there (a re-run continues up to it)')
    checkpoint_every: PositiveInt = setting(500,
        'steps between checkpoints (weights, optimizer state, step, loss history)')
    sample_every: PositiveInt = setting(1000,
        'steps between sample grids (real, translated, cycled); one more at the end')
    sample_images: PositiveInt = setting(4, 'rows of each sample grid')
    flip: bool = setting(True, 'random flips and transposes of the training images (lesions have no up)')
    folds: list[Count] | None = setting(None, 'folds to synthesise for (None = all)')
    max_images: PositiveInt | None = setting(None, 'benign training images translated per fold (None = every one)')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        if self.size % 4:
            return f"size: {self.size} is not a multiple of 4 (both generators down-sample twice): change it"
        if self.folds is not None and (not self.folds or len(set(self.folds)) != len(self.folds)):
            return f"folds: expected distinct fold numbers (or null for all), got {self.folds}"
        return None


@dataclass
class ExportConfig:
    """`melanoma export RUN_DIR --out model/`: a trained image run as one inference artefact."""

    combine: Literal["ensemble", "average"] = setting("ensemble",
        "ensemble: every fold model inside one .keras, predictions averaged (what the run's test_pred.csv is); "
        'average: one model holding the mean of the fold weights (1/K of the cost; the folds share initial weights)')
    folds: list[Count] | None = setting(None, 'folds to export (None = every finished fold)')
    tta_flips: bool | None = setting(None, 'average the 3 flips inside the model (None: as trained, train.tta_flips)')
    savedmodel: bool = setting(True, 'also a TensorFlow SavedModel (TF Serving), on the TensorFlow backend')
    onnx: bool = setting(True, 'also model.onnx where tf2onnx is installed and converts the backbone')
    report: str | None = setting(None,
        'folder with calibrator.json / report.json (default: RUN_DIR/report if present)')
    tfrecords: str | None = setting(None, "the run's TFRecords folder, for manifest.json (default: paths.tfrecords)")


@dataclass
class PredictConfig:
    """`melanoma predict`: batch prediction on plain image files."""

    batch_size: PositiveInt = setting(32, 'images per model call')
    workers: Count = setting(0, 'threads decoding images in parallel (0 = one per core)')
    image_dir: str | None = setting(None,
        "with a CSV of image_name: the folder of NAME.jpg (default: the CSV's folder)")


@dataclass
class ServeConfig:
    """`melanoma serve`: the REST service (FastAPI under uvicorn)."""

    host: str = setting("127.0.0.1", 'localhost only unless told otherwise')
    port: Annotated[int, Range(1, 65535)] = setting(8000, 'TCP port to listen on')
    max_body_mb: Positive = setting(20.0, 'larger request bodies get 413 before they are read')
    max_images: PositiveInt = setting(32, 'images per /predict/batch request')
    max_batch: PositiveInt = setting(32, 'micro-batching: most images per model call')
    max_wait_ms: NonNegative = setting(5.0, 'micro-batching: how long a first request waits for company')
    threshold: str | None = setting(None, 'the exported threshold that sets `label` (None: the first in model.json)')
    workers: Count = setting(0, 'threads decoding uploads (0 = one per core)')
    warmup: bool = setting(True, 'compile every batch shape before serving, so no request pays for it')


@dataclass
class PseudoConfig:
    """`melanoma pseudo`: confidently predicted test images as soft-labelled training data (melanoma.pseudo.labels)."""

    min_confidence: Annotated[float, Range(0.5, 1, min_open=True)] = setting(0.9,
        'keep a test image whose blended probability is >= this or <= 1 - this')
    calibrate: Literal["platt", "isotonic"] = setting("platt",
        'blended score -> probability, fitted on the blended OOF')
    shard_images: PositiveInt = setting(2048, 'records per shard')


@dataclass
class VariantConfig:
    """One image model of a multi-model `melanoma run` (melanoma.config.variants)."""

    name: str = setting("", 'its run folder: PATHS.runs/image-NAME')
    seed: Seed | None = setting(None, "its seed (None: the config's seed)")
    train: TrainConfig = setting(default_factory=TrainConfig, help=
        "only the keys given here change the config's train section")


@dataclass
class Config:
    competition: Literal["auto", "siim2020", "isic2024"] = setting("auto",
        'Which competition (melanoma.data.competition): siim2020 (train.csv, JPEGs, AUC) | isic2024 (train-metadata.csv, '
        'HDF5 tiles, isic_id, pAUC above 80% TPR) | auto: from the files in PATHS.data, else what prepare recorded')
    seed: Seed = setting(42, 'one seed for folds, shuffling, initial weights and augmentation')
    n_folds: Annotated[int, Range(2, 100)] = setting(5, 'number of folds (patient-level, stratified)')
    stages: list[Stage] = setting(default_factory=lambda: list(STAGES),
                                  help="the stages `melanoma run` chains, in order")
    paths: PathsConfig = setting(default_factory=PathsConfig)
    data: DataConfig = setting(default_factory=DataConfig)
    prepare: PrepareConfig = setting(default_factory=PrepareConfig)
    train: TrainConfig = setting(default_factory=TrainConfig)
    tabular: TabularConfig = setting(default_factory=TabularConfig)
    blend: BlendConfig = setting(default_factory=BlendConfig)
    report: ReportConfig = setting(default_factory=ReportConfig)
    kaggle: KaggleConfig = setting(default_factory=KaggleConfig)
    export: ExportConfig = setting(default_factory=ExportConfig)
    predict: PredictConfig = setting(default_factory=PredictConfig)
    serve: ServeConfig = setting(default_factory=ServeConfig)
    segment: SegmentConfig = setting(default_factory=SegmentConfig)
    synth: SynthConfig = setting(default_factory=SynthConfig)
    pseudo: PseudoConfig = setting(default_factory=PseudoConfig)
    variants: list[VariantConfig] = setting(default_factory=list, help=
        'Several image models in one `melanoma run`: each its own run folder, trained in turn, all blended (empty: '
        'the one image model of the train section, in PATHS.runs/image)')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        return self._config_problem() or self._variants_problem()

    def _config_problem(self) -> str | None:
        if not self.stages or len(set(self.stages)) != len(self.stages):
            return f"stages: expected distinct stages from {', '.join(STAGES)}, got {self.stages}"
        return None

    def _variants_problem(self) -> str | None:
        names = [v.name for v in self.variants]
        bad = [n for n in names if slug_problem(n, "")]
        if bad:  # it becomes the folder image-NAME, here and in a Kaggle notebook's output
            return f"variants: name {bad[0]!r} must be a folder name that is a Kaggle slug (lowercase letters, " \
                   "digits and hyphens, starting and ending with a letter or digit, at most 50 characters)"
        if len(set(names)) != len(names):
            return f"variants: names must be distinct, got {names}"
        return None
