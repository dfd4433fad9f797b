"""Features computed by worker threads while the network runs, handed on in input order.

Worker ``w`` of ``W`` reads, resamples and frames inputs ``w, w + W, ...`` (decoding,
resampling and the STFT release the GIL) into its own queue; the consumer takes input ``i``'s
chunks from queue ``i % W``. The consumer thus sees exactly the chunks, in exactly the order,
that one thread would produce, so batches, results and their order do not depend on ``W``.
Each queue holds a bounded number of windows, so a worker that runs ahead of the network
waits instead of filling memory.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Iterator, Sequence

from audioembed.errors import InvalidArgumentError
from audioembed.streaming import FeatureChunk

# Windows a worker may have computed and not yet handed on: a few full batches, so the network
# never waits for a worker that was blocked on a full queue (a chunk always fits when empty).
DEFAULT_AHEAD_WINDOWS = 256


class _Stopped(Exception):
    """The consumer went away; the worker stops."""


class _Raised:
    """An unexpected exception in a worker, re-raised in the consumer where it occurred."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class _Channel:
    """A FIFO bounded by the number of windows it holds."""

    def __init__(self, budget: int, stop: threading.Event):
        self._items: deque = deque()
        self._held = 0
        self._budget = budget
        self._stop = stop
        self._cv = threading.Condition()

    def put(self, item, size: int) -> None:
        with self._cv:
            while self._held and self._held + size > self._budget:
                if self._stop.is_set():
                    raise _Stopped
                self._cv.wait(0.1)
            self._items.append((item, size))
            self._held += size
            self._cv.notify_all()

    def get(self):
        with self._cv:
            while not self._items:
                self._cv.wait()
            item, size = self._items.popleft()
            self._held -= size
            self._cv.notify_all()
            return item


def _size(chunk: FeatureChunk) -> int:
    return 0 if chunk.windows is None else int(chunk.windows.shape[0])


def worker_chunks(n_items: int, chunks_of: Callable[[int], Iterator[FeatureChunk]], workers: int,
             ahead_windows: int = DEFAULT_AHEAD_WINDOWS) -> Iterator[FeatureChunk]:
    """``chunks_of(0)``, ``chunks_of(1)``, ... computed by ``workers`` threads, yielded in order.

    ``chunks_of(i)`` must end input ``i`` with a chunk whose ``last`` is set.
    """
    stop = threading.Event()
    channels = [_Channel(ahead_windows, stop) for _ in range(workers)]

    def work(w: int) -> None:
        try:
            for i in range(w, n_items, workers):
                for chunk in chunks_of(i):
                    channels[w].put(chunk, _size(chunk))
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            try:
                channels[w].put(_Raised(exc), 0)
            except _Stopped:
                return  # the consumer is gone: there is no one left to tell

    threads = [threading.Thread(target=work, args=(w,), name=f"audioembed-features-{w}", daemon=True)
               for w in range(workers)]
    for t in threads:
        t.start()
    try:
        for i in range(n_items):
            while True:
                chunk = channels[i % workers].get()
                if isinstance(chunk, _Raised):
                    raise chunk.exc
                yield chunk
                if chunk.last:
                    break
    finally:
        stop.set()  # workers blocked on a full queue return; the threads are daemons


def ordered_chunks(items: Sequence, chunks_of: Callable[[int], Iterator[FeatureChunk]],
                   workers: int = 0) -> Iterator[FeatureChunk]:
    """Every input's chunks in input order: in this thread (``workers=0``) or from workers."""
    if not (isinstance(workers, int) and workers >= 0):
        raise InvalidArgumentError(f"workers must be a non-negative integer, got {workers!r}")
    if workers == 0 or len(items) == 0:
        for i in range(len(items)):
            yield from chunks_of(i)
        return
    yield from worker_chunks(len(items), chunks_of, min(workers, len(items)))
