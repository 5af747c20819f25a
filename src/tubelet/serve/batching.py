"""Requests batched onto one model: a worker thread takes up to ``batch`` queued jobs and runs
them in one call, and a job whose client has gone is dropped before it runs.

Each job is a :class:`concurrent.futures.Future`: the web application awaits it, and cancels it
when its client disconnects; the worker skips a cancelled job
(``Future.set_running_or_notify_cancel``), so a request that left before its turn costs nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

_STOP = object()


class Batcher:
    """Run ``fn(items) -> results`` (one result, or an exception to raise, per item) on one
    worker thread over batches of at most ``batch`` submitted items."""

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]], batch: int, name: str = "tubelet-model"):
        if batch < 1:
            raise ValueError(f"batch={batch} must be at least 1")
        self.fn, self.batch = fn, batch
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.seconds_per_batch = 0.0  # a running mean, for a client's Retry-After
        self.batches = self.items = 0
        self._thread.start()

    def submit(self, item: Any) -> Future:
        future: Future = Future()
        self._jobs.put((item, future))
        return future

    def queued(self) -> int:
        return self._jobs.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs already taken, cancel the rest, and stop the thread."""
        self._jobs.put(_STOP)
        self._thread.join(timeout)

    def _take(self) -> list[tuple[Any, Future]] | None:
        """Up to ``batch`` live jobs: the first to come (waiting for it), then those already
        queued; a cancelled job is dropped here and takes no place in the batch."""
        taken: list[tuple[Any, Future]] = []
        while len(taken) < self.batch:
            try:
                job = self._jobs.get() if not taken else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                if taken:
                    self._jobs.put(_STOP)  # stop after this batch
                    break
                return None
            if job[1].set_running_or_notify_cancel():
                taken.append(job)
        return taken

    def _work(self) -> None:
        while (live := self._take()) is not None:
            start = time.perf_counter()
            try:
                results = list(self.fn([item for item, _ in live]))
            except BaseException as e:  # noqa: BLE001 - every waiting request is answered with it
                log.exception("a batch of %d failed", len(live))
                results = [e] * len(live)
            self.batches += 1  # counted before anyone is answered
            self.items += len(live)
            self.seconds_per_batch += (time.perf_counter() - start - self.seconds_per_batch) / min(self.batches, 20)
            for (_, f), r in zip(live, results):
                f.set_exception(r) if isinstance(r, BaseException) else f.set_result(r)
        while True:  # stopped: what is still queued will not run
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job[1].cancel()
