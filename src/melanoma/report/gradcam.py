"""Grad-CAM heat maps of this package's image models, on the TensorFlow and JAX backends.

Every model of melanoma.image.models is input -> (rescaling) -> backbone ending in global average pooling ->
(metadata join) -> dropout -> sigmoid unit "pred". Grad-CAM needs the gradient of the prediction with respect to
the last feature map A (the pooling's input): the model is split there, the head is re-applied to A with
keras.ops, and the gradient is taken by the backend's own machinery (tf.GradientTape on TensorFlow, jax.grad of
a stateless call on JAX). The map is relu(sum_k alpha_k A_k) with alpha_k the spatial mean of dP/dA_k,
upsampled to the image and scaled to [0, 1] per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GradCAM:
    def __init__(self, model: Any, column: int = 0):
        """`column`: the output explained (a diagnosis head's melanoma column; 0 for the sigmoid unit)."""
        import keras

        self.keras = keras
        self.model = model
        backbone = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
        if backbone is None:
            raise ValueError(f"{model.name}: no nested backbone to take a feature map from")
        pools = [layer for layer in backbone.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
        if not pools:
            raise ValueError(f"{backbone.name}: the backbone does not end in global average pooling")
        self.features = keras.Model(backbone.inputs, pools[-1].input)
        names = {layer.name for layer in model.layers}
        self.scale = model.get_layer("scale") if "scale" in names else None
        self.meta_dense = model.get_layer("meta_dense") if "meta_dense" in names else None
        self.pred = model.get_layer("pred")
        self.column = column

    def _call(self, layer, x):
        """layer(x); on JAX as a stateless call, so jax.grad traces a pure function of x."""
        if self.keras.backend.backend() == "jax":
            out, _ = layer.stateless_call([v.value for v in layer.trainable_variables],
                                          [v.value for v in layer.non_trainable_variables], x)
            return out
        return layer(x)

    def _head(self, fmap, meta):
        ops = self.keras.ops
        x = ops.mean(fmap, axis=(1, 2))
        if self.meta_dense is not None:
            x = ops.concatenate([x, self._call(self.meta_dense, meta)], axis=-1)
        return self._call(self.pred, x)[:, self.column]

    def _gradient(self, fmap, meta):
        backend = self.keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                tape.watch(fmap)
                pred = self._head(fmap, meta)
            return pred, tape.gradient(pred, fmap)
        if backend == "jax":
            import jax

            # Each image's prediction depends on its own map only, so the gradient of the sum is per image.
            pred = self._head(fmap, meta)
            grad = jax.grad(lambda a: self.keras.ops.sum(self._head(a, meta)))(fmap)
            return pred, grad
        raise ValueError(f"Grad-CAM supports the tensorflow and jax backends, not {backend}")

    def __call__(self, images: np.ndarray, meta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(predictions (n,), heat maps (n, H, W) in [0, 1]) for images (n, H, W, 3) in [0, 255], uint8 as the
        models take them (a float array is cast to uint8 first, as the model itself would)."""
        ops = self.keras.ops
        if (self.meta_dense is None) != (meta is None):
            raise ValueError("pass meta exactly when the model has a metadata input")
        x = ops.convert_to_tensor(np.asarray(images).astype(np.uint8).astype(np.float32))
        if self.scale is not None:
            x = self.scale(x)
        fmap = self.features(x, training=False)
        m = None if meta is None else ops.convert_to_tensor(np.asarray(meta, dtype=np.float32))
        pred, grad = self._gradient(fmap, m)
        alpha = ops.mean(grad, axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(alpha * fmap, axis=-1, keepdims=True))
        cam = ops.image.resize(cam, (images.shape[1], images.shape[2]), interpolation="bilinear")[..., 0]
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), ops.zeros_like(cam))
        return ops.convert_to_numpy(pred).astype(np.float64), ops.convert_to_numpy(cam).astype(np.float64)
