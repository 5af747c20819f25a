"""The run folder: where a run lives, and what it leaves there.

``runs/<preset>[-N]/`` holds ``config.yaml`` (the resolved run config, written once), the
checkpoints (:mod:`tubelet.train.state`), ``metrics.jsonl`` and the plots
(:mod:`tubelet.train.logging`), and ``final/``: the model with what it is (classes, heads,
preprocessing) and how it was made (preset, data, steps, final metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import ModelInfo, Preprocessing, save_model
from ..config import RunConfig, save_config
from ..errors import UsageError
from ..fileio import dumps_json
from ..models import ViViT
from .state import latest_checkpoint

CONFIG_FILE = "config.yaml"


def run_name(preset: str, task: str = "classify") -> str:
    """The folder name of a run under runs/: the preset's, ``caption`` for a caption run of the
    default recipe (``<preset>-caption`` of another), so the two tasks never share a folder."""
    if task == "classify":
        return preset
    return task if preset == "default" else f"{preset}-{task}"


def default_run_dir(preset: str, resume: bool, root: Path = Path("runs")) -> Path:
    """runs/<preset>, or runs/<preset>-2, -3, ...: the first without a run (with ``resume``, the
    last one that has one)."""
    candidates = [root / preset] + [root / f"{preset}-{i}" for i in range(2, 1000)]
    taken = [c for c in candidates if latest_checkpoint(c) is not None]
    if resume and taken:
        return taken[-1]
    return next(c for c in candidates if latest_checkpoint(c) is None and not (c / "final").exists())


def check_new_run(run_dir: Path, resume: bool) -> None:
    """A new run never lands on an existing one."""
    existing = latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise UsageError(f"{run_dir} already holds a run (latest checkpoint {existing.name}); pass --resume to "
                         "continue it or choose another --out")


def create_run_dir(run_dir: Path, cfg: RunConfig, resume: bool) -> None:
    """The folder and its ``config.yaml``; a resumed run keeps the recipe it was started with."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume or not (run_dir / CONFIG_FILE).is_file():
        save_config(cfg, run_dir / CONFIG_FILE)


def model_info(cfg: RunConfig, model: ViViT, class_names: tuple[tuple[str, ...], ...],
               head_names: tuple[str, ...] | None, frame_stride: int, **provenance: Any) -> ModelInfo:
    """What a trained model is (its classes and preprocessing) and how it was made."""
    c = model.config
    return ModelInfo(class_names=class_names, head_names=head_names,
                     preprocessing=Preprocessing(num_frames=c.num_frames, image_size=c.image_size,
                                                 frame_stride=frame_stride),
                     provenance={"preset": cfg.preset, "model": cfg.model.name, "init": cfg.model.init,
                                 "data": cfg.data.path or "built-in", **provenance})


def save_final(run_dir: Path, model: ViViT, metrics: dict, steps: int) -> Path:
    """``final/``: the model, its provenance completed with the steps and the final metrics."""
    results = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    info = model.info
    model.info = ModelInfo(class_names=info.class_names, head_names=info.head_names,
                           preprocessing=info.preprocessing,
                           provenance={**info.provenance, "steps": steps, "metrics": json.loads(dumps_json(results))})
    return save_model(model, run_dir / "final")
