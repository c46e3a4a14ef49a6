"""Layers of the exported inference graph (keras.ops only, so the .keras file loads on every backend)."""

from __future__ import annotations

import keras

from melanoma.image.augment import FLIP_VIEWS


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


FLIPS = FLIP_VIEWS  # the same views as training's TTA
