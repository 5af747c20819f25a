"""tubelet's one checkpoint format: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` (version 2) says what the model is::

    {"format": "tubelet", "version": 2,
     "config": {...},                                  # ViViTConfig.to_dict()
     "classes": {"class_names": [[...], ...] | null,   # one list per head
                 "head_names": ["verb", "noun"] | null},
     "preprocessing": {"num_frames", "image_size", "frame_stride", "pixel_mean", "pixel_std"} | null,
     "provenance": {...}}                              # preset, data, steps, metrics, source

A captioner (:class:`~tubelet.models.captioner.Captioner`) adds ``"task": "caption"``, its
``"captioner"`` section (decoder, prefix, caption length) and its ``"vocab"``; ``config`` is
its encoder's.

``model.safetensors`` is the model's state dict, its metadata recording the attention head
layout (``num_heads``, ``num_kv_heads``, ``head_dim``), which the tensor shapes cannot show.
Version 1 folders (``config`` only, class names in a ``classes.json`` beside it) still load.
Training state (optimiser, schedule, step, RNG) is kept apart by the training loop, so a
checkpoint folder loads offline with nothing but tubelet.

:func:`resolve_model_path` is the one place that turns what a user names (a run folder, a
checkpoint folder, a transformers export folder) into a model folder. :func:`load_model`
builds the model at the clip size you ask for: position embeddings trained on another
(t, h, w) grid are resized, and any other mismatch is an error naming the tensor, both shapes
and the config field to change. Damaged files are :class:`CheckpointError`s naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError
from .fileio import atomic_write, dumps_json
from .models.posembed import pos_embed_grids, resize_pos_embed
from .models.config import ViViTConfig
from .models.info import ModelInfo, Preprocessing
from .models.vivit import ViViT

FORMAT = "tubelet"
VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CLASSES_FILE = "classes.json"  # version 1's side file of class names, still read
HEAD_LAYOUT_KEYS = ("num_heads", "num_kv_heads", "head_dim")


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A model path or one of its files does not exist."""


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


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor holding a NaN or an infinity."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: tensor {name!r} holds {bad} NaN/Inf value(s); the weights "
                                  "are unusable (a diverged run?): load an earlier checkpoint")


# ---------------------------------------------------------------------------- head layout
def head_layout(cfg: ViViTConfig) -> dict[str, int]:
    """The attention head layout of ``cfg``, which a (3D, D) qkv matrix does not show."""
    return {"num_heads": cfg.num_heads, "num_kv_heads": cfg.kv_heads, "head_dim": cfg.head_dim}


def check_head_layout(recorded: Mapping[str, Any], cfg: ViViTConfig, source: str) -> None:
    """Raise :class:`ConfigError` when ``cfg``'s heads differ from the ``recorded`` layout (of
    the weights: safetensors metadata, Flax kernel shapes, the config they were trained with)."""
    want = head_layout(cfg)
    wrong = [k for k in HEAD_LAYOUT_KEYS if k in recorded and int(recorded[k]) != want[k]]
    if wrong:
        have = ", ".join(f"{k}={int(recorded[k])}" for k in HEAD_LAYOUT_KEYS if k in recorded)
        asked = ", ".join(f"{k}={want[k]}" for k in HEAD_LAYOUT_KEYS if k in recorded)
        fix = ", ".join(f"{k}={int(recorded[k])}" for k in ("num_heads", "num_kv_heads") if k in recorded)
        raise ConfigError(f"{source}: the weights have {have} but the config asks for {asked}; set {fix} "
                          "(a head count cannot change on load; `tubelet convert --to-gqa G` makes fewer "
                          "key/value heads)")


