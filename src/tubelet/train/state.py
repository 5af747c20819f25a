"""Training checkpoints: written whole or not at all, everything needed to resume exactly, no pickle.

A run folder holds ``checkpoints/step-NNNNNNN/`` folders, each a tubelet checkpoint
(``config.json`` + ``model.safetensors``, loadable by :func:`tubelet.load_model`) plus the
training state (optimiser, step, epoch position, RNG states, EMA weights, run config) in two
files that load without running code:

- ``train_state.safetensors``: every tensor of the state, named by its path in the state
  (``optimizer/state/blocks.0.mlp.fc1.weight/momentum_buffer``, ``rng/torch``, ``ema/...``);
- ``train_state.json``: everything else, with ``{"$tensor": name}`` where a tensor was.

Tuples, numpy arrays and dicts with non-string keys (the RNG states of python and numpy, an
optimiser's integer parameter ids) are tagged in the JSON so the state reads back identical.
An old ``train_state.pt`` is read with ``torch.load(weights_only=True)`` (plain tensors and
numpy arrays only) or refused with a :class:`CheckpointError`: it is never unpickled freely.

A checkpoint is written into a hidden temporary folder and renamed into place when complete;
then the ``checkpoints/latest`` pointer is replaced atomically. A process killed at any
moment leaves the previous checkpoint intact and never a half-written one under a real name;
the hidden leftovers of such a kill are removed by the next checkpoint the run writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checkpoint import load_model, save_model
from ..errors import CheckpointError
from ..fileio import write_text_atomic

STATE_FILE = "train_state.json"
TENSORS_FILE = "train_state.safetensors"
LEGACY_STATE_FILE = "train_state.pt"  # written by tubelet before the safetensors state; read safely
LATEST = "latest"
FORMAT = "tubelet-train-state"
VERSION = 1


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


# ---------------------------------------------------------------------- state <-> JSON + tensors
def _is_tag(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("$")


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(a JSON-safe document, the tensors it references by name) of a training state.

    Tensors are detached, moved to the CPU and made contiguous; two entries sharing memory are
    stored as two tensors (safetensors refuses shared storage).
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def tensor_ref(t: torch.Tensor, path: str) -> dict:
        if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            raise TypeError(f"training state at {path!r} is a {type(t).__name__} (a sharded tensor?): "
                            "gather it first (tubelet.train.distributed.gather_optimizer_state / gather_model)")
        t = t.detach().cpu().contiguous()
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if t.untyped_storage().data_ptr() in seen or not whole:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        name = path or "."
        while name in tensors:  # a dict key with "/" in it could repeat a path
            name += "'"
        tensors[name] = t
        return {"$tensor": name}

    def child(path: str, key: Any) -> str:
        return f"{path}/{key}" if path else str(key)

    def encode(value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, torch.Tensor):
            return tensor_ref(value, path)
        if isinstance(value, np.ndarray):
            return {"$ndarray": tensor_ref(torch.from_numpy(np.ascontiguousarray(value)), path)["$tensor"],
                    "dtype": value.dtype.str}
        if isinstance(value, np.generic):
            return encode(value.item(), path)
        if isinstance(value, tuple):
            return {"$tuple": [encode(v, child(path, i)) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, child(path, i)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not _is_tag(k) for k in value):
                return {k: encode(v, child(path, k)) for k, v in value.items()}
            return {"$items": [[encode(k, child(path, k)), encode(v, child(path, k))] for k, v in value.items()]}
        raise TypeError(f"training state at {path!r}: cannot store a {type(value).__name__} "
                        "(tensors, numbers, strings, None, lists, tuples and dicts only)")

    return encode(state, ""), tensors


def unflatten_state(doc: Any, tensors: dict[str, torch.Tensor], source: str = "train_state.json") -> Any:
    """The training state :func:`flatten_state` took apart."""

    def tensor(name: str) -> torch.Tensor:
        if name not in tensors:
            raise CheckpointError(f"{source} refers to tensor {name!r}, which is not in its {TENSORS_FILE}; "
                                  "the checkpoint is damaged: resume from another one")
        return tensors[name]

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$tensor" in value:
            return tensor(value["$tensor"])
        if "$ndarray" in value:
            return np.asarray(tensor(value["$ndarray"]).cpu().numpy(), dtype=np.dtype(value["dtype"]))
        if "$tuple" in value:
            return tuple(decode(v) for v in value["$tuple"])
        if "$items" in value:
            return {decode(k): decode(v) for k, v in value["$items"]}
        if "$float" in value:
            return float(value["$float"])
        return {k: decode(v) for k, v in value.items()}

    return decode(doc)


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` into ``folder`` as ``train_state.safetensors`` + ``train_state.json``."""
    doc, tensors = flatten_state(state)
    save_file(tensors, str(Path(folder) / TENSORS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
    header = {"format": FORMAT, "version": VERSION, "tensors": TENSORS_FILE, "state": doc}
    (Path(folder) / STATE_FILE).write_text(json.dumps(header, allow_nan=False) + "\n")


def _read_header(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        header = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path} ({e}); the checkpoint is damaged: resume from another "
                              "one or start a new run with --init on its model") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or "state" not in header:
        raise CheckpointError(f"{path} is not a tubelet training state (no \"format\": \"{FORMAT}\")")
    if header.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has training-state version {header['version']}, newer than this "
                              f"tubelet reads ({VERSION}); upgrade tubelet")
    return header


