"""Prediction with test-time augmentation (TTA): plain, the deterministic flips and `train.tta` random
augmentations, averaged.

Every view is made on the device, inside one prediction model (`tta_model`): the host decodes each image once
and sends it as uint8; the model stacks the views of a batch into one larger batch (no cross-device traffic:
each device stacks the views of its own images), runs the network once on it and returns one prediction per
view. Random views go through the training augmentation layer itself (augment.Augment, active at inference).
"""

from __future__ import annotations

import keras
import numpy as np

from melanoma.config import AugmentConfig, TrainConfig, to_dict
from melanoma.image.augment import FLIP_VIEWS, Augment
from melanoma.image.inputs import predict_dataset
from melanoma.data.reader import Shard
from melanoma.progress import progress_bar
from melanoma.runtime.hosts import this_host

# Images per device per prediction step, as a multiple of the training batch per device: prediction keeps no
# activations for a backward pass, so twice the training batch fits wherever training does.
VIEW_BATCH_FACTOR = 2


def prediction_views(tcfg: TrainConfig) -> list[tuple[str, object]]:
    """The passes averaged at prediction time: plain (None), the deterministic flips (their axes), then `tta`
    random augmentations (the AugmentConfig)."""
    views: list[tuple[str, object]] = [("plain", None)]
    if tcfg.tta_flips:
        views += list(FLIP_VIEWS.items())
    views += [(f"tta{i + 1}", tcfg.augment) for i in range(tcfg.tta)]
    return views