# ---------------------------------------------------------------------------- state dicts
def adapt_pos_embeds(state: dict[str, torch.Tensor], trained: ViViTConfig, target: ViViTConfig,
                     source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Resize every position embedding of ``state`` from ``trained``'s grid to ``target``'s.

    An embedding whose rows do not fit ``trained``'s grid means the config does not describe
    the weights (e.g. an edited ``num_frames``): a :class:`ConfigError` naming the fields.
    """
    old, new = pos_embed_grids(trained), pos_embed_grids(target)
    state = dict(state)
    for name, grid in old.items():
        if name not in state or state[name].dim() != 3:
            continue
        t, h, w = grid
        rows = state[name].shape[1]
        if rows - t * h * w not in (0, 1):
            raise ConfigError(f"{source}: tensor {name!r} has {rows} rows but the config's token grid is "
                              f"{t} x {h} x {w} = {t * h * w} (+ CLS); the config's num_frames / image_size / "
                              "patch_size / tubelet_size are not the ones the weights were trained with: "
                              "set them to those")
    for name, grid in new.items():
        if name in state and name in old and old[name] != grid:
            state[name] = resize_pos_embed(state[name], old[name], grid)
    return state


def load_state(model: ViViT, state: Mapping[str, torch.Tensor], source: str) -> ViViT:
    """Load a converted or saved ``state`` into ``model`` after :func:`check_state_dict` and
    :func:`check_finite`.

    The one tensor a source may lack is a ``time_embed`` table (``ViViTConfig.time_embed``): a
    source trained without one keeps the model's fresh draw, as a new head starts from zeros.
    """
    state = {**{k: v for k, v in model.state_dict().items() if k.endswith(".time_embed")}, **state}
    check_state_dict(model, state, source)
    check_finite(state, source)
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------- paths
def _describe(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    return f"it holds {', '.join(names[:8])}" + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is damaged: restore it "
                              "or save the model again") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path} holds a JSON {type(d).__name__}, not an object; the file is "
                              "damaged: restore it or save the model again")
    return d


def _latest_run_checkpoint(run: Path) -> Path | None:
    """The checkpoint a run folder's ``checkpoints/latest`` names, else its highest step."""
    root = run / "checkpoints"
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if (named / CONFIG_FILE).is_file():
            return named
    steps = sorted(p for p in root.glob("step-*") if (p / CONFIG_FILE).is_file())
    return steps[-1] if steps else None


def resolve_model_path(path: str | Path) -> tuple[Path, str]:
    """(model folder, ``"tubelet"`` or ``"hf"``) of what a user names as a model.

    Accepted: a tubelet checkpoint folder; a training run folder (its ``final/`` model, or its
    latest checkpoint when the run has not finished); a transformers export folder (a
    ``config.json`` with ``"model_type": "vivit"``); a ``config.json`` / ``model.safetensors``
    file inside one of those. Anything else is a :class:`CheckpointError` saying what it holds.
    """
    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(f"{path} does not exist: expected a tubelet checkpoint folder, a "
                                     "training run folder or a transformers Vivit folder")
    if path.is_file():
        if path.name not in (CONFIG_FILE, WEIGHTS_FILE):
            raise CheckpointError(f"{path} is a file: give the model folder that holds {CONFIG_FILE} and "
                                  f"{WEIGHTS_FILE} (to convert foreign weights run `tubelet convert --from ...`)")
        path = path.parent
    if (path / "final" / CONFIG_FILE).is_file():
        return resolve_model_path(path / "final")
    config = path / CONFIG_FILE
    if not config.is_file():
        latest = _latest_run_checkpoint(path) if (path / "checkpoints").is_dir() else None
        if latest is not None:
            return latest, FORMAT
        raise MissingCheckpointError(
            f"{path} is not a model folder: {_describe(path)}; expected a tubelet checkpoint "
            f"({CONFIG_FILE} + {WEIGHTS_FILE}), a training run folder (final/ or checkpoints/) or a "
            "transformers Vivit folder (save_pretrained)")
    header = read_json(config)
    if header.get("format") == FORMAT:
        return path, FORMAT
    if header.get("model_type") == "vivit":
        return path, "hf"
    what = f"model_type {header['model_type']!r}" if "model_type" in header else "no \"format\": \"tubelet\""
    raise ConfigError(f"{config} is not a tubelet or transformers Vivit config ({what}); to use weights of "
                      "another library run `tubelet convert --from scenic|hf|vit ...` first")


# ---------------------------------------------------------------------------- reading
def read_header(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a tubelet checkpoint folder, its format version checked."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise MissingCheckpointError(f"{path} does not exist: a tubelet checkpoint is a folder with "
                                     f"{CONFIG_FILE} and {WEIGHTS_FILE} (write one with tubelet.save_model "
                                     "or `tubelet convert`)")
    header = read_json(path)
    if header.get("format") != FORMAT or "config" not in header:
        raise ConfigError(f"{path} is not a tubelet checkpoint config (no \"format\": \"tubelet\"); "
                          "to use weights of another library run `tubelet convert --from ...` first")
    if not isinstance(header.get("version", 1), int) or header.get("version", 1) > VERSION:
        raise CheckpointError(f"{path} has format version {header['version']}, newer than this tubelet "
                              f"reads ({VERSION}); upgrade tubelet")
    return header


def read_config(directory: str | Path) -> ViViTConfig:
    """The :class:`ViViTConfig` of a checkpoint folder."""
    header = read_header(directory)
    if not isinstance(header["config"], Mapping):
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: 'config' is not an object")
    return ViViTConfig.from_dict(header["config"])


def _info_from_header(header: Mapping[str, Any], directory: Path) -> ModelInfo:
    """A version-2 header's sections; a version-1 folder's ``classes.json`` beside it."""
    source = directory / CONFIG_FILE
    try:
        info = ModelInfo.from_dict(header)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{source}: {e}") from None
    side = directory / CLASSES_FILE
    if info.class_names is None and side.is_file():
        classes = read_json(side)
        try:
            old = ModelInfo(class_names=classes.get("class_names"), head_names=classes.get("head_names"))
        except (ConfigError, TypeError) as e:
            raise CheckpointError(f"{side}: {e}") from None
        info.class_names, info.head_names = old.class_names, info.head_names or old.head_names
    return info


def read_model_config(path: str | Path) -> tuple[ViViTConfig, ModelInfo]:
    """(config, info) of a model folder (any folder :func:`resolve_model_path` takes), read from
    its ``config.json`` alone: the weights are not opened."""
    folder, kind = resolve_model_path(path)
    if kind == "hf":
        from .convert.hf import config_from_hf, info_from_hf, read_hf_config  # convert imports checkpoint
        hf = read_hf_config(folder)
        cfg = config_from_hf(hf)
        return cfg, info_for(info_from_hf(hf, folder), cfg, str(folder / CONFIG_FILE))
    cfg = read_config(folder)
    return cfg, info_for(_info_from_header(read_header(folder), folder), cfg, str(folder / CONFIG_FILE))


def read_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a model folder (any folder :func:`resolve_model_path` takes)."""
    return read_model_config(path)[1]


def read_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor],
                                                                            dict[str, str]]:
    """(state dict, metadata) of a ``.safetensors`` file; a damaged file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"{path} does not exist (the folder has {CONFIG_FILE} but no weights): "
                                     "copy the weights file beside it or save the model again")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted copy or save; copy it again "
                              "or load an earlier checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        state = load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types and OSError for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'}); it is truncated or "
                              "damaged: copy it again or load an earlier checkpoint") from None
    return state, metadata


