"""Image models: a registry of keras.applications backbones with a pooled sigmoid head.

Every model takes uint8 images (`image_input`) and casts and scales them inside the graph (`model_pixels`),
so the input pipeline is the same for all of them and images cross the host and reach the devices at one
byte per value: EfficientNet (V1 and V2, with include_preprocessing) rescale 0-255 internally;
InceptionResNetV2 expects [-1, 1], which a Rescaling layer provides.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from melanoma.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    constructor: Callable[..., keras.Model]
    scale: float | None  # None: the backbone rescales 0-255 itself; else x * scale + offset first
    offset: float = 0.0
    min_size: int = 32
    kwargs: tuple[tuple[str, object], ...] = ()


def _registry() -> dict[str, ModelSpec]:
    apps = keras.applications
    reg = {}
    for i in range(8):
        name = f"efficientnet_b{i}"
        reg[name] = ModelSpec(name, getattr(apps, f"EfficientNetB{i}"), None)
    for suffix in ("B0", "B1", "B2", "B3", "S", "M", "L"):
        name = f"efficientnet_v2_{suffix.lower()}"
        reg[name] = ModelSpec(name, getattr(apps, f"EfficientNetV2{suffix}"), None,
                              kwargs=(("include_preprocessing", True),))
    reg["inception_resnet_v2"] = ModelSpec("inception_resnet_v2", apps.InceptionResNetV2, 1 / 127.5, -1.0,
                                           min_size=75)
    reg["simple_cnn"] = ModelSpec("simple_cnn", simple_cnn, 1 / 255.0, min_size=8)
    # The seeds' backbones. VGG16 and DenseNet121 want caffe / torch input scaling, which a Rescaling cannot
    # express (per-channel means, BGR order): their constructors put an ImagenetPreprocess layer first.
    reg["vgg16"] = ModelSpec("vgg16", vgg16, None)
    reg["densenet121"] = ModelSpec("densenet121", densenet121, None)
    reg["resnet101v2"] = ModelSpec("resnet101v2", apps.ResNet101V2, 1 / 127.5, -1.0)  # 'tf' mode: [-1, 1]
    reg["small_cnn_32"] = ModelSpec("small_cnn_32", small_cnn_32, 1 / 255.0, min_size=32)
    reg["small_cnn_64"] = ModelSpec("small_cnn_64", small_cnn_64, 1 / 255.0, min_size=64)
    return reg


def simple_cnn(include_top: bool = False, weights: str | None = None, input_shape=(64, 64, 3), pooling="avg",
               width: int = 16) -> keras.Model:
    """A three-block CNN with the keras.applications signature: smoke runs and fast tests of the training
    machinery (strategies, resume, TTA). Not a competition model, and it has no ImageNet weights."""
    if weights == "imagenet":
        raise ConfigError("simple_cnn has no ImageNet weights: use --weights none or a file")
    inputs = keras.Input(input_shape)
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(width * 2 ** i, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, x, name="simple_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model


# keras.applications.imagenet_utils' modes, as constants: the backbones were trained on inputs scaled so.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="melanoma")
class ImagenetPreprocess(keras.layers.Layer):
    """[0, 255] RGB -> the input scaling of keras.applications' `preprocess_input`, in keras.ops (any backend).

    caffe (VGG16, ResNet50): RGB -> BGR, minus the ImageNet channel means; torch (DenseNet): / 255, minus the
    means, divided by the standard deviations. Inside the model, so every caller feeds plain 0-255 pixels.
    """

    MODES = ("caffe", "torch")

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"ImagenetPreprocess mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        ops = keras.ops
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
        mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
        std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
        return (x / 255.0 - mean) / std

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _preprocessed(constructor, mode: str, name: str, weights, input_shape, pooling) -> keras.Model:
    """A keras.applications backbone behind its ImagenetPreprocess layer, with the same signature.

    `weights` goes to the backbone itself, so 'imagenet' and backbone-only ('notop') files load as before.
    """
    inputs = keras.Input(input_shape)
    backbone = constructor(include_top=False, weights=weights, input_shape=input_shape, pooling=pooling)
    x = backbone(ImagenetPreprocess(mode, name="imagenet_preprocess")(inputs))
    return keras.Model(inputs, x, name=name)


def vgg16(include_top: bool = False, weights: str | None = None, input_shape=(224, 224, 3), pooling="avg"
          ) -> keras.Model:
    return _preprocessed(keras.applications.VGG16, "caffe", "vgg16_caffe", weights, input_shape, pooling)


def densenet121(include_top: bool = False, weights: str | None = None, input_shape=(224, 224, 3), pooling="avg"
                ) -> keras.Model:
    return _preprocessed(keras.applications.DenseNet121, "torch", "densenet121_torch", weights, input_shape,
                         pooling)


def _small_cnn(name: str, stages: int, include_top: bool, weights: str | None, input_shape, pooling,
               width: int = 32) -> keras.Model:
    """Conv-BN-ReLU baseline (one of the seeds): per stage two 3x3 Conv-BN-ReLU, then 2x2 max pooling,
    doubling the width; built for a fixed input side (32 px: 3 stages, 64 px: 4)."""
    if weights == "imagenet":
        raise ConfigError(f"{name} has no ImageNet weights: use --weights none or a file")
    inputs = keras.Input(input_shape)
    x = inputs
    for i in range(stages):
        for _ in range(2):
            x = keras.layers.Conv2D(width * 2 ** i, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def small_cnn_32(include_top: bool = False, weights: str | None = None, input_shape=(32, 32, 3), pooling="avg"
                 ) -> keras.Model:
    return _small_cnn("small_cnn_32", 3, include_top, weights, input_shape, pooling)


def small_cnn_64(include_top: bool = False, weights: str | None = None, input_shape=(64, 64, 3), pooling="avg"
                 ) -> keras.Model:
    return _small_cnn("small_cnn_64", 4, include_top, weights, input_shape, pooling)


MODELS: dict[str, ModelSpec] = _registry()


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def resolve_weights(weights: str | None) -> str | None:
    """'none' -> None, 'imagenet' -> 'imagenet', anything else must be an existing file."""
    if weights is None or str(weights).lower() in ("none", "null", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file {path} not found (use none, imagenet or a path to a .h5 file)")
    return str(path)


def image_input(size: int):
    """The image input of every model here (training, prediction with TTA, the exported graph): uint8
    (size, size, 3), as the reader decodes records (pipeline.decode_image) and predict/serve prepare files
    (data.images.model_input). Float arrays given to it are converted to uint8 by Keras (truncated)."""
    return keras.Input((size, size, 3), dtype="uint8", name="image")


@keras.saving.register_keras_serializable(package="melanoma")
class Pixels(keras.layers.Layer):
    """uint8 pixels -> float32 in [0, 255], on the device: the first layer after `image_input`."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")  # colour maths of the augmentation stays in float32
        super().__init__(**kwargs)

    def call(self, x):
        return keras.ops.cast(x, "float32")

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, "float32")


