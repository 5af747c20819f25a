"""``--init``: start training from an image ViT (paper 3.4) or from a tubelet checkpoint.

A tubelet checkpoint (or a run folder) is fine-tuned with a fresh head when the classes differ,
its position embeddings resized when the clip size differs, and its attention converted to
grouped-query attention when ``--num-kv-heads`` asks for fewer key/value heads (GQA uptraining).
Anything else is read as an image ViT (timm, transformers or Flax naming, detected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoint import CONFIG_FILE, load_model
from ..convert.gqa import to_gqa
from ..convert.vit import read_image_vit, vivit_from_image_vit
from ..models import ViViT, get_config
from .config import TrainConfig
from .state import STATE_FILE, latest_checkpoint, model_folder


def _tubelet_checkpoint(path: Path) -> tuple[Path, Path | None] | None:
    """(model folder, training-state file or None) when ``path`` is a tubelet checkpoint or run."""
    folder = model_folder(path)
    if not (folder / CONFIG_FILE).is_file():
        return None
    if folder != path:  # a run folder: its training length is in the latest checkpoint
        latest = latest_checkpoint(path)
        return folder, (latest / STATE_FILE) if latest else None
    state = path / STATE_FILE
    return path, state if state.is_file() else None


def initialise(cfg: TrainConfig, *, num_classes: int | tuple[int, ...], num_frames: int, image_size: int,
               overrides: dict[str, Any], log: Callable[[str], None]) -> tuple[ViViT, int | None]:
    """(model, optimiser steps the source was trained for, if it is a tubelet training run)."""
    path = Path(cfg.init)
    if not path.exists():
        raise FileNotFoundError(f"--init {path} does not exist")
    found = _tubelet_checkpoint(path) if path.is_dir() else None
    if found is not None:
        folder, state_file = found
        kv = overrides.pop("num_kv_heads", None)
        model = load_model(folder, num_frames=num_frames, image_size=image_size, **overrides).train()
        steps = None
        if state_file is not None:
            steps = torch.load(state_file, map_location="cpu", weights_only=False).get("step")
        if kv is not None and kv != model.config.kv_heads:
            log(f"--init {folder}: converting {model.config.kv_heads} key/value heads to {kv} "
                "(mean-pooled groups, GQA)")
            model = to_gqa(model, kv, inplace=True)
        classes = num_classes if isinstance(num_classes, tuple) else (num_classes,)
        if classes != model.config.class_splits:
            log(f"--init {folder}: new classifier head for {num_classes} classes")
            model.reset_head(num_classes)
        return model, steps
    vit = read_image_vit(path)
    target = get_config(cfg.model, num_classes=num_classes, num_frames=num_frames, image_size=image_size,
                        **overrides)
    log(f"--init {path}: image ViT ({vit.naming} naming), {cfg.init_kernel} tubelet kernels")
    return vivit_from_image_vit(vit, target, kernel_init=cfg.init_kernel), None
