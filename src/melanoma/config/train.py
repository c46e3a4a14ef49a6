"""The config's train section (the image model): every setting declared once with `setting(default, help)`.

Issue 25: the settings are grouped into sections (optimizer, imbalance, meta, devices, checkpoints, sources,
augment); the model, its input and the prediction views stay at the top of `train`. Every flat key of before
still works: MOVED (below) maps it to its new place, applied wherever a key is read (melanoma.config.aliases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from melanoma.config.typed import (
    Count, Dropout, NonNegative, Positive, PositiveInt, Range, Share, setting,
)


@dataclass
class AugmentConfig:
    """Random augmentation, drawn per image. Lesions have no up or orientation, so flips and any rotation are safe;
    colour is diagnostic, so hue stays small. Set a value to 0 (or false) to turn that part off."""

    where: Literal["auto", "data", "model"] = setting("auto",
        'data: in tf.data on the host CPU; model: a layer on the accelerator; auto: model on GPU/TPU')
    flip: bool = setting(True, 'random left-right and up-down flips')
    transpose: bool = setting(True, 'random transpose (with the flips: all 8 right-angle orientations)')
    rotate: Annotated[float, Range(0, 180)] = setting(180.0, 'rotation, uniform in [-rotate, rotate] degrees')
    shear: Annotated[float, Range(0, 45)] = setting(5.0, 'shear, uniform in [-shear, shear] degrees')
    zoom: Annotated[float, Range(0, 1, max_open=True)] = setting(0.1, 'scale in [1 - zoom, 1 + zoom]')
    shift: Annotated[float, Range(0, 0.5)] = setting(0.05,
        'shift, uniform in [-shift, shift] x image side, on each axis')
    hue: Annotated[float, Range(0, 0.5)] = setting(0.01, 'hue delta in [-hue, hue] (a full turn is 1)')
    saturation: Share = setting(0.2, 'saturation factor in [1 - s, 1 + s]')
    contrast: Share = setting(0.2, 'contrast factor in [1 - c, 1 + c]')
    brightness: Share = setting(0.1, 'brightness delta, as a fraction of 255')
    cutout: Count = setting(0, 'coarse dropout: holes per image (0 = off)')
    cutout_size: Share = setting(0.15, 'hole side, as a fraction of the image side')
    cutout_prob: Share = setting(0.5, 'share of images that get the holes')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        if self.cutout and self.cutout_size == 0:
            return f"cutout_size: 0 with cutout {self.cutout} cuts nothing: set cutout_size > 0, or cutout: 0"
        return None


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule (melanoma.image.schedules): warm-up, sustain, then decay, per step."""

    lr_start: NonNegative = setting(5e-6,
        'warm-up then exponential decay, per step; lr_max = lr_max_per_image * global batch (public TPU recipe)')
    lr_max_per_image: Positive = setting(1.25e-6, "peak learning rate per image of the global batch")
    lr_min: NonNegative = setting(1e-6, "the learning rate the decay ends at")
    warmup_epochs: NonNegative = setting(5.0, "epochs of the linear ramp from lr_start to lr_max")
    sustain_epochs: NonNegative = setting(0.0, "epochs held at lr_max after the ramp")
    decay: Annotated[float, Range(0, 1, min_open=True)] = setting(0.8, 'lr multiplier per epoch after warm-up')
    schedule: Literal["exponential", "cosine"] = setting("exponential",
        'exponential: ramp, sustain, decay per epoch | cosine: ramp, then cosine to lr_min')
    weight_decay: NonNegative = setting(1e-5, "AdamW weight decay")


