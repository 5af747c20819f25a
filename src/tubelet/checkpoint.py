"""tubelet's one checkpoint format: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` is ``{"format": "tubelet", "version": 1, "config": ViViTConfig.to_dict()}``;
``model.safetensors`` is the model's state dict (float tensors as saved). Training state
(optimiser, schedule, step, RNG) is kept apart by the training loop, so a checkpoint folder
loads offline with nothing but tubelet.

:func:`load_model` builds the model at the clip size you ask for: position embeddings trained
on another (t, h, w) grid are resized (:mod:`tubelet.convert.posembed`), and any other
mismatch is an error naming the tensor, both shapes and the config field to change.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from .convert.posembed import pos_embed_grids, resize_pos_embed
from .models.config import ConfigError, ViViTConfig
from .models.vivit import ViViT

FORMAT = "tubelet"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Which config fields set the shape of a tensor, by a part of its name (first match wins).
FIELD_HINTS: list[tuple[str, str]] = [
    ("tokeniser.proj", "patch_size / tubelet_size / tokeniser / in_channels / hidden_size"),
    ("pos_embed", "num_frames / image_size / patch_size / tubelet_size (resized when only the "
                  "grid differs) or classifier"),
    ("cls_token", "classifier / hidden_size"),
    ("attn.qkv", "num_heads / num_kv_heads / hidden_size / qkv_bias"),
    ("attn_space.qkv", "num_heads / num_kv_heads / hidden_size / qkv_bias"),
    ("attn_time.qkv", "num_heads / num_kv_heads / hidden_size / qkv_bias"),
    ("mlp.fc", "mlp_dim / hidden_size"),
    ("pre_logits", "representation_size"),
    ("head.", "num_classes (or call model.reset_head(num_classes) after loading)"),
    ("", "hidden_size"),
]


def field_hint(name: str) -> str:
    """The config field(s) that set the shape of tensor ``name``."""
    return next(fields for part, fields in FIELD_HINTS if part in name)


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`ConfigError` unless ``state`` has exactly the model's tensors and shapes.

    The message names the tensor, both shapes and the config field to change.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    cfg: ViViTConfig = model.config
    layout = (f"kind={cfg.kind}, classifier={cfg.classifier}, tokeniser={cfg.tokeniser}, "
              f"num_layers={cfg.num_layers}" + (f", temporal_layers={cfg.temporal_layers}"
                                                 if cfg.kind == "factorised_encoder" else "")
              + (f", representation_size={cfg.representation_size}" if cfg.representation_size else ""))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) of the model are not in {source}, e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) of {source} are not in the model, e.g. "
                         f"{unexpected[0]!r}")
        raise ConfigError("; ".join(parts) + f"; the model was built with {layout}: change these "
                          "config fields to match the checkpoint")
    for name, want in expected.items():
        got = state[name].shape
        if tuple(got) != tuple(want.shape):
            raise ConfigError(f"{source}: tensor {name!r} has shape {tuple(got)} but the model expects "
                              f"{tuple(want.shape)}; change the config field {field_hint(name)} to "
                              "match the checkpoint")


def adapt_pos_embeds(state: dict[str, torch.Tensor], trained: ViViTConfig,
                     target: ViViTConfig) -> dict[str, torch.Tensor]:
    """Resize every position embedding of ``state`` from ``trained``'s grid to ``target``'s."""
    old, new = pos_embed_grids(trained), pos_embed_grids(target)
    state = dict(state)
    for name, grid in new.items():
        if name in state and name in old and old[name] != grid:
            state[name] = resize_pos_embed(state[name], old[name], grid)
    return state


def load_state(model: ViViT, state: Mapping[str, torch.Tensor], source: str) -> ViViT:
    """Load a converted or saved ``state`` into ``model`` after :func:`check_state_dict`.

    The one tensor a source may lack is a ``time_embed`` table (``ViViTConfig.time_embed``): a
    source trained without one keeps the model's fresh draw, as a new head starts from zeros.
    """
    state = {**{k: v for k, v in model.state_dict().items() if k.endswith(".time_embed")}, **state}
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    return model


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename over ``path``: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: ViViT, directory: str | Path) -> Path:
    """Write ``model`` as a tubelet checkpoint folder (``config.json`` + ``model.safetensors``).

    Each file is written to a temporary name and renamed, weights first and config last, so
    an interrupted save leaves the previous checkpoint readable. Other files in the folder
    (e.g. the training loop's optimiser state) are left alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict()}
    _atomic_write(directory / WEIGHTS_FILE,
                  lambda p: save_file(state, p, metadata={"format": FORMAT, "version": str(VERSION)}))
    _atomic_write(directory / CONFIG_FILE,
                  lambda p: Path(p).write_text(json.dumps(header, indent=2) + "\n"))
    return directory


def read_config(directory: str | Path) -> ViViTConfig:
    """The :class:`ViViTConfig` of a checkpoint folder."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a tubelet checkpoint is a folder with "
                                f"{CONFIG_FILE} and {WEIGHTS_FILE} (write one with tubelet.save_model "
                                "or `tubelet convert`)")
    header = json.loads(path.read_text())
    if header.get("format") != FORMAT or "config" not in header:
        raise ConfigError(f"{path} is not a tubelet checkpoint config (no \"format\": \"tubelet\"); "
                          "to use weights of another library run `tubelet convert --from ...` first")
    if header.get("version", 0) > VERSION:
        raise ConfigError(f"{path} has format version {header['version']}, newer than this tubelet "
                          f"reads ({VERSION}); upgrade tubelet")
    return ViViTConfig.from_dict(header["config"])


def load_model(directory: str | Path, *, num_frames: int | None = None,
               image_size: int | tuple[int, int] | None = None, map_location: str | torch.device = "cpu",
               **overrides: Any) -> ViViT:
    """A :class:`ViViT` from a checkpoint folder, in eval mode.

    ``num_frames`` / ``image_size`` (and any other config field in ``overrides``) change the
    model that is built; position embeddings are resized when the token grid changes.

    >>> model = load_model("runs/k400", num_frames=16, image_size=160)
    """
    directory = Path(directory)
    trained = read_config(directory)
    changes = {k: v for k, v in dict(overrides, num_frames=num_frames, image_size=image_size).items()
               if v is not None}
    try:
        cfg = trained.replace(**changes)
    except TypeError as e:
        raise ConfigError(f"{e}; fields of ViViTConfig: {', '.join(ViViTConfig.__dataclass_fields__)}") from None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist (the folder has {CONFIG_FILE} but no weights)")
    state = adapt_pos_embeds(load_file(str(weights), device=str(map_location)), trained, cfg)
    return load_state(ViViT(cfg), state, str(weights)).to(map_location).eval()


__all__ = ["adapt_pos_embeds", "check_state_dict", "field_hint", "load_model", "load_state", "read_config",
           "save_model"]