def views_batch(batch_per_device: int, replicas: int, n_views: int) -> int:
    """The global batch of images per prediction step: each brings n_views images to the network, so the
    images per device stay at VIEW_BATCH_FACTOR training batches (at least one image per device)."""
    return max(1, VIEW_BATCH_FACTOR * batch_per_device // n_views) * replicas


@keras.saving.register_keras_serializable(package="melanoma")
class StackViews(keras.layers.Layer):
    """[views of (batch, ...)] -> (batch * views, ...), image-major (row b * views + v): a reshape that keeps
    every image's views on the device that holds the image."""

    def call(self, views):
        stacked = keras.ops.stack(views, axis=1)
        return keras.ops.reshape(stacked, (-1, *stacked.shape[2:]))

    def compute_output_spec(self, views):
        n = None if views[0].shape[0] is None else views[0].shape[0] * len(views)
        return keras.KerasTensor((n, *views[0].shape[1:]), views[0].dtype)


class _Times(keras.layers.Layer):
    """A layer with one integer setting, n: the number of views."""

    def __init__(self, n: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.n = int(n)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package="melanoma")
class RepeatRows(_Times):
    """(batch, ...) -> (batch * n, ...), each row n times in a row: the metadata beside StackViews' images."""

    def call(self, x):
        return keras.ops.repeat(x, self.n, axis=0)


@keras.saving.register_keras_serializable(package="melanoma")
class ViewColumns(_Times):
    """(batch * n, 1) predictions, image-major -> (batch, n): one column per view."""

    def call(self, x):
        return keras.ops.reshape(x, (-1, self.n))

    def compute_output_shape(self, input_shape):
        return (None, self.n)


def tta_model(model: keras.Model, tcfg: TrainConfig, column: int | None = None, seed: int = 0) -> keras.Model:
    """{"image", ["meta"], "idx"} -> {"pred": (batch, views) in prediction_views order, "idx"}.

    `column`: a diagnosis head's melanoma column, the one prediction kept. Random views draw from their own
    seeded generators (seed + view number), so a run's TTA is repeatable.
    """
    from melanoma.image.models import SelectColumn
    from melanoma.image.augment import Flip

    views = prediction_views(tcfg)
    ins = {t.name: keras.Input(t.shape[1:], dtype=t.dtype, name=t.name) for t in model.inputs}
    idx = keras.Input((), dtype="int32", name="idx")
    image, made = ins["image"], []
    for i, (name, view) in enumerate(views):
        if view is None:
            made.append(image)
        elif isinstance(view, AugmentConfig):
            made.append(Augment(to_dict(view), tcfg.size, seed=seed + i, always=True, name=name)(image))
        else:
            made.append(Flip(view, name=name)(image))
    n = len(views)
    x = {"image": StackViews(name="views")(made) if n > 1 else image}
    if "meta" in ins:
        x["meta"] = RepeatRows(n, name="meta_views")(ins["meta"]) if n > 1 else ins["meta"]
    pred = model(x if len(ins) > 1 else x["image"])
    if column is not None:
        pred = SelectColumn(column, name="melanoma")(pred)
    pred = ViewColumns(n, name="view_columns")(pred)
    return keras.Model({**ins, "idx": idx}, {"pred": pred, "idx": keras.layers.Identity()(idx)})


class _Progress(keras.callbacks.Callback):
    def __init__(self, bar, batch: int, total: int):
        super().__init__()
        self.bar, self.batch, self.left = bar, batch, total

    def on_predict_batch_end(self, batch, logs=None):
        step = min(self.batch, self.left)
        self.left -= step
        self.bar.update(step)


def predict(tm: keras.Model, shards: list[Shard], names: np.ndarray, tcfg: TrainConfig,
            stored_size: int | None, batch: int, pad: bool = False) -> dict[str, np.ndarray]:
    """Prediction per name for each view (see prediction_views), aligned through idx: one pass over the records.

    `tm` is a tta_model: it returns each image's predictions beside the idx of its own record. `pad` fills the
    last batch up to `batch` with rows of idx -1 (dropped here): a batch split over several devices must divide
    evenly. On several hosts `batch` is this host's part of the global batch: each host predicts its own
    records, and every host gets everyone's predictions (predict_on_hosts).
    """
    views, host = prediction_views(tcfg), this_host()
    ds = predict_dataset(shards, names, tcfg.size, stored_size, batch, meta=tcfg.meta.enabled, pad=pad, host=host)
    with progress_bar(len(names), f"predict ({len(views)} view{'s' * (len(views) > 1)})") as bar:
        if host.count > 1:
            res = predict_on_hosts(tm, ds, bar)
        else:
            res = tm.predict(ds, verbose=0, callbacks=[_Progress(bar, batch, len(names))])
    idx = np.asarray(res["idx"]).reshape(-1)
    pred = np.asarray(res["pred"], dtype=np.float64).reshape(len(idx), len(views))
    real = idx >= 0 if pad else slice(None)
    idx, pred = idx[real], pred[real]
    n = len(names)
    if (idx < 0).any() or len(idx) != n or len(np.unique(idx)) != n:
        raise RuntimeError(f"prediction ids do not match the {n} records: "
                           f"{len(idx)} predictions, {len(np.unique(idx))} distinct ids")
    aligned = np.empty((n, len(views)))
    aligned[idx] = pred
    return {name: aligned[:, k] for k, (name, _) in enumerate(views)}


def predict_on_hosts(tm: keras.Model, ds, bar) -> dict[str, np.ndarray]:
    """tm's outputs over this host's batches, gathered from every host (rows in host order; idx says whose).

    Keras' own predict turns each output into one numpy array, which a batch spread over several hosts'
    devices cannot be: the step runs jitted here, its outputs kept sharded along the batch, each host takes
    its own rows and one all-gather at the end gives every host all of them."""
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    from melanoma.image.prefetch import DevicePrefetch

    distribution = keras.distribution.distribution()
    rows = NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec(distribution.batch_dim_name))
    trainable = [v.value for v in tm.trainable_variables]
    state = [v.value for v in tm.non_trainable_variables]  # the random views' seed generators move on per batch
    step = jax.jit(lambda tv, ntv, x: tm.stateless_call(tv, ntv, x, training=False),
                   out_shardings=(rows, [a.sharding for a in state]))
    local = []
    with DevicePrefetch(ds) as batches:
        for x in batches:
            out, state = step(trainable, state, x)
            local.append({k: _own_rows(v) for k, v in out.items()})
            bar.update(int((local[-1]["idx"] >= 0).sum()))
    mine = {k: np.concatenate([b[k] for b in local]) for k in local[0]}
    return {k: np.asarray(multihost_utils.process_allgather(v)).reshape(-1, *v.shape[1:]) for k, v in mine.items()}


def _own_rows(array) -> np.ndarray:
    """The rows of a batch-sharded array that this host's devices hold, in order."""
    shards = {s.index[0].start or 0: np.asarray(s.data) for s in array.addressable_shards}
    return np.concatenate([shards[k] for k in sorted(shards)])


def mean_views(views: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(list(views.values()), axis=0)