@dataclass
class ImbalanceConfig:
    """The loss and the rare malignant class: how it is weighted in the loss and how often it is drawn.

    Label smoothing is here rather than with the optimizer: it is an argument of the loss (make_loss and
    head_loss read this section alone), and it softens the targets the class weights multiply."""

    loss: Literal["bce", "focal"] = setting("bce", 'bce | focal (keras BinaryFocalCrossentropy)')
    focal_gamma: NonNegative = setting(2.0, "focal loss: the focusing exponent")
    focal_alpha: Share | None = setting(None, 'focal class balancing: weight of the malignant class (None = off)')
    label_smoothing: Dropout = setting(0.05, "Keras label smoothing of the targets")
    oversample: Annotated[float, Range(1)] = setting(1.0,
        'malignant images are drawn this many times as often (1 = natural rate)')
    positive_share: Annotated[float, Range(0, 1, True, True)] | None = setting(None,
        'or: draw malignant images at this share (overrides oversample)')
    class_weight: Literal["none", "balanced", "sqrt"] = setting("none",
        'none | balanced | sqrt: loss weights computed from the training folds')
    negative_ratio: Annotated[float, Range(0, min_open=True)] | None = setting(None,
        'Benign images drawn per malignant one in each epoch (ISIC 2024 has 0.1% malignant): an epoch then holds '
        'each malignant image about once and a fresh sample of the benign ones, and is that much shorter. None: '
        'every image each epoch (with oversample / positive_share)')

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid."""
        if self.negative_ratio is not None and (self.positive_share is not None or self.oversample != 1):
            return "negative_ratio sets the malignant share of an epoch itself: leave positive_share and oversample unset"
        return None


@dataclass
class MetaConfig:
    """The patient metadata as an input of the image model (melanoma.data.metadata): whether, how, and its
    dropout. `enabled` was the flat `train.metadata` (a section cannot share the name of a setting)."""

    enabled: bool = setting(False, "join one-hot site and sex and scaled age (each with a missing flag) to the "
                                   "image features before the head")
    field_dropout: Share = setting(0.1, "metadata dropout (training only): each of sex, age and site blanked with "
                                        "this probability, so the model still scores images that come without "
                                        "metadata")
    row_dropout: Dropout = setting(0.3, "metadata dropout (training only): the whole row blanked with this "
                                        "probability")
    fusion: Literal["joint", "residual"] = setting("joint",
        "how the metadata joins (binary head): joint = its features beside the image features before one output; "
        "residual = an image-only output trained on its own loss, plus a metadata term learnt on top of it (the "
        "image branch gets no gradient from the metadata, so without metadata it scores as an image-only model)")


@dataclass
class DevicesConfig:
    """What trains: the Keras backend, the accelerator, the hosts, and how the steps reach the device."""

    backend: Literal["auto", "tensorflow", "jax"] = setting("auto",
        'Keras backend: auto = jax when a TPU is attached that TensorFlow cannot drive (Kaggle/Colab TPU images ship '
        'tensorflow-cpu + jax[tpu]), else tensorflow. Fixed before Keras is imported (melanoma.runtime.backend).')
    tpu: str = setting("auto", 'auto | none | local | a TPU name or grpc:// address')
    cpu_replicas: PositiveInt = setting(1,
        '> 1: this many CPU devices (MirroredStrategy on TF, DataParallel on JAX): tests multi-replica')
    allow_cpu_fallback: bool = setting(False,
        "A TPU expected (a TPU VM's or Colab's environment, a notebook pushed with the TPU, train.devices.tpu) but "
        'not seen by the backend is refused before any work; true: train on what is there (the CPU) on purpose')
    hosts: PositiveInt | Literal["auto"] = setting("auto",
        'Hosts (one JAX process each) training together: auto = from the environment (JAX_COORDINATOR_ADDRESS, '
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a TPU pod's worker list) | N (melanoma.runtime.hosts; docs/pods.md)")
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = setting("auto",
        'auto (bfloat16 on TPU, float16 on GPU, float32 on CPU) | float32 | mixed_float16 | mixed_bfloat16')
    steps_per_execution: PositiveInt = setting(1,
        'training steps per call to the device (8-32 on TPUs cuts host overhead)')
    jit_compile: bool | None = setting(None, 'None: XLA on GPU/TPU, off on CPU (where it is ~10x slower)')


@dataclass
class CheckpointsConfig:
    """Which weights a fold keeps and predicts with, and what its run folder keeps across sessions."""

    ema: Annotated[float, Range(0, 1, max_open=True)] = setting(0.0,
        "exponential moving average of the weights, updated every step with this momentum (0 = off; 0.99 averages "
        "about the last 100 steps): validation, the checkpoints and predictions use the averaged weights")
    keep: Literal["best", "last"] = setting("best",
        'predict with the weights of the best epoch by validation AUC, or the last')
    resume: bool = setting(True, 're-running into the same folder continues it: finished folds are kept')
    time_budget: Annotated[float, Range(0)] | Literal["auto", "none"] | None = setting("auto",
        'Hours this process may train (from its start, or MELANOMA_SESSION_START): an epoch that would end later is '
        'not started; the fold resumes in the next session. auto: on Kaggle 9 h less margins, elsewhere none | 0 = '
        'none')
    tensorboard: bool = setting(True, 'TensorBoard logs per fold (foldK/tensorboard)')


@dataclass
class SourcesConfig:
    """Extra training sources (melanoma.image.sources): trained on, never validated, never in the OOF."""

    external: list[str] = setting(default_factory=list, help=
        'external TFRecords: folders, Kaggle OWNER/SLUGs or isic2019 (the public set at prepare.size)')
    external_share: Share | None = setting(None, "cap of the external images' share of a batch (None = natural rate)")
    pseudo: str | None = setting(None,
        "a `melanoma pseudo` output folder: soft-labelled test images in every fold's training")
    pseudo_share: Share | None = setting(None,
        "cap of the pseudo-labelled images' share of a batch (None = natural rate)")
    synthetic: str | None = setting(None,
        'Folder written by `melanoma synth` (None: no synthetic images). Fold k trains on the images tagged '
        'synthetic:k only (their sources are in its training folds); they are never validated or predicted.')
    synthetic_share: Annotated[float, Range(0, 1, max_open=True)] = setting(0.2,
        "cap of the synthetic images' share of a batch: drawn at min(this, their natural rate)")


@dataclass
class TrainConfig:
    """The image model (`melanoma train`): what it is, how long it trains, and its sections (optimizer, imbalance,
    meta, devices, checkpoints, sources, augment). The old flat keys reach the sections through MOVED."""

    recipe: Literal["auto", "finetune", "scratch"] = setting("auto",
        'auto: finetune with weights (imagenet or a file), scratch with weights none. A recipe is a set of defaults '
        '(RECIPES below); any key the config file, a --set or a flag names still wins. The log says which and why.')
    model: str = setting("efficientnet_b0", 'backbone name (`melanoma models` lists them)')
    size: Annotated[int, Range(8, 4096)] = setting(256,
        'model input side; records of another size are resized on the fly')
    epochs: PositiveInt = setting(12, 'training epochs per fold')
    batch_size: PositiveInt = setting(32, 'per replica; the global batch is this times the replica count')
    folds: list[Count] | None = setting(None, 'folds to train (None = all)')
    weights: str = setting("imagenet", 'none | imagenet | path to a weights file')
    dropout: Dropout = setting(0.2, "dropout before the output layer")
    bn_momentum: Annotated[float, Range(0, 1, True, True)] | None = setting(None,
        "override the backbone's BatchNorm momentum (e.g. 0.9 from scratch)")
    head: Literal["binary", "diagnosis"] = setting("binary",
        "binary: one sigmoid unit (melanoma) | diagnosis: a softmax over class_map's classes from the records' "
        'diagnosis (categorical cross-entropy); its melanoma column is the prediction everywhere downstream')
    class_map: Literal["isic2017", "winners9"] = setting("winners9",
        "diagnosis head: the 3 ISIC 2017 classes or the 1st-place solution's 9 (melanoma.image.heads)")
    tta: Count = setting(0, 'augmented prediction passes averaged with the plain one (0 = no TTA)')
    tta_flips: bool = setting(False, 'also average the left-right, up-down and both flips (3 deterministic passes)')
    cache: bool = setting(False, 'keep the encoded training records in memory after the first epoch')
    shuffle_buffer: PositiveInt = setting(2048, "tf.data shuffle buffer, in images")
    verbose: Literal[0, 1, 2] = setting(2, 'Keras fit verbosity: 1 = progress bar, 2 = one line per epoch')
    augment: AugmentConfig = setting(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = setting(default_factory=OptimizerConfig)
    imbalance: ImbalanceConfig = setting(default_factory=ImbalanceConfig)
    meta: MetaConfig = setting(default_factory=MetaConfig)
    devices: DevicesConfig = setting(default_factory=DevicesConfig)
    checkpoints: CheckpointsConfig = setting(default_factory=CheckpointsConfig)
    sources: SourcesConfig = setting(default_factory=SourcesConfig)

    def problem(self) -> str | None:
        """What is wrong across this section's fields (None: nothing); checked at load, once each field is valid.
        Checks within one section are that section's own `problem()`; these span the top and a section."""
        if self.folds is not None and (not self.folds or len(set(self.folds)) != len(self.folds)):
            return f"folds: expected distinct fold numbers (or null for all), got {self.folds}"
        if self.head == "diagnosis" and self.imbalance.focal_alpha is not None:
            return ("imbalance.focal_alpha weighs the malignant class of the binary head: with head: diagnosis use "
                    "imbalance.class_weight")
        return None


