"""A few training steps and a multi-view evaluation through the data layer alone (tests/data)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

import tubelet
from tubelet.data import ClipConfig, make_loader, normalise

CLIP = ClipConfig(num_frames=4, stride=1, size=16, views=2, crops=1)
TINY = dict(hidden_size=32, num_layers=1, num_heads=4, mlp_dim=32)  # vivit_micro, smaller still


def train_and_evaluate(train_set, val_set, steps: int = 3, batch_size: int = 2) -> dict:
    """Train a tiny vivit_micro for ``steps`` steps on ``train_set`` and score every video of ``val_set``.

    Returns ``{"losses", "scored", "skipped", "logits"}``: the training losses, the indices of the
    validation videos scored, the files the loaders skipped and the (videos, classes) logits.
    """
    clip = train_set.clip
    splits = tuple(train_set.num_classes)
    model = tubelet.create_model("vivit_micro", num_classes=splits if len(splits) > 1 else splits[0],
                                 num_frames=clip.num_frames, image_size=clip.crop, **TINY)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(train_set, batch_size=batch_size, workers=0, seed=0)
    losses = []
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        for batch in loader:
            logits = model(normalise(batch["video"]))  # (B, sum of classes)
            labels = batch["label"].reshape(len(logits), -1)  # (B, heads)
            heads = logits.split(list(splits), dim=-1)
            loss = sum(F.cross_entropy(h, labels[:, i]) for i, h in enumerate(heads)) / len(heads)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        if len(losses) == steps:
            break
    model.eval()
    scored, all_logits = [], []
    evaluation = make_loader(val_set, batch_size=batch_size, workers=0)
    with torch.no_grad():
        for batch in evaluation:
            if batch["video"] is None:
                continue
            b, v = batch["video"].shape[:2]  # (B, V*C, T, H, W, 3)
            logits = model(normalise(batch["video"].flatten(0, 1))).unflatten(0, (b, v)).mean(1)
            all_logits.append(logits)
            scored += batch["index"].tolist()
    return {"losses": losses, "scored": scored, "skipped": evaluation.skip_report.files,
            "logits": torch.cat(all_logits) if all_logits else torch.empty(0)}
