"""The config's sections: one dataclass per section, every setting declared once with its default and a
trailing `# comment` (the CLI's flag help, see cliflags.py). Loading, overrides and checks: melanoma.config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from melanoma.config.typed import Range


Seed = Annotated[int, Range(0, 2**32 - 1)]  # numpy seeds are unsigned 32-bit
PositiveInt = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]
Positive = Annotated[float, Range(0, min_open=True)]
NonNegative = Annotated[float, Range(0)]
Share = Annotated[float, Range(0, 1)]  # a fraction in [0, 1]
Dropout = Annotated[float, Range(0, 1, max_open=True)]

@dataclass
class PathsConfig:
    """Where the stages of `melanoma run` read and write (each stage command also takes them as flags)."""

    data: str = "data/demo"  # competition layout: train.csv, test.csv, jpeg/train, jpeg/test
    tfrecords: str = "tfrecords/demo"  # the sharded TFRecords: written by prepare, read by train (a gs:// path works)
    runs: str = "runs/demo"  # folds.csv, image/ and tabular/ run folders go here
    submission: str = "submissions/submission.csv"  # the blend's submission.csv (blend.json beside it)
    sample_submission: str | None = None  # default: DATA/sample_submission.csv when it exists
    test_labels: str | None = None  # optional image_name,target file to report a held-out test AUC


@dataclass
class DataConfig:
    """How train.csv and test.csv are read (every stage reads them the same way)."""

    # required: a patient_id column must exist (without it a patient's images could land in several folds
    # and leak); per_image: without one, each image is its own patient (the ISIC archive has no ids).
    # Empty ids in an existing column always mean one patient per image (said in the log).
    patient_id: Literal["required", "per_image"] = "required"


@dataclass
class PrepareConfig:
    size: Annotated[int, Range(16, 4096)] = 256  # stored image side in pixels
    resize: Literal["crop", "pad", "stretch"] = "crop"  # crop: center-crop to square; pad: pad to square; stretch: ignore aspect ratio
    quality: Annotated[int, Range(1, 100)] = 95  # JPEG quality of the stored images
    shard_mb: Positive = 150.0  # target shard size; TPU input wants about 100-200 MB
    workers: Count = 0  # processes decoding images in parallel (0 = one per core)
    on_bad_image: Literal["fail", "skip"] = "fail"  # fail: stop naming the file and CSV row; skip: log, list in the manifest, leave out
    max_pixels: PositiveInt = 200_000_000  # larger images are bad images (PIL's bomb limit, made a setting)
    dup_max_distance: Annotated[int, Range(0, 15)] = 4  # near-duplicates: dHash (64 bits) within this many bits
    duplicates: str | None = None  # optional duplicates CSV (image_name_1, image_name_2), as the competition ships
    drop_duplicates: bool = False  # keep one image per duplicate group (else: duplicates share a fold)
    external: list[str] = field(default_factory=list)  # extra training data folders (ISIC 2019 or competition)
    upsample_malignant: PositiveInt = 1  # extra copies of malignant training images (train-only shards; 1 = none)
    # Lesion step before the resize (the same in prepare, predict and serve): none | mask (background blacked
    # out) | crop (a square box around the lesion, with lesion_margin). Masks come from prepare.segmenter, else
    # the classical method (Otsu on darkness + saturation, largest component, holes filled; melanoma.segment).
    lesion: Literal["none", "mask", "crop"] = "none"
    segmenter: str | None = None  # a `melanoma segment train` folder (or its segmenter.keras); None: classical
    lesion_margin: Annotated[float, Range(0, 2)] = 0.1  # crop: added on each side, as a share of the lesion box side


@dataclass
class AugmentConfig:
    """Random augmentation, drawn per image. Lesions have no up or orientation, so flips and any rotation are safe;
    colour is diagnostic, so hue stays small. Set a value to 0 (or false) to turn that part off."""

    where: Literal["auto", "data", "model"] = "auto"  # data: in tf.data on the host CPU; model: a layer on the accelerator; auto: model on GPU/TPU
    flip: bool = True  # random left-right and up-down flips
    transpose: bool = True  # random transpose (with the flips: all 8 right-angle orientations)
    rotate: Annotated[float, Range(0, 180)] = 180.0  # rotation, uniform in [-rotate, rotate] degrees
    shear: Annotated[float, Range(0, 45)] = 5.0  # shear, uniform in [-shear, shear] degrees
    zoom: Annotated[float, Range(0, 1, max_open=True)] = 0.1  # scale in [1 - zoom, 1 + zoom]
    shift: Annotated[float, Range(0, 0.5)] = 0.05  # shift, uniform in [-shift, shift] x image side, on each axis
    hue: Annotated[float, Range(0, 0.5)] = 0.01  # hue delta in [-hue, hue] (a full turn is 1)
    saturation: Share = 0.2  # saturation factor in [1 - s, 1 + s]
    contrast: Share = 0.2  # contrast factor in [1 - c, 1 + c]
    brightness: Share = 0.1  # brightness delta, as a fraction of 255
    cutout: Count = 0  # coarse dropout: holes per image (0 = off)
    cutout_size: Share = 0.15  # hole side, as a fraction of the image side
    cutout_prob: Share = 0.5  # share of images that get the holes


@dataclass
class TrainConfig:
    # auto: finetune with weights (imagenet or a file), scratch with weights none. A recipe is a set of defaults
    # (RECIPES below); any key the config file, a --set or a flag names still wins. The log says which and why.
    recipe: Literal["auto", "finetune", "scratch"] = "auto"
    model: str = "efficientnet_b0"  # backbone name (`melanoma models` lists them)
    size: Annotated[int, Range(8, 4096)] = 256  # model input side; records of another size are resized on the fly
    epochs: PositiveInt = 12  # training epochs per fold
    batch_size: PositiveInt = 32  # per replica; the global batch is this times the replica count
    folds: list[Count] | None = None  # folds to train (None = all)
    weights: str = "imagenet"  # none | imagenet | path to a weights file
    dropout: Dropout = 0.2
    bn_momentum: Annotated[float, Range(0, 1, True, True)] | None = None  # override the backbone's BatchNorm momentum (e.g. 0.9 from scratch)
    # warm-up then exponential decay, per step; lr_max = lr_max_per_image * global batch (public TPU recipe)
    lr_start: NonNegative = 5e-6
    lr_max_per_image: Positive = 1.25e-6
    lr_min: NonNegative = 1e-6
    warmup_epochs: NonNegative = 5.0
    sustain_epochs: NonNegative = 0.0
    decay: Annotated[float, Range(0, 1, min_open=True)] = 0.8  # lr multiplier per epoch after warm-up
    weight_decay: NonNegative = 1e-5
    schedule: Literal["exponential", "cosine"] = "exponential"  # exponential: ramp, sustain, decay per epoch | cosine: ramp, then cosine to lr_min
    label_smoothing: Dropout = 0.05
    loss: Literal["bce", "focal"] = "bce"  # bce | focal (keras BinaryFocalCrossentropy)
    focal_gamma: NonNegative = 2.0
    focal_alpha: Share | None = None  # focal class balancing: weight of the malignant class (None = off)
    oversample: Annotated[float, Range(1)] = 1.0  # malignant images are drawn this many times as often (1 = natural rate)
    positive_share: Annotated[float, Range(0, 1, True, True)] | None = None  # or: draw malignant images at this share (overrides oversample)
    class_weight: Literal["none", "balanced", "sqrt"] = "none"  # none | balanced | sqrt: loss weights computed from the training folds
    # binary: one sigmoid unit (melanoma) | diagnosis: a softmax over class_map's classes from the records'
    # diagnosis (categorical cross-entropy); its melanoma column is the prediction everywhere downstream
    head: Literal["binary", "diagnosis"] = "binary"
    class_map: Literal["isic2017", "winners9"] = "winners9"  # diagnosis head: the 3 ISIC 2017 classes or the 1st-place solution's 9 (melanoma.image.heads)
    metadata: bool = False  # join one-hot site and sex and scaled age (each with a missing flag) to the image features before the head
    # Metadata dropout (with metadata, training only): each of sex, age and site blanked with this probability,
    # and the whole row with meta_row_dropout, so the model still scores images that come without metadata
    meta_dropout: Share = 0.1
    meta_row_dropout: Dropout = 0.3
    # How the metadata joins (binary head): joint = its features beside the image features before one output;
    # residual = an image-only output trained on its own loss, plus a metadata term learnt on top of it (the
    # image branch gets no gradient from the metadata, so without metadata it scores as an image-only model)
    meta_fusion: Literal["joint", "residual"] = "joint"
    tta: Count = 0  # augmented prediction passes averaged with the plain one (0 = no TTA)
    tta_flips: bool = False  # also average the left-right, up-down and both flips (3 deterministic passes)
    checkpoint: Literal["best", "last"] = "best"  # predict with the weights of the best epoch by validation AUC, or the last
    # Exponential moving average of the weights, updated every step with this momentum (0 = off; 0.99 averages
    # about the last 100 steps): validation, the checkpoints and predictions use the averaged weights
    ema: Annotated[float, Range(0, 1, max_open=True)] = 0.0
    resume: bool = True  # re-running into the same folder continues it: finished folds are kept
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Keras backend: auto = jax when a TPU is attached that TensorFlow cannot drive (Kaggle/Colab TPU images
    # ship tensorflow-cpu + jax[tpu]), else tensorflow. Fixed before Keras is imported (melanoma.runtime.backend).
    backend: Literal["auto", "tensorflow", "jax"] = "auto"
    tpu: str = "auto"  # auto | none | local | a TPU name or grpc:// address
    cpu_replicas: PositiveInt = 1  # > 1: this many CPU devices (MirroredStrategy on TF, DataParallel on JAX): tests multi-replica
    # A TPU expected (a TPU VM's or Colab's environment, a notebook pushed with the TPU, train.tpu) but not seen
    # by the backend is refused before any work; true: train on what is there (the CPU) on purpose
    allow_cpu_fallback: bool = False
    # Hours this process may train (from its start, or MELANOMA_SESSION_START): an epoch that would end later is
    # not started; the fold resumes in the next session. auto: on Kaggle 9 h less margins, elsewhere none | 0 = none
    time_budget: Annotated[float, Range(0)] | Literal["auto", "none"] | None = "auto"
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"  # auto (bfloat16 on TPU, float16 on GPU, float32 on CPU) | float32 | mixed_float16 | mixed_bfloat16
    steps_per_execution: PositiveInt = 1  # training steps per call to the device (8-32 on TPUs cuts host overhead)
    jit_compile: bool | None = None  # None: XLA on GPU/TPU, off on CPU (where it is ~10x slower)
    cache: bool = False  # keep the encoded training records in memory after the first epoch
    shuffle_buffer: PositiveInt = 2048
    tensorboard: bool = True  # TensorBoard logs per fold (foldK/tensorboard)
    verbose: Literal[0, 1, 2] = 2  # Keras fit verbosity: 1 = progress bar, 2 = one line per epoch
    # Extra training sources (melanoma.image.sources): trained on, never validated, never in the OOF.
    external: list[str] = field(default_factory=list)  # external TFRecords: folders, Kaggle OWNER/SLUGs or isic2019 (the public set at prepare.size)
    external_share: Share | None = None  # cap of the external images' share of a batch (None = natural rate)
    pseudo: str | None = None  # a `melanoma pseudo` output folder: soft-labelled test images in every fold's training
    pseudo_share: Share | None = None  # cap of the pseudo-labelled images' share of a batch (None = natural rate)
    # Folder written by `melanoma synth` (None: no synthetic images). Fold k trains on the images tagged
    # synthetic:k only (their sources are in its training folds); they are never validated or predicted.
    synthetic: str | None = None
    synthetic_share: Annotated[float, Range(0, 1, max_open=True)] = 0.2  # cap of the synthetic images' share of a batch: drawn at min(this, their natural rate)


@dataclass
class TabularConfig:
    hidden: list[PositiveInt] = field(default_factory=lambda: [64, 32])
    dropout: Dropout = 0.2
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 256
    learning_rate: Positive = 1e-3
    smote: bool = True
    smote_k: PositiveInt = 5  # SMOTE k_neighbors (lowered automatically for tiny minority classes)
    smote_ratio: Annotated[float, Range(0, 1, min_open=True)] = 0.5  # minority / majority after SMOTE (imblearn sampling_strategy)
    # auto | mlp_smote | logreg | gbm | lgbm | hgb | all. auto: each of auto_models in RUN/<model>/, the best
    # OOF AUC at RUN/ itself; all: the same over every model.
    model: Literal["auto", "mlp_smote", "logreg", "gbm", "lgbm", "hgb", "all"] = "auto"
    auto_models: list[Literal["mlp_smote", "logreg", "gbm", "lgbm", "hgb"]] = field(
        default_factory=lambda: ["lgbm", "hgb", "logreg"])
    # Test predictions: fold_mean (the mean of the fold models) | refit (one more model on every training row)
    test_predictions: Literal["fold_mean", "refit"] = "fold_mean"
    context: bool = True  # patient-context features (images per patient, age rank, site share, ...)
    logreg_C: Positive = 1.0  # inverse L2 strength of the logistic regression
    gbm_max_iter: PositiveInt = 300  # boosting rounds (an upper bound with early stopping)
    gbm_learning_rate: Positive = 0.05
    gbm_max_leaf_nodes: Annotated[int, Range(2)] = 15  # leaves per tree
    gbm_min_samples_leaf: PositiveInt = 40  # rows per leaf at least: guards against fitting the few positives
    gbm_early_stopping: bool = True  # stop on the log-loss of a seeded 10% of the training fold
    gbm_importance_repeats: Count = 3  # permutation-importance shuffles per feature and fold (0: none)
    # Original image width/height as features: auto (from train.csv/test.csv, else the TFRecords folder's
    # image_sizes.csv or the public TFRecords' train.csv/test.csv) | off (never used)
    image_size: Literal["auto", "off"] = "auto"
    # File size and colour statistics of each image (mean/std per channel, centre-vs-border contrast) and
    # their difference from the patient's mean: auto (from DATA/jpeg/, else the TFRecords folder, when every
    # image is there; cached in RUN/image_stats.csv) | off
    image_stats: Literal["auto", "off"] = "auto"
    # lgbm and hgb: early stopping on this share of the training patients, held out whole, then a refit
    inner_validation: Annotated[float, Range(0, 0.5, min_open=True)] = 0.2
    early_stopping_rounds: PositiveInt = 50  # rounds without a better inner-validation score before stopping
    lgbm_max_rounds: PositiveInt = 2000
    lgbm_learning_rate: Positive = 0.02
    lgbm_num_leaves: Annotated[int, Range(2)] = 7
    lgbm_min_child_samples: PositiveInt = 100  # rows per leaf at least
    lgbm_feature_fraction: Annotated[float, Range(0, 1, min_open=True)] = 0.6  # features tried per tree
    lgbm_bagging_fraction: Annotated[float, Range(0, 1, min_open=True)] = 0.8  # rows drawn per tree
    lgbm_lambda_l2: NonNegative = 5.0
    hgb_max_iter: PositiveInt = 1000
    hgb_learning_rate: Positive = 0.03
    hgb_max_leaf_nodes: Annotated[int, Range(2)] = 7
    hgb_min_samples_leaf: PositiveInt = 100
    hgb_l2_regularization: NonNegative = 5.0
    hgb_max_features: Annotated[float, Range(0, 1, min_open=True)] = 0.6  # features tried per split


@dataclass
class BlendConfig:
    step: Annotated[float, Range(0, 1, min_open=True)] = 0.05  # grid step of the weight search on the OOF predictions
    # weighted: rank mean, weights fitted on OOF AUC | rank: plain rank average | power: power mean of ranks
    method: Literal["weighted", "rank", "power"] = "weighted"
    power: Annotated[float, Range(-10, 10)] = 2.0  # exponent of method: power (0 = geometric mean; higher favours confident runs)
    # Total weight of the metadata runs (run.json stage "tabular"), e.g. 0.25; None: as found by the method.
    tabular_weight: Share | None = None
    # Calibrate the blended score into a probability: none | isotonic | platt (fitted on the blended OOF) | the
    # path of a calibrator.json written by `melanoma report` (fitted on the same kind of score).
    calibrate: str = "none"
    # When training stopped at train.time_budget with folds left, `melanoma run` skips tabular and blend (no
    # submission) until a later session finishes them; true: blend the finished folds anyway
    partial: bool = False


@dataclass
class ReportConfig:
    """`melanoma report` and the report stage of `melanoma run` (see melanoma.report)."""

    out: str | None = None  # report folder; default: PATHS.runs/report
    bootstrap: Annotated[int, Range(0, 100_000)] = 1000  # patient resamples for the 95% intervals (0: none)
    seed: Seed | None = None  # bootstrap seed; None: the config's seed
    sensitivities: list[Annotated[float, Range(0, 1, min_open=True)]] = field(
        default_factory=lambda: [0.8, 0.9, 0.95])  # operating points: thresholds on the OOF for these sensitivities
    min_positives: PositiveInt = 5  # a subgroup with fewer positives gets no AUC, only a note
    size_groups: PositiveInt = 6  # image-size (camera) subgroups: the most common sizes; the rest are "other"
    calibration: Literal["isotonic", "platt", "none"] = "isotonic"  # post-hoc calibrator fitted on the OOF
    calibration_bins: Annotated[int, Range(2, 100)] = 10  # equal-width bins of the reliability diagram and ECE
    gallery_size: Count = 6  # most confident false negatives and false positives shown (each)
    gradcam: bool = True  # heat maps in the gallery (image runs with their fold weights)


@dataclass
class KaggleConfig:
    """Kaggle and Colab settings: `melanoma kaggle ...`, `melanoma submit` and the auto-detected paths.

    Credentials are never config keys: they stay in ~/.kaggle or the environment (see melanoma.kaggle.api).
    """

    competition: str = "siim-isic-melanoma-classification"
    username: str | None = None  # kernel owner; default: the username of the credentials
    slug: str = "melanoma-tpu"  # kernel id is USERNAME/SLUG; the title must slugify to it
    title: str = "Melanoma TPU"
    accelerator: Literal["tpu", "gpu", "none"] = "tpu"  # tpu (TPU v5e-8) | gpu (T4 x2) | none
    private: bool = True
    internet: bool = True  # the notebook pip-installs the package's dependencies
    # Where the notebook gets this repository: a git URL (needs internet) or /kaggle/input/<dataset>
    source: str = "https://github.com/YOUR-GITHUB-NAME/melanoma.git"
    colab_root: str = "/content/drive/MyDrive/melanoma"  # in Colab: data, runs, submission under this folder
    colab_tfrecords: str | None = None  # in Colab: TFRecords folder, e.g. gs://BUCKET/melanoma-384x384
    # Chain sessions: the pushed notebook takes its own previous version's output as an input (kernel_sources)
    # and `melanoma run` continues from the finished folds found there (Kaggle's 9-hour limit per session).
    chain: bool = False
    # Offline notebooks (internet off): the slug of your dataset of wheels, from `melanoma kaggle wheels`.
    wheels: str | None = None


@dataclass
class SegmentConfig:
    """`melanoma segment train`: a small U-Net (Dice + BCE) on ISIC_x.jpg images and ISIC_x_segmentation.png masks."""

    size: Annotated[int, Range(16, 1024)] = 128  # network input side (images and masks are resized to it)
    width: PositiveInt = 16  # filters of the first level, doubled at each level down
    depth: Annotated[int, Range(1, 6)] = 3  # poolings; size must be divisible by 2**depth
    epochs: PositiveInt = 20  # training epochs of steps_per_epoch batches each
    steps_per_epoch: Count = 0  # batches per epoch (0: one pass over the training images)
    batch_size: PositiveInt = 16  # image/mask pairs per training step
    learning_rate: Positive = 1e-3  # Adam
    dice_weight: Share = 0.5  # loss = dice_weight x soft Dice loss + (1 - dice_weight) x binary cross-entropy
    val_share: Annotated[float, Range(0, 1, True, True)] = 0.2  # images held out (per image: no patient ids) for Dice/Jaccard
    threshold: Annotated[float, Range(0, 1, True, True)] = 0.5  # probability above which a pixel is lesion
    augment: bool = True  # random flips and transposes of image and mask together
    seed: Seed | None = None  # split and initialisation; None: the config's seed
    figure_images: Count = 6  # held-out predictions drawn in predictions.png


@dataclass
class SynthConfig:
    """`melanoma synth`: per fold, a CycleGAN turns benign training images into synthetic melanomas (melanoma.synth).

    The defaults are the seeds' recipe: least-squares GAN loss, cycle weight 10, identity weight 1, Adam 2e-4 with
    beta1 0.5, instance norm, a U-Net (256 px) or ResNet-9 (224 px) generator and a 70x70 PatchGAN."""

    out: str | None = None  # folder to write (default: train.synthetic)
    generator: Literal["unet", "resnet9"] = "unet"  # unet: pix2pix U-Net with skips | resnet9: ResNet blocks between 2 down/up-samplings
    size: Annotated[int, Range(16, 1024)] = 256  # side the CycleGAN works at (a multiple of 4); outputs are resized to the stored side
    gen_filters: PositiveInt = 64  # generator width: filters of its first layer (doubled per level, at most x8)
    disc_filters: PositiveInt = 64  # PatchGAN width: filters of its first layer
    disc_layers: Annotated[int, Range(1, 6)] = 3  # PatchGAN stride-2 convolutions (3: the 70x70 PatchGAN)
    unet_depth: Annotated[int, Range(1, 8)] = 8  # U-Net down-samplings at most (fewer when the side stops halving evenly)
    resnet_blocks: PositiveInt = 9  # residual blocks of the resnet9 generator
    cycle_weight: NonNegative = 10.0  # weight of the L1 cycle-consistency loss (each direction)
    identity_weight: NonNegative = 1.0  # weight of the L1 identity loss: G(malignant) should stay malignant
    learning_rate: Positive = 2e-4  # Adam, both generators and both discriminators
    beta_1: Share = 0.5  # Adam's first-moment decay
    decay_from: Share = 0.5  # the learning rate falls linearly to 0 over the steps after this share of the budget
    batch_size: PositiveInt = 1  # image pairs per step (CycleGAN: 1)
    steps: PositiveInt = 20000  # step budget per fold: training stops there (a re-run continues up to it)
    checkpoint_every: PositiveInt = 500  # steps between checkpoints (weights, optimizer state, step, loss history)
    sample_every: PositiveInt = 1000  # steps between sample grids (real, translated, cycled); one more at the end
    sample_images: PositiveInt = 4  # rows of each sample grid
    flip: bool = True  # random flips and transposes of the training images (lesions have no up)
    folds: list[Count] | None = None  # folds to synthesise for (None = all)
    max_images: PositiveInt | None = None  # benign training images translated per fold (None = every one)


@dataclass
class ExportConfig:
    """`melanoma export RUN_DIR --out model/`: a trained image run as one inference artefact."""

    # ensemble: every fold model inside one .keras, predictions averaged (what the run's test_pred.csv is);
    # average: one model holding the mean of the fold weights (1/K of the cost; the folds share initial weights)
    combine: Literal["ensemble", "average"] = "ensemble"
    folds: list[Count] | None = None  # folds to export (None = every finished fold)
    tta_flips: bool | None = None  # average the 3 flips inside the model (None: as trained, train.tta_flips)
    savedmodel: bool = True  # also a TensorFlow SavedModel (TF Serving), on the TensorFlow backend
    onnx: bool = True  # also model.onnx where tf2onnx is installed and converts the backbone
    report: str | None = None  # folder with calibrator.json / report.json (default: RUN_DIR/report if present)
    tfrecords: str | None = None  # the run's TFRecords folder, for manifest.json (default: paths.tfrecords)


@dataclass
class PredictConfig:
    """`melanoma predict`: batch prediction on plain image files."""

    batch_size: PositiveInt = 32  # images per model call
    workers: Count = 0  # threads decoding images in parallel (0 = one per core)
    image_dir: str | None = None  # with a CSV of image_name: the folder of NAME.jpg (default: the CSV's folder)


@dataclass
class ServeConfig:
    """`melanoma serve`: the REST service (FastAPI under uvicorn)."""

    host: str = "127.0.0.1"  # localhost only unless told otherwise
    port: Annotated[int, Range(1, 65535)] = 8000  # TCP port to listen on
    max_body_mb: Positive = 20.0  # larger request bodies get 413 before they are read
    max_images: PositiveInt = 32  # images per /predict/batch request
    max_batch: PositiveInt = 32  # micro-batching: most images per model call
    max_wait_ms: NonNegative = 5.0  # micro-batching: how long a first request waits for company
    threshold: str | None = None  # the exported threshold that sets `label` (None: the first in model.json)
    workers: Count = 0  # threads decoding uploads (0 = one per core)
    warmup: bool = True  # compile every batch shape before serving, so no request pays for it


@dataclass
class PseudoConfig:
    """`melanoma pseudo`: confidently predicted test images as soft-labelled training data (melanoma.pseudo.labels)."""

    min_confidence: Annotated[float, Range(0.5, 1, min_open=True)] = 0.9  # keep a test image whose blended probability is >= this or <= 1 - this
    calibrate: Literal["platt", "isotonic"] = "platt"  # blended score -> probability, fitted on the blended OOF
    shard_images: PositiveInt = 2048  # records per shard


@dataclass
class VariantConfig:
    """One image model of a multi-model `melanoma run` (melanoma.config.variants)."""

    name: str = ""  # its run folder: PATHS.runs/image-NAME
    seed: Seed | None = None  # its seed (None: the config's seed)
    train: TrainConfig = field(default_factory=TrainConfig)  # only the keys given here change the config's train section


@dataclass
class Config:
    seed: Seed = 42  # one seed for folds, shuffling, initial weights and augmentation
    n_folds: Annotated[int, Range(2, 100)] = 5  # number of folds (patient-level, stratified)
    stages: list[Literal["folds", "prepare", "train", "tabular", "blend", "report"]] = field(
        default_factory=lambda: ["folds", "prepare", "train", "tabular", "blend", "report"])
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    # Several image models in one `melanoma run`: each its own run folder, trained in turn, all blended (empty:
    # the one image model of the train section, in PATHS.runs/image)
    variants: list[VariantConfig] = field(default_factory=list)