def read_state(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state of a checkpoint folder (new files, or a legacy ``train_state.pt`` read safely)."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        if (folder / LEGACY_STATE_FILE).is_file():
            return _read_legacy(folder / LEGACY_STATE_FILE, map_location)
        raise CheckpointError(f"{folder} has no training state ({STATE_FILE}); it is a model folder: "
                              "start a new run from it with --init")
    header = _read_header(folder)
    path = folder / header.get("tensors", TENSORS_FILE)
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"cannot read {path} ({e}); the checkpoint is damaged: resume from another "
                              "one") from None
    return unflatten_state(header["state"], tensors, str(folder / STATE_FILE))


def saved_step(folder: Path) -> int | None:
    """The optimiser steps a checkpoint's run had taken (from its JSON alone), or None without state."""
    folder = Path(folder)
    if (folder / STATE_FILE).is_file():
        step = _read_header(folder)["state"].get("step")
        return step if isinstance(step, int) else None
    if (folder / LEGACY_STATE_FILE).is_file():
        return _read_legacy(folder / LEGACY_STATE_FILE, "cpu").get("step")
    return None


# What an old train_state.pt needs beyond tensors: numpy's RNG state is an ndarray (numpy 2 and 1 names).
_NUMPY_GLOBALS = [np.ndarray, np.dtype, np._core.multiarray._reconstruct,
                  (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                  *{type(np.dtype(c)) for c in "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]}]


def _read_legacy(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """An old ``train_state.pt`` with ``torch.load(weights_only=True)``: no code runs, or it is refused."""
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the restricted unpickler refused it, or the file is damaged
        # torch's message is long; keep the line that says what the restricted unpickler objected to
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
        reason = next((line.strip() for line in str(e).splitlines()
                       if line.strip() and not line.strip().startswith(boilerplate)), type(e).__name__)
        raise CheckpointError(
            f"{path} is an old pickled training state that torch.load(weights_only=True) cannot read "
            f"({reason[:200]}); tubelet refuses to unpickle it, as that could run code from the file. "
            f"Keep its weights with a new run: tubelet train --init {path.parent} ...") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training state (a {type(state).__name__}, not a dict)")
    return state


# ---------------------------------------------------------------------- checkpoint folders
def _remove_leftovers(root: Path) -> None:
    """Delete the hidden temporaries a killed writer left in ``root`` (one writer per run folder)."""
    for stale in root.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{LATEST}.*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, state: dict[str, Any], step: int,
                    keep: int = 2, save: Callable[[torch.nn.Module, Path], Any] = save_model) -> Path:
    """Write ``checkpoints/step-{step}`` whole (model + ``state``) and point ``latest`` at it.

    ``model`` holds full weights (under FSDP, :func:`tubelet.train.distributed.gather_model`'s),
    and ``state``'s tensors are full ones (:func:`~tubelet.train.distributed.gather_optimizer_state`).
    ``save(model, folder)`` writes the model's own files (default: a ViViT or captioner
    checkpoint; a draft decoder passes its ``Decoder.save``).
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    name = f"step-{step:07d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        save(model, tmp)
        write_state(tmp, state)
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


def has_state(folder: Path) -> bool:
    """Whether ``folder`` holds a training state (this version's files or a legacy ``train_state.pt``)."""
    return (Path(folder) / STATE_FILE).is_file() or (Path(folder) / LEGACY_STATE_FILE).is_file()


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if has_state(path) else None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in train mode, training state) of a checkpoint folder; the state is read first, so a
    refused legacy state stops before anything else is loaded."""
    state = read_state(path, map_location=map_location)
    model = load_model(path, map_location=map_location).train()
    return model, state
