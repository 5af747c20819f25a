"""Optimiser, learning-rate schedule and weight averaging of the paper's recipe (Table 7)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..config import OptimSection


def learning_rate(step: int, *, base: float, total: int, warmup: int, minimum: float = 0.0) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then cosine decay to ``minimum`` at ``total``.

    ``step`` counts optimiser steps from 0; the value is the rate used *for* that step.
    """
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * progress))


def _no_decay(name: str, p: nn.Parameter) -> bool:
    """Biases, norms, position embeddings and CLS tokens are not weight-decayed."""
    return p.dim() < 2 or name.endswith(("pos_embed", "cls_token"))


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a model's weights (and buffers), for evaluation."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = self.model.state_dict()
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].lerp_(value.detach(), 1 - self.decay)
            else:
                ema[name].copy_(value)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
