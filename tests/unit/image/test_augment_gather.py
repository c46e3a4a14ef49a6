"""The affine warp gathers pixels per image: the same values as the earlier gather over the flattened batch
(kept here as the reference), with TensorFlow ops (tf.data) and keras.ops (inside the model)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from melanoma.config import AugmentConfig
from melanoma.image.augment import _reflect, affine_matrices, augment_batch, keras_ops, tf_ops, transform


def flat_batch_transform(images, matrices, o):
    """The warp before the per-image gather: one gather over the batch flattened into rows (row b*size*size +
    y*size + x). Equal values, but an all-gather of the global batch under JAX's DataParallel."""
    n = o.np
    size, channels = images.shape[1], images.shape[-1]
    batch = o.batch(images)
    coords = o.range(size * size)
    xs, ys = o.cast(n.mod(coords, size), o.float32), o.cast(n.floor_divide(coords, size), o.float32)
    grid = n.stack([xs, ys, n.ones_like(xs)])
    src = n.einsum("bij,jk->bik", o.cast(matrices, o.float32), grid)
    x, y = src[:, 0], src[:, 1]
    x0, y0 = n.floor(x), n.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = o.cast(x0, o.int32), o.cast(y0, o.int32)
    flat = n.reshape(images, (-1, channels))
    offset = (o.range(batch) * (size * size))[:, None]

    def pick(yy, xx):
        idx = offset + _reflect(o, yy, size) * size + _reflect(o, xx, size)
        return n.reshape(n.take(flat, n.reshape(idx, (-1,)), axis=0), (batch, size * size, channels))

    top = pick(y0, x0) * (1 - wx) + pick(y0, x0 + 1) * wx
    bottom = pick(y0 + 1, x0) * (1 - wx) + pick(y0 + 1, x0 + 1) * wx
    return n.reshape(top * (1 - wy) + bottom * wy, (batch, size, size, channels))


def _case(batch=5, size=24, seed=0):
    """Images and a fixed set of per-image matrices that reach past every edge (rotation, shear, zoom, shift)."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    u = lambda lo, hi: rng.uniform(lo, hi, batch).astype("float32")  # noqa: E731
    args = (u(-np.pi, np.pi), u(-0.2, 0.2), u(0.7, 1.3), u(0.7, 1.3), u(-6, 6), u(-6, 6))
    return img, args


def test_per_image_gather_equals_the_flattened_batch_gather_on_both_op_sets():
    img, args = _case()
    for o in (tf_ops(), keras_ops()):
        m = affine_matrices(*args, 24, o)
        new = keras.ops.convert_to_numpy(transform(img, m, o))
        old = keras.ops.convert_to_numpy(flat_batch_transform(img, m, o))
        assert np.abs(new - img).max() > 10  # the warp moved pixels: the comparison below means something
        np.testing.assert_allclose(new, old, atol=1e-5)


def test_whole_augmentation_is_unchanged_for_a_fixed_seed():
    """augment_batch with the per-image warp equals it with the old warp, for the same random draws."""
    import melanoma.image.augment as augment

    img, _ = _case(batch=4, size=32, seed=1)
    acfg = AugmentConfig(cutout=1)
    runs = []
    for warp in (augment.transform, flat_batch_transform):
        original = augment.transform
        augment.transform = warp
        try:
            tf.random.set_seed(7)
            runs.append(augment_batch(tf.constant(img), acfg, 32, tf_ops()).numpy())
        finally:
            augment.transform = original
    assert np.abs(runs[0] - img).max() > 10
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)


def test_tf_data_last_batch_of_unknown_size_still_warps():
    """In tf.data the batch dimension can be unknown (the last, short batch): the per-image reshape copes."""
    img, args = _case(batch=3, size=16)
    fn = tf.function(lambda x: transform(x, affine_matrices(*[tf.constant(a) for a in args], 16)),
                     input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    out = fn(tf.constant(img)).numpy()
    want = flat_batch_transform(tf.constant(img), affine_matrices(*[tf.constant(a) for a in args], 16), tf_ops())
    # A compiled graph and eager ops round differently: a few float32 ulps at pixel values near 255 (1.5e-5 each).
    np.testing.assert_allclose(out, want.numpy(), atol=1e-4)
