"""``--init``: start training from an image ViT (paper 3.4) or from a tubelet checkpoint.

A tubelet checkpoint (or a run folder) is fine-tuned with a fresh head when the classes differ,
its position embeddings resized when the clip size differs, and its attention converted to
grouped-query attention when ``--num-kv-heads`` asks for fewer key/value heads (GQA uptraining).
Anything else is read as an image ViT (timm, transformers or Flax naming, detected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..checkpoint import load_model, read_model_config, resolve_model_path
from ..config import RunConfig
from ..convert.gqa import to_gqa
from ..convert.vit import read_image_vit, vivit_from_image_vit
from ..errors import TubeletError
from ..models import ViViT, ViViTConfig, get_config
from .state import has_state, latest_checkpoint, saved_step


def _tubelet_checkpoint(path: Path) -> tuple[Path, Path | None] | None:
    """(model folder, checkpoint with a training state or None) when ``path`` names a model that
    :func:`~tubelet.checkpoint.resolve_model_path` takes (a run, a checkpoint, a transformers Vivit
    export); None for anything else, which ``--init`` reads as an image ViT."""
    if not path.is_dir():
        return None
    try:
        folder, _ = resolve_model_path(path)
    except TubeletError:
        return None
    if folder != path:  # a run folder: its training length is in the latest checkpoint
        return folder, latest_checkpoint(path)
    return path, path if has_state(path) else None


def initial_config(cfg: RunConfig) -> ViViTConfig:
    """The config the run's model will have, but for its classes: its frames and size set the clip.

    From a tubelet checkpoint (``--init``) that is the checkpoint's config with the run's model
    overrides; otherwise the registry's ``model.name`` with them.
    """
    found = _tubelet_checkpoint(Path(cfg.model.init)) if cfg.model.init else None
    if found is None:
        return cfg.model_config()
    overrides = {k: v for k, v in cfg.model.overrides.items() if k != "num_kv_heads"}
    return read_model_config(found[0])[0].replace(**overrides)


def initialise(cfg: RunConfig, *, num_classes: int | tuple[int, ...],
               class_names: tuple[tuple[str, ...], ...] | None, log: Callable[[str], None]
               ) -> tuple[ViViT, int | None]:
    """(model, optimiser steps the source was trained for, if it is a tubelet training run).

    A tubelet checkpoint keeps its head when its classes are the data's, by name; with other
    names (or another count) the head starts anew.
    """
    path = Path(cfg.model.init)
    if not path.exists():
        raise FileNotFoundError(f"--init {path} does not exist")
    overrides = dict(cfg.model.overrides)
    found = _tubelet_checkpoint(path)
    if found is not None:
        folder, state_folder = found
        kv = overrides.pop("num_kv_heads", None)
        model = load_model(folder, **overrides).train()
        steps = saved_step(state_folder) if state_folder is not None else None  # JSON only, no pickle
        if kv is not None and kv != model.config.kv_heads:
            log(f"--init {folder}: converting {model.config.kv_heads} key/value heads to {kv} "
                "(mean-pooled groups, GQA)")
            model = to_gqa(model, kv, inplace=True)
        classes = num_classes if isinstance(num_classes, tuple) else (num_classes,)
        known = model.info.class_names
        if classes != model.config.class_splits:
            log(f"--init {folder}: new classifier head for {num_classes} classes")
            model.reset_head(num_classes)
        elif known is not None and class_names is not None and tuple(map(tuple, known)) != tuple(class_names):
            log(f"--init {folder}: the checkpoint's {sum(classes)} classes are not the data's (by name): "
                "new classifier head")
            model.reset_head(num_classes)
        return model, steps
    vit = read_image_vit(path)
    target = get_config(cfg.model.name, num_classes=num_classes, **overrides)
    log(f"--init {path}: image ViT ({vit.naming} naming), {cfg.model.init_kernel} tubelet kernels")
    return vivit_from_image_vit(vit, target, kernel_init=cfg.model.init_kernel), None
