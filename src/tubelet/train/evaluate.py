"""Multi-view evaluation (paper 4.1), shared by `tubelet train`, `tubelet eval` and `tubelet predict`.

Each video gives V temporal views x C spatial crops, (V*C, T, H, W, 3) uint8; the model scores
every view and the raw logits are averaged (or the softmax probabilities). Under torchrun every
rank scores its own share of the videos, each video exactly once, and rank 0 gathers them.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..checkpoint import Preprocessing
from ..data import normalise
from .distributed import Runtime, gather_objects
from .metrics import average_views, classification_metrics


def autocast(device: torch.device, precision: str):
    """bf16 autocast on GPU when asked (``auto`` = bf16 on CUDA, fp32 elsewhere)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_input(frames: Tensor, preprocessing: Preprocessing | None = None) -> Tensor:
    """(..., T, H, W, 3) uint8 -> (..., C, T, H, W) float as the model was trained to see pixels.

    ``None`` (or the reference's mean = std = 0.5) is the reference's ``x * 2 / 255 - 1``.
    """
    if preprocessing is None or preprocessing.is_reference_pixels:
        return normalise(frames)
    mean = torch.tensor(preprocessing.pixel_mean, device=frames.device).view(3, 1, 1, 1)
    std = torch.tensor(preprocessing.pixel_std, device=frames.device).view(3, 1, 1, 1)
    return ((frames.float() / 255).movedim(-1, -4) - mean) / std


@torch.no_grad()
def score_views(model: nn.Module, views: Tensor, device: torch.device, precision: str = "auto",
                chunk: int = 8, preprocessing: Preprocessing | None = None) -> Tensor:
    """(N, V, T, H, W, 3) uint8 -> (N, V, classes) float32 logits, ``chunk`` clips per forward."""
    n, v = views.shape[:2]
    flat = views.flatten(0, 1)
    out = []
    for i in range(0, flat.shape[0], chunk):
        x = model_input(flat[i:i + chunk].to(device, non_blocking=True), preprocessing)  # (b, C, T, H, W)
        with autocast(device, precision):
            out.append(model(x).float())
    return torch.cat(out).unflatten(0, (n, v))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], rt: Runtime, *, class_splits: tuple[int, ...],
             head_names: tuple[str, ...] | None = None, average: str = "logits",
             precision: str = "auto", progress: bool = True, total: int | None = None,
             preprocessing: Preprocessing | None = None) -> dict:
    """Video-level metrics over ``batches`` of eval items (``video``: (B, V*C, T, H, W, 3)).

    Returns the metrics of :func:`classification_metrics` plus ``count`` (videos scored, over
    all ranks) and ``skipped`` ("path: reason", each file once); every rank gets the same dictionary.
    """
    was_training = model.training
    model.eval()
    indices, scores, labels, skipped = [], [], [], []
    bar = tqdm(batches, total=total, desc="evaluating", unit="batch", leave=False,
               disable=not (progress and rt.is_main))
    for batch in bar:
        skipped += batch.get("skipped", [])
        if batch.get("video") is None or len(batch["video"]) == 0:
            continue
        logits = score_views(model, batch["video"], rt.device, precision, preprocessing=preprocessing)
        scores.append(average_views(logits, average).cpu())
        labels.append(torch.as_tensor(batch["label"]))
        indices += [int(i) for i in batch["index"]]
    model.train(was_training)
    local = (indices, torch.cat(scores) if scores else None, torch.cat(labels) if labels else None, skipped)
    gathered = gather_objects(local, rt)
    all_idx = [i for g in gathered for i in g[0]]
    all_scores = torch.cat([g[1] for g in gathered if g[1] is not None]) if all_idx else torch.empty(0, sum(class_splits))
    all_labels = torch.cat([g[2] for g in gathered if g[2] is not None]) if all_idx else torch.empty(0, dtype=torch.long)
    if len(set(all_idx)) != len(all_idx):
        raise RuntimeError(f"evaluation scored {len(all_idx) - len(set(all_idx))} videos twice: the "
                           "evaluation sampler must give every video to exactly one rank")
    metrics = classification_metrics(all_scores, all_labels, class_splits, head_names)
    metrics["skipped"] = sorted({f"{path}: {reason}" for g in gathered for path, reason in g[3]})
    metrics["indices"] = sorted(all_idx)
    order = sorted(range(len(all_idx)), key=all_idx.__getitem__)
    metrics["scores"], metrics["labels"] = all_scores[order], all_labels[order]  # by video index
    return metrics
