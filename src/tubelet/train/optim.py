"""Optimiser, learning-rate schedule and weight averaging of the paper's recipe (Table 7)."""

from __future__ import annotations

import copy
import math
import re

import torch
from torch import nn

from ..config import OptimSection
from ..errors import ConfigError


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


# What ``optim.train_only`` may name: a parameter belongs to a part by its name.
TRAIN_ONLY_PARTS: dict[str, str] = {
    "head": r"^(head|pre_logits)\.",  # the classifier (and its representation layer)
    "norm": r"(^|\.)norm\d*\.",  # every LayerNorm
    "embed": r"^tokeniser\.|(^|\.)(pos_embed|cls_token|time_embed)$",  # tubelet embedding, positions, CLS
    "temporal": r"^temporal\.",  # Model 2's temporal encoder
    "encoder": r"^encoder\.",  # a captioner's video encoder (Model 1's transformer in a classifier)
    "project": r"^project\.",  # a captioner's projection of the video tokens into the decoder
    "decoder": r"^decoder\.",  # a captioner's text decoder
}
_BLOCK = re.compile(r"^(.*?)blocks\.(\d+)\.")


def trainable(name: str, train_only: str | None) -> bool:
    """Whether parameter ``name`` trains under ``optim.train_only`` (None: every parameter)."""
    if train_only is None:
        return True
    encoder_name = name.removeprefix("encoder.")  # a captioner's encoder parts go by the classifier's names
    return any(re.search(TRAIN_ONLY_PARTS[part.strip()], n) for part in train_only.split(",")
               for n in {name, encoder_name})


def layer_ids(names: list[str]) -> tuple[list[int], int]:
    """(layer of every parameter, L) for layer-wise learning-rate decay, names in model order.

    Transformer blocks are layers 1..L in the order they run (Model 2: the spatial blocks, then
    the temporal ones); a parameter outside the blocks belongs to the last block before it (the
    embeddings to 0), and the head to L + 1.
    """
    ids, seen, current = [], {}, 0
    for name in names:
        block = _BLOCK.match(name)
        if block:
            current = seen.setdefault(block.groups(), len(seen) + 1)
        ids.append(-1 if re.search(TRAIN_ONLY_PARTS["head"], name) else current)
    depth = len(seen)
    return [depth + 1 if i == -1 else i for i in ids], depth


def freeze(model: nn.Module, train_only: str | None) -> None:
    """Freeze (``requires_grad=False``) the parameters ``train_only`` leaves out. The training
    loop calls it before wrapping the model for DDP / FSDP, which must know what trains."""
    for name, p in getattr(model, "module", model).named_parameters():  # DDP's names without "module."
        if not trainable(name, train_only):
            p.requires_grad_(False)


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    """The optimiser over ``model``'s trainable parameters in groups by weight decay and, with
    ``cfg.layer_decay``, by layer (``lr_scale``). Parameters that ``cfg.train_only`` leaves out
    are frozen (:func:`freeze`) and left out of the optimiser."""
    freeze(model, cfg.train_only)
    named = list(getattr(model, "module", model).named_parameters())
    layers, depth = layer_ids([name for name, _ in named])
    groups: dict[tuple[bool, int], list[nn.Parameter]] = {}
    for (name, p), layer in zip(named, layers):
        if p.requires_grad:
            scale_at = layer if cfg.layer_decay is not None else depth + 1
            groups.setdefault((_no_decay(name, p), scale_at), []).append(p)
    if not groups:
        raise ConfigError(f"optim.train_only={cfg.train_only!r} leaves no parameter to train")
    param_groups = [{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                     "lr_scale": (cfg.layer_decay or 1.0) ** (depth + 1 - layer)}
                    for (no_decay, layer), params in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.999))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its ``lr_scale`` (layer-wise decay; 1 otherwise)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


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