def model_pixels(image, spec: ModelSpec, augment: dict | None = None, size: int | None = None):
    """The one place where a model turns its uint8 input into what its backbone takes: cast to float32
    (Pixels), then the training augmentation when it runs on the accelerator, then the backbone's input
    scaling when it does not scale by itself."""
    x = Pixels(name="pixels")(image)
    if augment is not None:
        from melanoma.image.augment import Augment

        x = Augment(augment, size or image.shape[1], name="augment")(x)
    if spec.scale is not None:
        x = keras.layers.Rescaling(spec.scale, spec.offset, name="scale")(x)
    return x


def build_model(name: str, size: int, weights: str | None = None, dropout: float = 0.2,
                bn_momentum: float | None = None, meta_dim: int = 0, augment: dict | None = None,
                classes: int = 1, meta_fusion: str = "joint") -> keras.Model:
    """A backbone from keras.applications with global average pooling, dropout and one sigmoid unit (or, with
    `classes` > 1, a softmax over that many classes: the diagnosis head, melanoma.image.heads).

    `weights` is None, 'imagenet', or a file: either backbone weights (for example a Kaggle dataset of
    'notop' .h5 files) or the weights of a whole model saved by this package (`model.save_weights`).
    `meta_dim` > 0 adds a "meta" input (one-hot site and sex, scaled age) joined to the image features before
    the head; the inputs are then {"image", "meta"}. With `meta_fusion` "residual" (binary head) the model
    outputs two columns instead, [with metadata, image only] (see _residual_head). `augment` (AugmentConfig
    fields) puts the training-time augmentation inside the model, so it runs on the accelerator.
    """
    spec = get_spec(name)
    if size < spec.min_size:
        raise ConfigError(f"{name} needs images of at least {spec.min_size}px, got {size}")
    weights = resolve_weights(weights)
    full_model_weights = weights if weights not in (None, "imagenet") and _is_full_model_file(weights) else None
    backbone_weights = None if full_model_weights else weights

    image = image_input(size)
    x = model_pixels(image, spec, augment, size)

    def make_backbone(weights_arg):
        return spec.constructor(include_top=False, weights=weights_arg, input_shape=(size, size, 3),
                                pooling="avg", **dict(spec.kwargs))

    if backbone_weights in (None, "imagenet"):
        try:
            backbone = make_backbone(backbone_weights)
        except Exception as e:  # keras' get_file raises a bare Exception when the download fails
            if backbone_weights == "imagenet" and "fetch failure" in str(e):
                raise ConfigError(f"could not download the ImageNet weights of {name} (no internet?): use "
                                  "--weights none, or --weights PATH with a local file (e.g. a Kaggle dataset)"
                                  ) from None
            raise
    else:
        backbone = _checked_load(lambda: make_backbone(backbone_weights), backbone_weights,
                                 f"the {name} backbone")
    if bn_momentum is not None:
        # Short runs from scratch: with the default 0.99 the moving statistics still hold much of their
        # initial values after a few hundred steps, and inference-mode predictions come out nearly constant.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    x = backbone(x)
    inputs = image
    meta = keras.Input((meta_dim,), name="meta") if meta_dim else None
    if meta is not None:
        inputs = {"image": image, "meta": meta}
    model = keras.Model(inputs, _head(x, meta, dropout, classes, meta_fusion), name=name)
    if full_model_weights is not None:
        _checked_load(lambda: model.load_weights(full_model_weights), full_model_weights,
                      f"a {name} model at {size}px")
        log.info("loaded model weights from %s", full_model_weights)
    return model


