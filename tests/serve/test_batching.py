"""The model thread: batches of at most ``batch`` jobs, a cancelled job never run, errors per job."""

from __future__ import annotations

import threading

import pytest

from tubelet.serve.batching import Batcher


def test_jobs_are_batched_and_a_cancelled_one_never_runs():
    started, release, seen = threading.Event(), threading.Event(), []

    def run(items):
        started.set()
        release.wait(10)  # the first batch holds the thread while the others queue
        seen.append(list(items))
        return [x * 10 for x in items]

    batcher = Batcher(run, batch=3)
    try:
        first = batcher.submit(0)
        assert started.wait(10)  # the worker has taken job 0 alone
        queued = [batcher.submit(i) for i in range(1, 6)]
        assert queued[1].cancel()  # its client left before its turn
        release.set()
        assert first.result(10) == 0 and [f.result(10) for i, f in enumerate(queued) if i != 1] == [10, 30, 40, 50]
        assert seen == [[0], [1, 3, 4], [5]]  # job 2 skipped; at most 3 a batch
        assert batcher.items == 5
    finally:
        batcher.close()


def test_an_exception_answers_its_own_job_and_a_failed_batch_answers_all():
    batcher = Batcher(lambda items: [ValueError(f"bad {x}") if x < 0 else x for x in items], batch=4)
    try:
        assert batcher.submit(2).result(10) == 2
        with pytest.raises(ValueError, match="bad -1"):
            batcher.submit(-1).result(10)
    finally:
        batcher.close()
    crashing = Batcher(lambda items: 1 / 0, batch=2)
    try:
        with pytest.raises(ZeroDivisionError):
            crashing.submit(1).result(10)
    finally:
        crashing.close()
