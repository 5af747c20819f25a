"""Evaluation metrics as pure functions: view averaging, top-k, per-class accuracy, confusion.

Multi-view evaluation (paper 4.1): every video gives V temporal views x 3 spatial crops; the
raw logits of the views are averaged (``average="softmax"`` averages probabilities instead).
For two-head data (EPIC-KITCHENS verb + noun) an action is right when both heads are.
"""

from __future__ import annotations

import torch
from torch import Tensor


def average_views(logits: Tensor, average: str = "logits") -> Tensor:
    """(N, V, C) per-view scores -> (N, C)."""
    if average == "softmax":
        return logits.softmax(-1).mean(1)
    if average == "logits":
        return logits.mean(1)
    raise ValueError(f"average={average!r}: choose logits or softmax")


def topk_correct(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """(N, C), (N,) -> (N,) bool: the label is among the k highest scores."""
    k = min(k, scores.shape[-1])
    return (scores.topk(k, dim=-1).indices == labels[:, None]).any(-1)


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of every class (NaN for a class with no examples)."""
    total = confusion.sum(1).double()
    return confusion.diag().double() / total.where(total > 0, torch.tensor(float("nan"), dtype=torch.double))


def classification_metrics(scores: Tensor, labels: Tensor, class_splits: tuple[int, ...],
                           head_names: tuple[str, ...] | None = None) -> dict:
    """Top-1 / top-5, per-class accuracy and confusion matrix of every head.

    scores: (N, sum(class_splits)) video-level scores; labels: (N,) or (N, heads).
    With several heads the result also has ``action_top1`` (every head right).
    """
    if labels.dim() == 1:
        labels = labels[:, None]
    heads = scores.split(list(class_splits), dim=-1)
    names = head_names or (("",) if len(heads) == 1 else tuple(f"head{i}" for i in range(len(heads))))
    out: dict = {"count": int(scores.shape[0])}
    all_right = torch.ones(scores.shape[0], dtype=torch.bool)
    for i, (name, s) in enumerate(zip(names, heads)):
        prefix = f"{name}_" if name else ""
        y = labels[:, i]
        right = topk_correct(s, y, 1)
        all_right &= right
        confusion = confusion_matrix(s.argmax(-1), y, s.shape[-1])
        out[f"{prefix}top1"] = right.double().mean().item() if len(y) else float("nan")
        out[f"{prefix}top5"] = topk_correct(s, y, 5).double().mean().item() if len(y) else float("nan")
        out[f"{prefix}per_class"] = per_class_accuracy(confusion).tolist()
        out[f"{prefix}mean_class_accuracy"] = per_class_accuracy(confusion).nanmean().item()
        out[f"{prefix}confusion"] = confusion.tolist()
    if len(heads) > 1:
        out["action_top1"] = all_right.double().mean().item()
    return out


def reversed_pair_accuracy(scores: Tensor, labels: Tensor, reverse_of: dict[int, int]) -> float:
    """Share of videos scored higher for their class than for its time-reversal.

    ``reverse_of`` maps a class to the class that is its time-reversal (moving left -> moving
    right). Only videos whose class has a reversal count. A model blind to frame order cannot
    tell a pair apart and scores 50%.
    """
    rows = [i for i, y in enumerate(labels.tolist()) if y in reverse_of]
    if not rows:
        return float("nan")
    idx = torch.tensor(rows)
    y = labels[idx]
    rev = torch.tensor([reverse_of[int(c)] for c in y])
    s = scores[idx]
    return (s.gather(1, y[:, None]) > s.gather(1, rev[:, None])).double().mean().item()
