"""Batched image augmentation: flips and transpose, one affine warp, colour jitter and coarse dropout.

Every op works on a whole batch (batch, size, size, 3) of float32 pixels in [0, 255], with one random draw
per image. Rotation, shear, zoom and shift are composed into one 3x3 matrix per image and applied with a
bilinear gather (the form public TPU notebooks use, since it compiles with XLA on TPUs). The same function
runs in tf.data on the host (`augment.where: data`) or inside the model on the accelerator (`where: model`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from melanoma.config import AugmentConfig
from melanoma.errors import ConfigError

PLACEMENTS = ("auto", "data", "model")


def affine_matrices(angles: tf.Tensor, shears: tf.Tensor, zoom_x: tf.Tensor, zoom_y: tf.Tensor,
                    shift_x: tf.Tensor, shift_y: tf.Tensor, size: int) -> tf.Tensor:
    """(batch, 3, 3) matrices mapping an output pixel (x, y, 1) to the input pixel it samples.

    Angles and shears in radians, zooms as scale factors (> 1 magnifies), shifts in pixels; the rotation,
    shear and zoom are about the image centre.
    """
    one, zero = tf.ones_like(angles), tf.zeros_like(angles)

    def mat(rows):
        return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)

    c = (float(size) - 1.0) / 2.0
    centre = mat([[one, zero, one * c], [zero, one, one * c], [zero, zero, one]])
    uncentre = mat([[one, zero, -one * c], [zero, one, -one * c], [zero, zero, one]])
    cos, sin = tf.cos(angles), tf.sin(angles)
    rotation = mat([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shear = mat([[one, tf.tan(shears), zero], [zero, one, zero], [zero, zero, one]])
    zoom = mat([[1.0 / zoom_x, zero, zero], [zero, 1.0 / zoom_y, zero], [zero, zero, one]])
    shift = mat([[one, zero, -shift_x], [zero, one, -shift_y], [zero, zero, one]])
    return centre @ rotation @ shear @ zoom @ uncentre @ shift


def _reflect(i: tf.Tensor, n: int) -> tf.Tensor:
    """Fold integer coordinates back into [0, n - 1] by mirroring at the edges."""
    period = 2 * (n - 1)
    i = tf.math.floormod(i, period)
    return tf.where(i > n - 1, period - i, i)


def transform(images: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """Warp a batch of square images by per-image 3x3 matrices: bilinear, reflected at the edges."""
    size = images.shape[1]
    if size is None:
        raise ValueError("transform needs a static image size")
    batch = tf.shape(images)[0]
    ys, xs = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij")
    grid = tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1]), tf.ones([size * size])])  # (3, size*size)
    src = tf.einsum("bij,jk->bik", tf.cast(matrices, tf.float32), grid)
    x, y = src[:, 0], src[:, 1]
    x0, y0 = tf.floor(x), tf.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    flat = tf.reshape(images, [batch, size * size, images.shape[-1]])

    def pick(yy, xx):
        return tf.gather(flat, _reflect(yy, size) * size + _reflect(xx, size), batch_dims=1)

    top = pick(y0, x0) * (1 - wx) + pick(y0, x0 + 1) * wx
    bottom = pick(y0 + 1, x0) * (1 - wx) + pick(y0 + 1, x0 + 1) * wx
    return tf.reshape(top * (1 - wy) + bottom * wy, tf.shape(images))


def _flips(images: tf.Tensor, acfg: AugmentConfig) -> tf.Tensor:
    batch = tf.shape(images)[0]
    coin = lambda: tf.random.uniform([batch, 1, 1, 1]) < 0.5  # noqa: E731
    if acfg.flip:
        images = tf.where(coin(), tf.reverse(images, axis=[2]), images)
        images = tf.where(coin(), tf.reverse(images, axis=[1]), images)
    if acfg.transpose:
        images = tf.where(coin(), tf.transpose(images, [0, 2, 1, 3]), images)
    return images


def _affine(images: tf.Tensor, acfg: AugmentConfig, size: int) -> tf.Tensor:
    if not (acfg.rotate or acfg.shear or acfg.zoom or acfg.shift):
        return images
    batch = tf.shape(images)[0]

    def uniform(limit):
        return tf.random.uniform([batch], -limit, limit) if limit else tf.zeros([batch])

    deg = math.pi / 180.0
    zoom = 1.0 + uniform(acfg.zoom)
    matrices = affine_matrices(uniform(acfg.rotate * deg), uniform(acfg.shear * deg), zoom,
                               zoom * (1.0 + uniform(acfg.zoom / 2)),  # mostly isotropic, a little aspect change
                               uniform(acfg.shift * size), uniform(acfg.shift * size), size)
    return transform(images, matrices)


def _colour(images: tf.Tensor, acfg: AugmentConfig) -> tf.Tensor:
    batch = tf.shape(images)[0]

    def factor(spread):
        return tf.random.uniform([batch, 1, 1, 1], 1.0 - spread, 1.0 + spread)

    if acfg.hue > 0:
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 255.0) / 255.0)
        hue = tf.math.floormod(hsv[..., :1] + tf.random.uniform([batch, 1, 1, 1], -acfg.hue, acfg.hue), 1.0)
        images = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1)) * 255.0
    if acfg.saturation > 0:
        gray = tf.reduce_mean(images, axis=-1, keepdims=True)
        images = gray + (images - gray) * factor(acfg.saturation)
    if acfg.contrast > 0:
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = mean + (images - mean) * factor(acfg.contrast)
    if acfg.brightness > 0:
        images = images + tf.random.uniform([batch, 1, 1, 1], -acfg.brightness, acfg.brightness) * 255.0
    return images


def _cutout(images: tf.Tensor, acfg: AugmentConfig, size: int) -> tf.Tensor:
    """Zero `cutout` square holes (side cutout_size x size) per image, each image with probability cutout_prob."""
    if acfg.cutout <= 0 or acfg.cutout_size <= 0:
        return images
    batch = tf.shape(images)[0]
    half = acfg.cutout_size * size / 2.0
    centres = tf.random.uniform([batch, acfg.cutout, 2], 0.0, float(size))
    pos = tf.range(size, dtype=tf.float32)
    inside_y = tf.abs(pos[None, None, :] - centres[..., :1]) < half  # (batch, holes, size)
    inside_x = tf.abs(pos[None, None, :] - centres[..., 1:]) < half
    holes = tf.logical_and(inside_y[:, :, :, None], inside_x[:, :, None, :])  # (batch, holes, size, size)
    mask = tf.reduce_any(holes, axis=1)[..., None]
    mask = tf.logical_and(mask, (tf.random.uniform([batch, 1, 1, 1]) < acfg.cutout_prob))
    return tf.where(mask, tf.zeros_like(images), images)


def augment_batch(images: tf.Tensor, acfg: AugmentConfig, size: int) -> tf.Tensor:
    """Flips/transpose, then one affine warp, then colour jitter, clipping to [0, 255], then cutout."""
    images = _flips(images, acfg)
    images = _affine(images, acfg, size)
    images = tf.clip_by_value(_colour(images, acfg), 0.0, 255.0)
    return _cutout(images, acfg, size)


# Deterministic test-time views (TTA): each a function of the image batch.
FLIP_VIEWS = {
    "flip_lr": lambda x: tf.reverse(x, axis=[2]),
    "flip_ud": lambda x: tf.reverse(x, axis=[1]),
    "flip_lr_ud": lambda x: tf.reverse(x, axis=[1, 2]),
}


def check_augment(acfg: AugmentConfig) -> None:
    if acfg.where not in PLACEMENTS:
        raise ConfigError(f"train.augment.where must be one of {PLACEMENTS}, got {acfg.where!r}")
    for name in ("rotate", "shear", "zoom", "shift", "hue", "saturation", "contrast", "brightness", "cutout_size"):
        if getattr(acfg, name) < 0:
            raise ConfigError(f"train.augment.{name} must be >= 0, got {getattr(acfg, name)}")
    if acfg.zoom >= 1 or acfg.saturation > 1 or acfg.contrast > 1 or acfg.hue > 0.5:
        raise ConfigError("train.augment: zoom must be < 1, saturation and contrast <= 1, hue <= 0.5")


@keras.saving.register_keras_serializable(package="melanoma")
class Augment(keras.layers.Layer):
    """augment_batch as a layer: active in training only, so it runs on the accelerator inside the model."""

    def __init__(self, augment: dict, size: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # colour maths in float32 even under mixed precision
        super().__init__(**kwargs)
        self.augment, self.size = dict(augment), int(size)
        self._acfg = AugmentConfig(**self.augment)

    def call(self, images, training=None):
        if not training:
            return images
        return augment_batch(images, self._acfg, self.size)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "augment": self.augment, "size": self.size}