def _head(x, meta, dropout: float, classes: int, meta_fusion: str):
    """The output layers on the pooled image features (and the metadata input, if any)."""
    if meta is not None and meta_fusion == "residual" and classes == 1:
        return _residual_head(x, meta, dropout)
    if meta is not None:
        m = keras.layers.Dense(32, activation="relu", name="meta_dense")(meta)
        x = keras.layers.Concatenate(name="image_and_meta")([x, m])
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # The output stays float32 under mixed precision, so the sigmoid and the loss are computed accurately.
    return keras.layers.Dense(classes, activation="sigmoid" if classes == 1 else "softmax", dtype="float32",
                              name="pred")(x)


def _residual_head(features, meta, dropout: float):
    """Two sigmoid columns: [image logit + metadata logit, image logit alone]. The loss (binary cross-entropy
    against the one target, broadcast over both) trains the image branch on the image-only column only: the
    metadata column sees the image logit through a stop-gradient. So the image branch is an image-only model,
    and a row without metadata (the all-missing vector, which metadata dropout shows in training) gets the
    image logit plus a constant: the image-only ranking (issue 28). Column 0 is the prediction."""
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    image_logit = keras.layers.Dense(1, dtype="float32", name="image_logit")(x)
    m = keras.layers.Dense(32, activation="relu", name="meta_dense")(meta)
    meta_logit = keras.layers.Dense(1, dtype="float32", name="meta_logit")(m)
    full = keras.layers.Add(name="image_and_meta_logit")([StopGradient(name="image_logit_fixed")(image_logit),
                                                          meta_logit])
    both = keras.layers.Concatenate(name="with_and_without_meta")([full, image_logit])
    return keras.layers.Activation("sigmoid", dtype="float32", name="pred")(both)


@keras.saving.register_keras_serializable(package="melanoma")
class StopGradient(keras.layers.Layer):
    """Identity forward, no gradient backward (keras.ops.stop_gradient as a saveable layer)."""

    def call(self, x):
        return keras.ops.stop_gradient(x)


def _checked_load(load, path: str, what: str):
    """Run a weights load; a load error or any part Keras skipped (it warns and keeps fresh weights) is an error.

    A partial load must not pass silently, so Keras' per-part warnings are collected rather than printed.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = load()
        except (ValueError, KeyError, OSError) as e:
            raise ConfigError(f"weights file {path} does not fit {what}: {e}") from None
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise ConfigError(f"weights file {path} does not fit {what}: {len(skipped)} parts did not match, "
                          f"e.g. {skipped[0][:120]}")
    return result


def _is_full_model_file(path: str) -> bool:
    """True for weights saved from a whole model of this package, False for backbone-only weights.

    Keras 3 files of our models nest the backbone (stored as 'functional'); backbone files (keras.applications
    'notop' weights, Keras 2 .h5) hold the backbone's layers at the top.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = f.get("layers")
            return layers is not None and "functional" in layers
    except OSError as e:
        raise ConfigError(f"weights file {path} is not an HDF5 weights file: {e}") from None


def prediction_model(model: keras.Model, column: int | None = None) -> keras.Model:
    """Wrap a model so it returns its prediction beside an `idx` input it passes through unchanged.
    `column`: a diagnosis head's melanoma column, the one prediction kept."""
    ins = {t.name: keras.Input(t.shape[1:], dtype=t.dtype, name=t.name) for t in model.inputs}
    idx = keras.Input((), dtype="int32", name="idx")
    pred = model(ins if len(ins) > 1 else ins["image"])
    if column is not None:
        pred = SelectColumn(column, name="melanoma")(pred)
    return keras.Model({**ins, "idx": idx}, {"pred": pred, "idx": keras.layers.Identity()(idx)})


@keras.saving.register_keras_serializable(package="melanoma")
class SelectColumn(keras.layers.Layer):
    """(batch, K) -> (batch, 1): one column of a softmax, the melanoma probability of a diagnosis head (in
    training's predictions and in the exported model alike)."""

    def __init__(self, column: int, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)

    def call(self, x):
        return x[:, self.column:self.column + 1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "column": self.column}


def melanoma_output(model: keras.Model, column: int | None) -> keras.Model:
    """The model with only its melanoma probability as output (unchanged for the binary head)."""
    if column is None:
        return model
    return keras.Model(model.input, SelectColumn(column, name="melanoma")(model.output), name=model.name)
