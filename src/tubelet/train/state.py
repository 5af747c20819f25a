"""Training checkpoints: written whole or not at all, and everything needed to resume exactly.

A run folder holds ``checkpoints/step-NNNNNNN/`` folders, each a tubelet checkpoint
(``config.json`` + ``model.safetensors``, loadable by :func:`tubelet.load_model`) plus
``train_state.pt`` (optimiser, step, epoch position, RNG states, EMA weights, history).
A checkpoint is written into a hidden temporary folder and renamed into place when complete;
then the ``checkpoints/latest`` pointer is replaced atomically. A process killed at any
moment leaves the previous checkpoint intact and never a half-written one under a real name;
the hidden leftovers of such a kill are removed by the next checkpoint the run writes.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_model, save_model

STATE_FILE = "train_state.pt"
LATEST = "latest"


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, flush it to disk, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_leftovers(root: Path) -> None:
    """Delete the hidden temporaries a killed writer left in ``root`` (one writer per run folder)."""
    for stale in root.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{LATEST}.*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, state: dict[str, Any], step: int,
                    keep: int = 2) -> Path:
    """Write ``checkpoints/step-{step}`` whole (model + ``state``) and point ``latest`` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    name = f"step-{step:07d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        save_model(model, tmp)
        torch.save(state, tmp / STATE_FILE)
        if final.exists():  # the same step saved again (e.g. end of epoch == interval)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / LATEST, name + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def model_folder(path: Path) -> Path:
    """A checkpoint folder as given, or a run folder's ``final/`` model."""
    path = Path(path)
    return path / "final" if (path / "final" / "config.json").is_file() else path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in train mode, training state) of a checkpoint folder."""
    model = load_model(path, map_location=map_location).train()
    state = torch.load(Path(path) / STATE_FILE, map_location=map_location, weights_only=False)
    return model, state
