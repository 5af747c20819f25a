"""Feeding the accelerator: a deterministic sharded sampler, the loader, and the skipped-file report.

* :class:`ClipSampler` yields ``(index, epoch)`` keys: the order is a function of (seed, epoch)
  only, sharded over ``rank`` / ``world_size``, and it can start ``k`` batches into an epoch to
  resume. Training pads the order so every rank gets the same number of items; evaluation does not,
  so every video is counted exactly once over all ranks.
* :func:`make_loader` builds a :class:`ClipLoader`: a torch DataLoader with worker processes,
  pinned memory and persistent workers, which measures the time the training loop waits for each
  batch and keeps the :class:`SkipReport` of files that could not be decoded.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import DataError
from .dataset import collate_clips
from .sampling import shard

log = logging.getLogger(__name__)


class ClipSampler(Sampler):
    """Keys ``(index, epoch)`` for one rank; call :meth:`set_epoch` before each epoch.

    ``shuffle`` (training) draws a permutation from ``(seed, epoch)``. Uneven lengths over ranks:
    ``drop_last`` drops the last ``size % world_size`` items of the order, ``pad`` (default: same
    as ``shuffle``) repeats the first ones; with neither (evaluation) ranks differ by at most one
    item and each item is on exactly one rank. ``set_epoch(e, skip=k)`` starts the epoch after
    this rank's first ``k`` keys (``k = batches_done * batch_size`` to resume).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, pad: bool | None = None,
                 epoch: int = 0):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.pad = (shuffle if pad is None else pad) and not drop_last
        self.epoch, self.skip = epoch, 0
        shard(np.arange(0), rank, world_size, self.pad)  # validates rank

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> np.ndarray:
        """All of this rank's indices for ``epoch``, before skipping."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g).numpy()
        else:
            order = np.arange(self.size)
        if self.drop_last:
            order = order[:len(order) - len(order) % self.world_size]
        return shard(order, self.rank, self.world_size, self.pad)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order(self.epoch)[self.skip:].tolist():
            yield index, self.epoch

    def __len__(self) -> int:
        if self.drop_last:
            n = self.size // self.world_size
        elif self.pad:
            n = math.ceil(self.size / self.world_size)
        else:
            n = len(range(self.rank, self.size, self.world_size))
        return max(n - self.skip, 0)


class TooManySkippedFiles(DataError):
    """More files failed to decode than the configured limit allows."""


class SkipReport:
    """Files left out of one loader: one warning per file, a count, and a summary per pass.

    ``files`` (path -> reason) lists every file that failed to decode during the current pass (or
    the last finished one), each once, whatever the batch size and number of workers: items come
    back to the main process one by one, also from batches whose every clip failed. ``run_files``
    keeps them over every pass. ``left_out`` lists what the dataset left out before decoding
    (missing videos with ``missing="skip"``, non-video files, with the reason). ``limit`` is the
    number of distinct bad files tolerated (``None``: no limit; 0: none); past it :meth:`add`
    raises :class:`TooManySkippedFiles` naming them.
    """

    def __init__(self, limit: int | None = None, total: int | None = None,
                 left_out: dict[str, str] | None = None):
        self.limit = limit
        self.total = total  # files in the dataset, for the messages
        self.left_out: dict[str, str] = dict(left_out or {})
        self.run_files: dict[str, str] = {}  # path -> reason, over every pass
        self.files: dict[str, str] = {}  # path -> reason, this pass

    @property
    def count(self) -> int:
        """Distinct files that failed to decode in this pass."""
        return len(self.files)

    def start_pass(self) -> None:
        """Forget the previous pass's list (the run's list keeps growing)."""
        self.files = {}

    def add(self, path: str, reason: str) -> None:
        self.files.setdefault(path, reason)
        if path in self.run_files:
            return
        self.run_files[path] = reason
        of = f" of {self.total:,}" if self.total else ""
        warnings.warn(f"cannot decode {path}: {reason} (skipped; {len(self.run_files)}{of} files "
                      "skipped so far)", RuntimeWarning, stacklevel=3)
        if self.limit is not None and len(self.run_files) > self.limit:
            names = "\n  ".join(f"{p}: {r}" for p, r in self.run_files.items())
            raise TooManySkippedFiles(
                f"{len(self.run_files)} files could not be decoded, more than the limit of "
                f"{self.limit} (remove them or raise the limit):\n  {names}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"count", "files": [{"path", "reason"}], "left_out": [...]}``."""
        return {"count": self.count,
                "files": [{"path": p, "reason": r} for p, r in sorted(self.files.items())],
                "left_out": [{"path": p, "reason": r} for p, r in sorted(self.left_out.items())]}

    def summary(self, epoch: int | None = None) -> str:
        """One line naming this pass's skipped files and what the dataset left out."""
        where = f"epoch {epoch}: " if epoch is not None else ""
        parts = []
        if self.files:
            parts.append(f"skipped {len(self.files)} file(s) that could not be decoded: "
                         + "; ".join(f"{p} ({r})" for p, r in sorted(self.files.items())))
        if self.left_out:
            parts.append(f"left out {len(self.left_out)} file(s): "
                         + "; ".join(f"{p} ({r})" for p, r in sorted(self.left_out.items())))
        return where + ("; ".join(parts) if parts else "no files skipped")

    def end_epoch(self, epoch: int) -> str | None:
        """Log and return the summary of this pass's skipped files (None if there were none)."""
        if not self.files:
            return None
        summary = self.summary(epoch)
        log.warning(summary)
        return summary


