"""Batched image augmentation: flips and transpose, one affine warp, colour jitter and coarse dropout.

Every op works on a whole batch (batch, size, size, 3) of pixels in [0, 255] (uint8 or float; the maths is
float32), with one random draw per image. Rotation, shear, zoom and shift are composed into one 3x3 matrix per image and applied with a
bilinear gather (the form public TPU notebooks use, since it compiles with XLA).

The augmentation is written once against `Ops`, a small table of array functions, and runs from one of two
libraries: TensorFlow in tf.data on the host (`augment.where: data`; tf.data only runs TensorFlow ops, whatever
the Keras backend), or `keras.ops` inside the model on the accelerator (`where: model`), which is the same
code on the TensorFlow and JAX backends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from melanoma.config import AugmentConfig


@dataclass(frozen=True)
class Ops:
    """The array functions augmentation needs, all from one library."""

    np: Any  # numpy-style functions: keras.ops, or tensorflow.experimental.numpy
    uniform: Callable[[Any, float, float], Any]  # uniform(shape, low, high)
    rgb_to_hsv: Callable[[Any], Any]
    hsv_to_rgb: Callable[[Any], Any]
    batch: Callable[[Any], Any]  # the batch size of a tensor (static when known)
    cast: Callable[[Any, Any], Any]  # cast(x, dtype)
    range: Callable[[Any], Any]  # int32 0..n-1, n possibly a tensor (tf.data's last batch)
    zeros: Callable[[Any], Any]  # float32 zeros of a shape that may hold a tensor
    # rows(x, idx): x (batch, n, c), idx int32 (batch, m) -> (batch, m, c), each image gathering from its own
    # rows only, so a batch split over devices needs no pixels from another device (no all-gather)
    rows: Callable[[Any, Any], Any]
    int32: Any
    float32: Any


def tf_ops() -> Ops:
    """TensorFlow ops, for tf.data (its own random state, no seed needed)."""
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    return Ops(np=tnp, uniform=lambda shape, lo, hi: tf.random.uniform(shape, lo, hi),
               rgb_to_hsv=tf.image.rgb_to_hsv, hsv_to_rgb=tf.image.hsv_to_rgb,
               batch=lambda x: x.shape[0] if x.shape[0] is not None else tf.shape(x)[0], cast=tf.cast,
               range=lambda k: tf.range(k, dtype=tf.int32), zeros=lambda shape: tf.zeros(shape, tf.float32),
               rows=lambda x, idx: tf.gather(x, idx, axis=1, batch_dims=1), int32=tf.int32, float32=tf.float32)


def keras_ops(seed: keras.random.SeedGenerator | None = None) -> Ops:
    """keras.ops, for inside a model on any backend; random draws advance `seed` (a layer's SeedGenerator),
    since a fixed integer seed would repeat the same draw every step once the step is compiled."""
    ops = keras.ops
    return Ops(np=ops, uniform=lambda shape, lo, hi: keras.random.uniform(shape, lo, hi, seed=seed),
               rgb_to_hsv=ops.image.rgb_to_hsv, hsv_to_rgb=ops.image.hsv_to_rgb,
               batch=lambda x: ops.shape(x)[0], cast=ops.cast, range=lambda k: ops.arange(k, dtype="int32"),
               zeros=lambda shape: ops.zeros(shape, "float32"),
               rows=lambda x, idx: ops.take_along_axis(x, idx[..., None], axis=1), int32="int32", float32="float32")


def affine_matrices(angles, shears, zoom_x, zoom_y, shift_x, shift_y, size: int, o: Ops | None = None):
    """(batch, 3, 3) matrices mapping an output pixel (x, y, 1) to the input pixel it samples.

    Angles and shears in radians, zooms as scale factors (> 1 magnifies), shifts in pixels; the rotation,
    shear and zoom are about the image centre.
    """
    o = o or tf_ops()
    n = o.np
    one, zero = n.ones_like(angles), n.zeros_like(angles)

    def mat(rows):
        return n.stack([n.stack(r, axis=-1) for r in rows], axis=-2)

    c = (float(size) - 1.0) / 2.0
    centre = mat([[one, zero, one * c], [zero, one, one * c], [zero, zero, one]])
    uncentre = mat([[one, zero, -one * c], [zero, one, -one * c], [zero, zero, one]])
    cos, sin = n.cos(angles), n.sin(angles)
    rotation = mat([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shear = mat([[one, n.tan(shears), zero], [zero, one, zero], [zero, zero, one]])
    zoom = mat([[1.0 / zoom_x, zero, zero], [zero, 1.0 / zoom_y, zero], [zero, zero, one]])
    shift = mat([[one, zero, -shift_x], [zero, one, -shift_y], [zero, zero, one]])
    out = centre
    for m in (rotation, shear, zoom, uncentre, shift):
        out = n.matmul(out, m)
    return out


def _reflect(o: Ops, i, n: int):
    """Fold integer coordinates back into [0, n - 1] by mirroring at the edges."""
    period = 2 * (n - 1)
    i = o.np.mod(i, period)
    return o.np.where(i > n - 1, period - i, i)


def transform(images, matrices, o: Ops | None = None):
    """Warp a batch of square images by per-image 3x3 matrices: bilinear, reflected at the edges."""
    o = o or tf_ops()
    n = o.np
    size, channels = images.shape[1], images.shape[-1]
    if size is None:
        raise ValueError("transform needs a static image size")
    coords = o.range(size * size)
    xs, ys = o.cast(n.mod(coords, size), o.float32), o.cast(n.floor_divide(coords, size), o.float32)
    grid = n.stack([xs, ys, n.ones_like(xs)])  # (3, size*size): output pixel (x, y, 1), row-major
    src = n.einsum("bij,jk->bik", o.cast(matrices, o.float32), grid)
    x, y = src[:, 0], src[:, 1]
    x0, y0 = n.floor(x), n.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = o.cast(x0, o.int32), o.cast(y0, o.int32)
    # A gather per image over its own (size*size, channels) rows. One gather over the flattened batch gives the
    # same values, but under JAX's DataParallel it compiled to an all-gather of the whole global batch onto
    # every device (hundreds of MB per step at 384 px).
    pixels = n.reshape(images, (-1, size * size, channels))

    def pick(yy, xx):
        return o.rows(pixels, _reflect(o, yy, size) * size + _reflect(o, xx, size))

    top = pick(y0, x0) * (1 - wx) + pick(y0, x0 + 1) * wx
    bottom = pick(y0 + 1, x0) * (1 - wx) + pick(y0 + 1, x0 + 1) * wx
    return n.reshape(top * (1 - wy) + bottom * wy, (-1, size, size, channels))


def _flips(images, acfg: AugmentConfig, o: Ops):
    n, batch = o.np, o.batch(images)

    def coin():
        return o.uniform((batch, 1, 1, 1), 0.0, 1.0) < 0.5

    if acfg.flip:
        images = n.where(coin(), n.flip(images, axis=2), images)
        images = n.where(coin(), n.flip(images, axis=1), images)
    if acfg.transpose:
        images = n.where(coin(), n.transpose(images, (0, 2, 1, 3)), images)
    return images


def _affine(images, acfg: AugmentConfig, size: int, o: Ops):
    if not (acfg.rotate or acfg.shear or acfg.zoom or acfg.shift):
        return images
    batch = o.batch(images)

    def uniform(limit):
        return o.uniform((batch,), -limit, limit) if limit else o.zeros((batch,))

    deg = math.pi / 180.0
    zoom = 1.0 + uniform(acfg.zoom)
    matrices = affine_matrices(uniform(acfg.rotate * deg), uniform(acfg.shear * deg), zoom,
                               zoom * (1.0 + uniform(acfg.zoom / 2)),  # mostly isotropic, a little aspect change
                               uniform(acfg.shift * size), uniform(acfg.shift * size), size, o)
    return transform(images, matrices, o)


def _colour(images, acfg: AugmentConfig, o: Ops):
    n, batch = o.np, o.batch(images)

    def factor(spread):
        return o.uniform((batch, 1, 1, 1), 1.0 - spread, 1.0 + spread)

    if acfg.hue > 0:
        hsv = o.rgb_to_hsv(n.clip(images, 0.0, 255.0) / 255.0)
        hue = n.mod(hsv[..., :1] + o.uniform((batch, 1, 1, 1), -acfg.hue, acfg.hue), 1.0)
        images = o.hsv_to_rgb(n.concatenate([hue, hsv[..., 1:]], axis=-1)) * 255.0
    if acfg.saturation > 0:
        gray = n.mean(images, axis=-1, keepdims=True)
        images = gray + (images - gray) * factor(acfg.saturation)
    if acfg.contrast > 0:
        mean = n.mean(images, axis=(1, 2), keepdims=True)
        images = mean + (images - mean) * factor(acfg.contrast)
    if acfg.brightness > 0:
        images = images + o.uniform((batch, 1, 1, 1), -acfg.brightness, acfg.brightness) * 255.0
    return images


def _cutout(images, acfg: AugmentConfig, size: int, o: Ops):
    """Zero `cutout` square holes (side cutout_size x size) per image, each image with probability cutout_prob."""
    if acfg.cutout <= 0 or acfg.cutout_size <= 0:
        return images
    n, batch = o.np, o.batch(images)
    half = acfg.cutout_size * size / 2.0
    centres = o.uniform((batch, acfg.cutout, 2), 0.0, float(size))
    pos = o.cast(o.range(size), o.float32)
    inside_y = n.abs(pos[None, None, :] - centres[..., :1]) < half  # (batch, holes, size)
    inside_x = n.abs(pos[None, None, :] - centres[..., 1:]) < half
    holes = n.logical_and(inside_y[:, :, :, None], inside_x[:, :, None, :])  # (batch, holes, size, size)
    mask = n.any(holes, axis=1)[..., None]
    mask = n.logical_and(mask, o.uniform((batch, 1, 1, 1), 0.0, 1.0) < acfg.cutout_prob)
    return n.where(mask, n.zeros_like(images), images)


def augment_batch(images, acfg: AugmentConfig, size: int, o: Ops | None = None):
    """Flips/transpose, then one affine warp, then colour jitter, clipping to [0, 255], then cutout.
    `o`: TensorFlow ops by default (tf.data); keras_ops(seed) inside a model."""
    o = o or tf_ops()
    images = _flips(o.cast(images, o.float32), acfg, o)
    images = _affine(images, acfg, size, o)
    images = o.np.clip(_colour(images, acfg, o), 0.0, 255.0)
    return _cutout(images, acfg, size, o)


# Deterministic test-time views (TTA): flips over these axes of a (batch, height, width, channels) batch
# (1: up-down, 2: left-right), applied on the device (augment.Flip) in training's TTA and the exported model.
FLIP_VIEWS = {"flip_lr": [2], "flip_ud": [1], "flip_lr_ud": [1, 2]}


@keras.saving.register_keras_serializable(package="melanoma")
class Augment(keras.layers.Layer):
    """augment_batch as a layer, on the accelerator, with keras.ops (the same code on the TensorFlow and JAX
    backends) and its own SeedGenerator. Active in training only; with `always`, at inference too: a random
    test-time view (TTA). uint8 images come back as uint8 (rounded), float ones as float32."""

    def __init__(self, augment: dict, size: int, seed: int | None = None, always: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # colour maths in float32 even under mixed precision
        super().__init__(**kwargs)
        self.augment, self.size, self.seed, self.always = dict(augment), int(size), seed, bool(always)
        self._acfg = AugmentConfig(**self.augment)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not (training or self.always):
            return images
        out = augment_batch(images, self._acfg, self.size, keras_ops(self.seed_generator))
        if keras.backend.standardize_dtype(images.dtype) == "uint8":
            return keras.ops.cast(keras.ops.round(out), "uint8")  # already clipped to [0, 255]
        return out

    def compute_output_spec(self, images, training=None):
        dtype = images.dtype if keras.backend.standardize_dtype(images.dtype) == "uint8" else "float32"
        return keras.KerasTensor(images.shape, dtype)

    def get_config(self):
        return {**super().get_config(), "augment": self.augment, "size": self.size, "seed": self.seed,
                "always": self.always}


@keras.saving.register_keras_serializable(package="melanoma")
class Flip(keras.layers.Layer):
    """A deterministic flip of (batch, height, width, channels) images over `axes` (1: up-down, 2: left-right):
    the TTA views of training (augment.FLIP_VIEWS), made part of the exported model."""

    def __init__(self, axes: list[int], **kwargs):
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]

    def call(self, x):
        for axis in self.axes:
            x = keras.ops.flip(x, axis=axis)
        return x

    def get_config(self):
        return {**super().get_config(), "axes": self.axes}
