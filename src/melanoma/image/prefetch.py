"""Batches put on the devices ahead of the step that needs them (JAX with a Keras distribution only).

Keras' JAX trainer copies a batch to the devices one step ahead only without a distribution; under
DataParallel (`_get_distributed_iterator` in keras/src/backend/jax/trainer.py) each batch is read from tf.data
and placed on the devices when the step asks for it. `DevicePrefetch` does that work in a background thread,
`depth` batches ahead, with the distribution's own data sharding, so the host read, the numpy copy and the
transfer of batch n+1 overlap step n. Keras' later placement of an array that already has that sharding is a
no-op. The batches and their order are those of the dataset: training is unchanged (tests/test_tpu_path.py).
"""

from __future__ import annotations

import queue
import threading
import time

_END = object()


class DevicePrefetch:
    """An endless or finite iterator of device-placed batches, filled by one thread; `close()` stops it."""

    def __init__(self, ds, depth: int = 2):
        import keras

        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source = iter(ds.as_numpy_iterator())
        # Keras keeps the distribution per thread: take it here, in the thread that set it.
        self._distribution = keras.distribution.distribution()
        if self._distribution is None:
            raise ValueError("DevicePrefetch needs a Keras distribution (keras.distribution.set_distribution)")
        self._layouts = None
        # seconds the training loop waited for a batch, and the thread spent reading and placing them
        self.stats = {"batches": 0, "wait_s": 0.0, "fill_s": 0.0}
        self._thread = threading.Thread(target=self._fill, name="device-prefetch", daemon=True)
        self._thread.start()

    def _place(self, batch):
        import jax
        from keras import tree

        if self._layouts is None:  # one data layout per input, computed once (the batch shapes are fixed)
            self._layouts = tree.map_structure(
                lambda a: self._distribution.get_data_layout(a.shape).backend_layout, batch)
        return tree.map_structure(jax.make_array_from_process_local_data, self._layouts, batch)

    def _fill(self) -> None:
        try:
            start = time.perf_counter()
            for batch in self._source:
                item = self._place(batch)
                self.stats["fill_s"] += time.perf_counter() - start
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
                start = time.perf_counter()
            self._put_end(_END)
        except BaseException as e:  # handed to the consumer, raised in the training loop
            self._put_end(e)

    def _put_end(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def batches(self):
        """A generator over the batches: what Keras' fit accepts besides tf.data."""
        yield from self

    def __next__(self):
        start = time.perf_counter()
        item = self._queue.get()
        self.stats["wait_s"] += time.perf_counter() - start
        self.stats["batches"] += 1
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wanted(backend: str) -> bool:
    """Only on JAX with a distribution set: elsewhere Keras already looks a batch ahead (JAX without a
    distribution on an accelerator) or tf.data feeds the step itself (TensorFlow)."""
    if backend != "jax":
        return False
    import keras

    return keras.distribution.distribution() is not None