# Issue 25: every flat train key of before, and where it is now. Declared once; melanoma.config.aliases applies
# it to config files, --set, flags, --vary and is_explicit (an old run folder's config.yaml loads through it).
MOVED: dict[str, str] = {
    **{f"train.{k}": f"train.optimizer.{k}" for k in (
        "lr_start", "lr_max_per_image", "lr_min", "warmup_epochs", "sustain_epochs", "decay", "schedule",
        "weight_decay")},
    **{f"train.{k}": f"train.imbalance.{k}" for k in (
        "loss", "focal_gamma", "focal_alpha", "label_smoothing", "oversample", "positive_share", "class_weight")},
    "train.metadata": "train.meta.enabled",  # the section could not keep the name of the switch
    "train.meta_dropout": "train.meta.field_dropout",
    "train.meta_row_dropout": "train.meta.row_dropout",
    "train.meta_fusion": "train.meta.fusion",
    **{f"train.{k}": f"train.devices.{k}" for k in (
        "backend", "tpu", "cpu_replicas", "allow_cpu_fallback", "hosts", "precision", "steps_per_execution",
        "jit_compile")},
    "train.ema": "train.checkpoints.ema",
    "train.checkpoint": "train.checkpoints.keep",  # train.checkpoints.checkpoint would say it twice
    **{f"train.{k}": f"train.checkpoints.{k}" for k in ("resume", "time_budget", "tensorboard")},
    **{f"train.{k}": f"train.sources.{k}" for k in (
        "external", "external_share", "pseudo", "pseudo_share", "synthetic", "synthetic_share")},
}
