"""Micro-batching: concurrent requests share one model call.

Requests put (image, metadata) on a queue and wait on a Future. One thread takes the first waiting item,
then whatever else arrives within `max_wait` seconds (or is already queued, up to `max_batch`), and runs the
model once for all of them. While the model runs, new requests queue up, so under load batches fill without
waiting. Batches are padded to a power of two, so the model sees only log2(max_batch)+1 shapes: each is
compiled once (at warm-up), never per request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)
_STOP = object()


def bucket_sizes(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


class MicroBatcher:
    """`submit(image, meta)` -> Future of the probability; `fn(images, metas or None)` -> probabilities."""

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray], max_batch: int = 32,
                 max_wait: float = 0.005):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self.buckets = bucket_sizes(max_batch)
        self._queue: queue.Queue = queue.Queue()
        self.batches = self.images = 0
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray, meta: np.ndarray | None = None) -> Future:
        fut: Future = Future()
        self._queue.put((image, meta, fut))
        return fut

    def warmup(self, image: np.ndarray, meta: np.ndarray | None = None) -> None:
        """Run every padded batch shape once, so no request pays for compiling one."""
        for b in self.buckets:
            self._run([(image, meta, Future()) for _ in range(b)])

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def stats(self) -> dict:
        return {"batches": self.batches, "images": self.images,
                "mean_batch": round(self.images / self.batches, 2) if self.batches else None}

    def _collect(self, first) -> list:
        items = [first]
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            try:  # what is already queued joins at once; then wait for company until the deadline
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                self._queue.put(_STOP)  # seen again by the loop, after this batch
                break
            items.append(item)
        return items

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            self._run(self._collect(first))

    def _run(self, items: list) -> None:
        n = len(items)
        size = next(b for b in self.buckets if b >= n)
        images = np.stack([it[0] for it in items] + [items[0][0]] * (size - n))
        metas = None if items[0][1] is None else np.stack([it[1] for it in items] + [items[0][1]] * (size - n))
        try:
            probs = self.fn(images, metas)
        except Exception as e:  # a model failure answers every waiting request, and the loop keeps serving
            log.exception("micro-batcher: the model call failed")
            for it in items:
                it[2].set_exception(e)
            return
        self.batches += 1
        self.images += n
        for it, p in zip(items, probs[:n]):
            it[2].set_result(float(p))