class ClipLoader:
    """A DataLoader over (index, epoch) keys that times data waits and reports skipped files.

    Iterating yields the batches of :func:`tubelet.data.dataset.collate_clips`. A training loader
    leaves out batches whose every clip was skipped (their files move to the next batch's
    ``"skipped"``); an evaluation loader (``keep_empty``) yields them with ``video`` None, so a
    consumer counting ``batch["skipped"]`` sees every file. ``batch["data_wait"]`` is the seconds
    the caller waited for it; :attr:`skip_report` is the :class:`SkipReport`: after a pass, ``skip_report.files`` / ``.count`` are exactly the
    files that failed in it, each once.
    """

    def __init__(self, loader: DataLoader, sampler: ClipSampler, skip_report: SkipReport,
                 keep_empty: bool = False):
        self.loader, self.sampler, self.skip_report = loader, sampler, skip_report
        self.keep_empty = keep_empty

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Set the epoch; ``skip`` resumes after that many clips of it (see :class:`ClipSampler`)."""
        self.sampler.set_epoch(epoch, skip=skip)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skip_report.start_pass()
        iterator = iter(self.loader)
        pending: list[tuple[str, str]] = []  # skipped files of batches left out
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            wait = time.perf_counter() - start
            for path, reason in batch["skipped"]:
                self.skip_report.add(path, reason)
            if batch["video"] is None and not self.keep_empty:
                pending += batch["skipped"]
                continue
            batch["skipped"] = pending + batch["skipped"]
            pending = []
            batch["data_wait"] = wait
            yield batch
        self.skip_report.end_epoch(self.sampler.epoch)


def make_loader(dataset, sampler: ClipSampler | None = None, *, batch_size: int,
                workers: int = 2, seed: int = 0, rank: int = 0,
                world_size: int = 1, pin_memory: bool | None = None,
                persistent_workers: bool = True, prefetch_factor: int = 2,
                skip_limit: int | None = None) -> ClipLoader:
    """A :class:`ClipLoader` for ``dataset`` (a :class:`tubelet.data.dataset.VideoClips`).

    Without a ``sampler``, one is made for the dataset: shuffled and even over ranks for training,
    in order and exactly once for evaluation; ``pin_memory`` defaults to CUDA being available; ``skip_limit`` is the number of bad
    files tolerated before :class:`TooManySkippedFiles` (``None``: no limit). An evaluation
    loader yields batches whose every clip was skipped too (``video`` None).
    """
    train = getattr(dataset, "train", True)
    if sampler is None:
        sampler = ClipSampler(len(dataset), shuffle=train, seed=seed, rank=rank,
                              world_size=world_size, drop_last=train)
    extra = dict(persistent_workers=persistent_workers, prefetch_factor=prefetch_factor) \
        if workers > 0 else {}
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate_clips,
                        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                        **extra)
    left_out = dataset.left_out() if hasattr(dataset, "left_out") else {}
    report = SkipReport(skip_limit, total=len(dataset), left_out=left_out)
    return ClipLoader(loader, sampler, report, keep_empty=not train)