def recorded_head_layout(metadata: Mapping[str, str]) -> dict[str, int]:
    """The head layout :func:`save_model` recorded in the safetensors metadata ({} if none)."""
    raw = metadata.get("head_layout")
    if not raw:
        return {}
    try:
        d = json.loads(raw)
        return {k: int(d[k]) for k in HEAD_LAYOUT_KEYS if k in d}
    except (json.JSONDecodeError, TypeError, ValueError):
        return {}


# ---------------------------------------------------------------------------- save / load
def save_model(model: ViViT, directory: str | Path, *, info: ModelInfo | None = None) -> Path:
    """Write ``model`` as a tubelet checkpoint folder (``config.json`` + ``model.safetensors``).

    ``info`` (default ``model.info``) gives the classes, preprocessing and provenance sections;
    its class names must fit the model's heads. Each file is written to a temporary name and
    renamed, weights first and config last, so an interrupted save leaves the previous
    checkpoint readable. Other files in the folder (e.g. the training state) are left alone.
    """
    from .models.captioner import Captioner
    directory = Path(directory)
    info = info if info is not None else getattr(model, "info", None) or ModelInfo()
    info.check(model.config, f"save_model({str(directory)!r})")
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if isinstance(model, Captioner):
        if model.decoder.cfg.tie_embeddings:
            state.pop("decoder.head.weight")  # the embedding's
        for name in model.frozen_names():  # a pretrained language model's: rebuilt from its package on load
            state.pop(name, None)
    header = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), **info.to_dict()}
    if isinstance(model, Captioner):
        header.update(task="caption", captioner=model.cfg.to_dict(), vocab=model.vocab.to_json())
    metadata = {"format": FORMAT, "version": str(VERSION), "head_layout": json.dumps(head_layout(model.config))}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, p, metadata=metadata))
    atomic_write(directory / CONFIG_FILE, lambda p: Path(p).write_text(dumps_json(header, indent=2) + "\n"))
    return directory


