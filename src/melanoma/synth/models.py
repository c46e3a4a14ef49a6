"""The CycleGAN's networks in Keras 3 layers only (TensorFlow and JAX backends): two generators, a PatchGAN.

Inputs and outputs are images scaled to [-1, 1] (tanh output). Normalisation is instance norm
(GroupNormalization with one group per channel), as in CycleGAN: batch statistics of a batch of one would
be meaningless.
"""

from __future__ import annotations

import keras
from keras import layers


class ReflectPad(layers.Layer):
    """Reflection padding of the two spatial axes (ResNet generator: no zero border for the convolutions to learn)."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + 2 * self.pad  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def instance_norm(filters: int) -> layers.Layer:
    return layers.GroupNormalization(groups=filters, epsilon=1e-5)


def halvings(size: int, limit: int) -> int:
    """How many stride-2 levels a U-Net gets: while the side halves evenly, at most `limit` (256 px: 8, to 1x1;
    224 px: 5, to 7x7)."""
    n = 0
    while size % 2 == 0 and size > 1 and n < limit:
        size //= 2
        n += 1
    return n


def unet_generator(size: int, filters: int, depth: int, name: str) -> keras.Model:
    """The pix2pix U-Net: 4x4 stride-2 convolutions down, transposed convolutions up, skips between levels."""
    levels = halvings(size, depth)
    width = lambda i: filters * min(2 ** i, 8)  # noqa: E731
    inp = keras.Input((size, size, 3))
    x, skips = inp, []
    for i in range(levels):
        x = layers.Conv2D(width(i), 4, strides=2, padding="same")(x)
        if 0 < i < levels - 1:  # none on the first level (pix2pix) nor the innermost (1x1: nothing to normalise)
            x = instance_norm(width(i))(x)
        x = layers.LeakyReLU(0.2)(x)
        skips.append(x)
    for i in reversed(range(levels - 1)):
        x = layers.Conv2DTranspose(width(i), 4, strides=2, padding="same")(x)
        x = layers.ReLU()(instance_norm(width(i))(x))
        x = layers.Concatenate()([x, skips[i]])
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh")(x)
    return keras.Model(inp, out, name=name)


def resnet_generator(size: int, filters: int, blocks: int, name: str) -> keras.Model:
    """The CycleGAN ResNet generator: 7x7 stem, two stride-2 convolutions, residual blocks, two up-samplings."""
    inp = keras.Input((size, size, 3))

    def conv_norm_relu(x, f, k, strides=1, transpose=False):
        conv = layers.Conv2DTranspose if transpose else layers.Conv2D
        x = conv(f, k, strides=strides, padding="same" if strides > 1 else "valid")(x)
        return layers.ReLU()(instance_norm(f)(x))

    x = conv_norm_relu(ReflectPad(3)(inp), filters, 7)
    for m in (2, 4):
        x = conv_norm_relu(x, filters * m, 3, strides=2)
    for _ in range(blocks):
        y = conv_norm_relu(ReflectPad(1)(x), filters * 4, 3)
        y = instance_norm(filters * 4)(layers.Conv2D(filters * 4, 3)(ReflectPad(1)(y)))
        x = layers.Add()([x, y])
    for m in (2, 1):
        x = conv_norm_relu(x, filters * m, 3, strides=2, transpose=True)
    out = layers.Conv2D(3, 7, activation="tanh")(ReflectPad(3)(x))
    return keras.Model(inp, out, name=name)


def patch_discriminator(size: int, filters: int, n_layers: int, name: str) -> keras.Model:
    """PatchGAN: a map of real/fake scores, each seeing one patch (70x70 with 3 layers), linear output (LSGAN)."""
    inp = keras.Input((size, size, 3))
    x = layers.LeakyReLU(0.2)(layers.Conv2D(filters, 4, strides=2, padding="same")(inp))
    for i in range(1, n_layers + 1):
        f = filters * min(2 ** i, 8)
        x = layers.Conv2D(f, 4, strides=2 if i < n_layers else 1, padding="same")(x)
        x = layers.LeakyReLU(0.2)(instance_norm(f)(x))
    out = layers.Conv2D(1, 4, padding="same")(x)
    return keras.Model(inp, out, name=name)


def generator(kind: str, size: int, filters: int, depth: int, blocks: int, name: str) -> keras.Model:
    if kind == "unet":
        return unet_generator(size, filters, depth, name)
    if kind == "resnet9":
        return resnet_generator(size, filters, blocks, name)
    raise ValueError(f"generator must be unet or resnet9, got {kind!r}")