def load_model(path: str | Path, *, num_frames: int | None = None,
               image_size: int | tuple[int, int] | None = None, map_location: str | torch.device = "cpu",
               **overrides: Any) -> ViViT:
    """A :class:`ViViT` in eval mode, with ``model.info`` (classes, preprocessing, provenance).

    ``path`` is anything :func:`resolve_model_path` accepts: a checkpoint folder, a run folder
    or a transformers Vivit folder (converted in memory). ``num_frames`` / ``image_size`` (and
    any other config field in ``overrides``) change the model that is built; position
    embeddings are resized when the token grid changes.

    >>> model = load_model("runs/k400", num_frames=16, image_size=160)
    """
    folder, kind = resolve_model_path(path)
    changes = {k: v for k, v in dict(overrides, num_frames=num_frames, image_size=image_size).items()
               if v is not None}
    if kind == "hf":
        from .convert.hf import load_hf  # convert imports checkpoint
        return load_hf(folder, changes=changes).to(map_location).eval()
    header = read_header(folder)
    trained = read_config(folder)
    info = _info_from_header(header, folder)
    cfg = replace_config(trained, changes, str(folder / CONFIG_FILE))
    weights = folder / WEIGHTS_FILE
    state, metadata = read_weights(weights, map_location)
    if header.get("task", "classify") == "caption":
        return _load_captioner(header, cfg, info, state, folder, changes).to(map_location).eval()
    check_head_layout(recorded_head_layout(metadata), cfg, str(weights))
    lacking = [n for n in pos_embed_grids(trained) if n.endswith(".time_embed") and n not in state]
    if lacking:  # load_state would draw it fresh: right for an override, wrong for the trained config
        raise ConfigError(f"{weights}: {CONFIG_FILE} says time_embed={trained.time_embed} but the weights have "
                          f"no {lacking[0]!r}; set time_embed to null in {CONFIG_FILE} (pass time_embed=... "
                          "to load_model to add a fresh table)")
    state = adapt_pos_embeds(state, trained, cfg, str(weights))
    model = load_state(ViViT(cfg), state, str(weights))
    model.info = info_for(info, cfg, str(folder / CONFIG_FILE))
    return model.to(map_location).eval()


def _load_captioner(header: Mapping[str, Any], cfg: ViViTConfig, info: ModelInfo,
                    state: dict[str, torch.Tensor], folder: Path, changes: Mapping[str, Any]) -> torch.nn.Module:
    from .errors import TubeletError
    from .models.captioner import Captioner, CaptionerConfig, WordVocab
    source = str(folder / CONFIG_FILE)
    if changes:
        raise ConfigError(f"{source} is a captioner, built as it was trained: drop {', '.join(changes)}")
    try:
        captioner = CaptionerConfig(**header["captioner"])
        if captioner.pretrained is None:
            model = Captioner(ViViT(cfg), WordVocab(header["vocab"]), captioner)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{source}: a captioner needs 'vocab' and 'captioner' sections ({e})") from None
    if captioner.pretrained is not None:  # the frozen language model comes from its package, not the folder
        try:
            model = Captioner.from_language_model(ViViT(cfg), captioner.pretrained, captioner)
        except TubeletError as e:
            raise type(e)(f"{source}: the captioner's decoder is the pretrained {captioner.pretrained!r}, "
                          f"rebuilt from its package: {e}") from None
        if model.decoder.cfg != captioner.decoder or model.vocab.to_json() != header.get("vocab"):
            raise CheckpointError(f"{source}: the installed {captioner.pretrained!r} is not the language model "
                                  f"this captioner was trained on ({model.decoder.cfg} != {captioner.decoder})")
        live = model.state_dict()
        state = {**{name: live[name] for name in model.frozen_names()}, **state}
    if model.decoder.cfg.tie_embeddings and "decoder.embed.weight" in state:
        state = {**state, "decoder.head.weight": state["decoder.embed.weight"]}
    check_state_dict(model, state, str(folder / WEIGHTS_FILE))
    check_finite(state, str(folder / WEIGHTS_FILE))
    model.load_state_dict(state)
    model.info = info_for(info, cfg, source)
    return model


def replace_config(cfg: ViViTConfig, changes: Mapping[str, Any], source: str) -> ViViTConfig:
    """``cfg`` with ``changes``; an unknown field is a ConfigError listing the known ones."""
    try:
        return cfg.replace(**changes)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}; fields of ViViTConfig: "
                          f"{', '.join(ViViTConfig.__dataclass_fields__)}") from None


def info_for(info: ModelInfo, cfg: ViViTConfig, source: str) -> ModelInfo:
    """``info`` checked against the model built from ``cfg``; a recorded preprocessing follows
    the model's frames and size (a model loaded at another clip size is fed that size)."""
    info.check(cfg, source)
    if info.preprocessing is not None:
        info.preprocessing = info.preprocessing_for(cfg)
    return info


__all__ = ["CheckpointError", "ModelInfo", "Preprocessing", "adapt_pos_embeds", "check_finite",
           "check_head_layout", "check_state_dict", "field_hint", "head_layout", "load_model", "load_state",
           "read_config", "read_header", "read_info", "read_model_config", "read_weights", "resolve_model_path", "save_model"]
