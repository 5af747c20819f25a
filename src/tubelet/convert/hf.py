"""transformers' ``VivitForVideoClassification`` <-> tubelet (ViViT Model 1).

transformers' Vivit is Model 1 with a CLS token and tubelet embedding. Its facts, checked
against ``transformers`` 5.x with a tiny random model (``tests/convert/test_hf.py``):

- input (B, T, C, H, W) (tubelet: (B, C, T, H, W)); the Conv3d kernel is (D, C, t, p, p) in
  both, so the tokeniser needs no transpose;
- ``hidden_act="gelu_fast"``, the tanh approximation (tubelet ``gelu="tanh"``); ``"gelu"`` is
  the exact one; ``layer_norm_eps`` 1e-6 by default; separate q/k/v Linears with ``qkv_bias``;
- two namings of the same tensors: ``save_pretrained`` writes the one of the released
  checkpoints (``vivit.encoder.layer.{i}.attention.attention.query``, ...), while the module
  tree of transformers 5 (``model.state_dict()``) says ``vivit.layers.{i}.attention.q_proj``.
  Both maps are written out in :func:`tubelet.convert.rules.transformers_layer` (shared with
  the image ViT import); import detects which one a state dict uses, export writes the
  released naming, which every transformers version loads.
- class names: ``id2label`` (transformers' placeholders ``LABEL_i`` mean "unknown");
- pixels: the processor config. The hub's Vivit processors rescale to [-1, 1] and then
  normalise with mean = std = 0.5, so the model sees [-3, 1]; the reference feeds [-1, 1].
  Import records what the processor does (:func:`pixels_from_processor`), export writes a
  processor that feeds what tubelet feeds (:func:`processor_for`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..checkpoint import (MissingCheckpointError, adapt_pos_embeds, check_head_layout, head_layout, info_for,
                          load_state, read_json, read_weights, replace_config)
from ..fileio import atomic_write, write_text_atomic
from ..models.blocks import fold_time_embed
from ..models.config import ConfigError, ViViTConfig
from ..models.info import ModelInfo, Preprocessing
from ..models.posembed import fit_pos_embeds
from ..models.vivit import ViViT
from .rules import Rule, apply_rules, export_rules, one, same, torch_pair, transformers_layer, transformers_naming


def hf_rules(cfg: ViViTConfig, naming: str = "released") -> list[Rule]:
    """The complete name map between tubelet and ``VivitForVideoClassification``."""
    rules: list[Rule] = [
        Rule("encoder.cls_token", ("vivit.embeddings.cls_token",), same, one),
        Rule("encoder.pos_embed", ("vivit.embeddings.position_embeddings",), same, one),
        *torch_pair("tokeniser.proj", "vivit.embeddings.patch_embeddings.projection"),
    ]
    for i in range(cfg.num_layers):
        rules += transformers_layer(f"encoder.blocks.{i}", "vivit.", i, naming)
    return rules + torch_pair("encoder.norm", "vivit.layernorm") + torch_pair("head", "classifier")


def detect_naming(keys: Any) -> str:
    """'released' or 'module': which of transformers' namings a Vivit state dict uses."""
    naming = transformers_naming(keys, "vivit.")
    if naming is None:
        raise ConfigError("not a VivitForVideoClassification state dict: no 'vivit.encoder.layer.*' "
                          "or 'vivit.layers.*' tensors")
    return naming


# ---------------------------------------------------------------------------- configs
_TANH_ACTS = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh")  # all the tanh approximation


def config_from_hf(hf: Mapping[str, Any] | Any) -> ViViTConfig:
    """A transformers ``VivitConfig`` (object or its ``config.json`` dict) -> tubelet config."""
    d = hf if isinstance(hf, Mapping) else hf.to_dict()
    t, ph, pw = d.get("tubelet_size", [2, 16, 16])
    if ph != pw:
        raise ConfigError(f"VivitConfig tubelet_size={[t, ph, pw]}: non-square patches are not supported")
    act = d.get("hidden_act", "gelu_fast")
    if act not in _TANH_ACTS + ("gelu",):
        raise ConfigError(f"VivitConfig hidden_act={act!r} is not a GELU tubelet has; "
                          f"use one of {_TANH_ACTS + ('gelu',)}")
    labels = d.get("id2label")
    num_classes = len(labels) if labels else d.get("num_labels", 2)
    return ViViTConfig(
        kind="spatiotemporal", classifier="token", tokeniser="tubelet",
        num_frames=d.get("num_frames", 32), image_size=d.get("image_size", 224),
        in_channels=d.get("num_channels", 3), patch_size=ph, tubelet_size=t,
        hidden_size=d.get("hidden_size", 768), num_layers=d.get("num_hidden_layers", 12),
        num_heads=d.get("num_attention_heads", 12), mlp_dim=d.get("intermediate_size", 3072),
        qkv_bias=d.get("qkv_bias", True), num_classes=num_classes,
        dropout=d.get("hidden_dropout_prob", 0.0), attention_dropout=d.get("attention_probs_dropout_prob", 0.0),
        gelu="tanh" if act in _TANH_ACTS else "exact", layer_norm_eps=d.get("layer_norm_eps", 1e-6))


def config_to_hf(cfg: ViViTConfig, class_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """tubelet config -> the ``config.json`` of a ``VivitForVideoClassification``; ``id2label``
    holds ``class_names`` (transformers' ``LABEL_i`` when unknown).

    Only Model 1 with a CLS token, the tubelet tokeniser, multi-head attention, square images,
    no pre-logits layer and one head has a transformers equivalent.
    """
    problems = [(cfg.kind != "spatiotemporal", f"kind={cfg.kind} (transformers has Model 1 only)"),
                (cfg.classifier != "token", f"classifier={cfg.classifier} (transformers uses the CLS token)"),
                (cfg.tokeniser != "tubelet", f"tokeniser={cfg.tokeniser}"),
                (cfg.kv_heads != cfg.num_heads, f"num_kv_heads={cfg.num_kv_heads}"),
                (cfg.representation_size is not None, f"representation_size={cfg.representation_size}"),
                (len(cfg.class_splits) > 1, f"num_classes={cfg.num_classes} (several heads)"),
                (cfg.image_size[0] != cfg.image_size[1], f"image_size={cfg.image_size} (not square)")]
    bad = [msg for cond, msg in problems if cond]
    if bad:
        raise ConfigError(f"cannot export to transformers' Vivit: {'; '.join(bad)}")
    n = cfg.total_classes
    labels = list(class_names) if class_names else [f"LABEL_{i}" for i in range(n)]
    if len(labels) != n:
        raise ConfigError(f"{len(labels)} class names for a head of {n} classes")
    return {
        "architectures": ["VivitForVideoClassification"], "model_type": "vivit",
        "num_frames": cfg.num_frames, "image_size": cfg.image_size[0], "num_channels": cfg.in_channels,
        "tubelet_size": [cfg.tubelet_size, cfg.patch_size, cfg.patch_size],
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.mlp_dim,
        "hidden_act": "gelu_fast" if cfg.gelu == "tanh" else "gelu",
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.attention_dropout,
        "layer_norm_eps": cfg.layer_norm_eps, "qkv_bias": cfg.qkv_bias, "initializer_range": 0.02,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


# ---------------------------------------------------------------------------- weights
def convert_hf_state_dict(state: Mapping[str, Tensor], cfg: ViViTConfig,
                          source: str = "the transformers state dict") -> dict[str, Tensor]:
    """A ``VivitForVideoClassification`` state dict (either naming) -> tubelet state dict."""
    return apply_rules(hf_rules(cfg, detect_naming(state)), state, source, ignored=("vivit.pooler.",),
                       hint=f"; does num_layers={cfg.num_layers} match its num_hidden_layers?")


def to_hf_state_dict(model: ViViT, naming: str = "released") -> dict[str, Tensor]:
    """tubelet Model 1 -> a ``VivitForVideoClassification`` state dict (``naming`` as above)."""
    config_to_hf(model.config)  # raises for variants transformers does not have
    state = dict(model.state_dict())
    if "encoder.time_embed" in state:  # transformers has one table: fold the rows over time into it
        time = state.pop("encoder.time_embed")
        state["encoder.pos_embed"] = fold_time_embed(state["encoder.pos_embed"], time, prefix=1)
    return export_rules(hf_rules(model.config, naming), state)


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a folder written by ``save_pretrained``."""
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise MissingCheckpointError(f"{cfg_path} does not exist: expected a folder written by "
                                     "transformers' save_pretrained (config.json + model.safetensors)")
    return read_json(cfg_path)


def read_hf_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json dict, state dict) of a folder written by ``save_pretrained``."""
    folder = Path(folder)
    config = read_hf_config(folder)
    if (folder / "model.safetensors").is_file():
        state, _ = read_weights(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise MissingCheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin "
                                "(sharded checkpoints: merge them with transformers first)")
    return config, state


def load_hf(source: str | Path | Mapping[str, Tensor], config: Mapping[str, Any] | Any = None,
            cfg: ViViTConfig | None = None, *, changes: Mapping[str, Any] | None = None) -> ViViT:
    """A tubelet :class:`ViViT` from transformers' Vivit: a ``save_pretrained`` folder, or a state
    dict in memory with its ``config`` (a ``VivitConfig`` or its dict).

    ``cfg`` is the model to build when it differs from the mapped config, or ``changes`` the
    fields to change in the mapped config (e.g. another ``num_frames`` or ``image_size``:
    position embeddings are resized from the trained grid). A folder's ``model.info`` holds
    the class names of ``id2label`` and the preprocessing of its processor config.
    """
    name = str(source) if isinstance(source, (str, Path)) else "the transformers state dict"
    folder = Path(source) if isinstance(source, (str, Path)) else None
    if folder is not None:
        config, state = read_hf_folder(folder)
    else:
        state = dict(source)
    hf_config = config if config is None or isinstance(config, Mapping) else config.to_dict()
    trained = config_from_hf(hf_config) if hf_config is not None else None
    if cfg is None and trained is None:
        raise ConfigError("a transformers state dict needs its config (config=model.config) or a "
                          "tubelet cfg to be converted")
    cfg = cfg or trained
    if changes:
        cfg = replace_config(cfg, changes, name)
    if trained is not None:
        check_head_layout(head_layout(trained), cfg, name)
    tubelet_state = convert_hf_state_dict(state, cfg, name)
    tubelet_state = (adapt_pos_embeds(tubelet_state, trained, cfg, name) if trained
                     else fit_pos_embeds(tubelet_state, cfg))
    model = load_state(ViViT(cfg), tubelet_state, name).eval()
    if hf_config is not None:
        model.info = info_for(info_from_hf(hf_config, folder), cfg, name)
    return model


def info_from_hf(hf_config: Mapping[str, Any], folder: str | Path | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of a transformers Vivit: class names from ``id2label`` (unless
    they are transformers' placeholders ``LABEL_i``), preprocessing from the folder's
    ``preprocessor_config.json`` when there is one."""
    labels = hf_config.get("id2label") or {}
    names = None
    if labels:
        try:
            ordered = [labels[k] for k in sorted(labels, key=int)]
        except ValueError:
            raise ConfigError(f"id2label keys must be class indices, got {sorted(labels)[:3]}") from None
        if ordered != [f"LABEL_{i}" for i in range(len(ordered))]:
            names = (tuple(ordered),)
    cfg = config_from_hf(hf_config)
    pre = read_hf_preprocessing(folder, cfg) if folder is not None else None
    stride = (hf_config.get("tubelet") or {}).get("frame_stride")  # written by save_hf
    if stride is not None:
        pre = replace(pre, frame_stride=int(stride)) if pre else Preprocessing.for_config(cfg, frame_stride=int(stride))
    return ModelInfo(class_names=names, preprocessing=pre,
                     provenance={"source": f"transformers {str(folder) if folder else 'state dict'}"})


# ---------------------------------------------------------------------------- preprocessing
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


def pixels_from_processor(proc: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(pixel_mean, pixel_std) on x/255 that give what a Vivit processor config computes.

    Vivit's processors compute ``(x * rescale_factor [- 1 with offset] - image_mean) / image_std``
    per channel; with ``a = rescale_factor`` and ``b = -1`` (offset) or 0 this is
    ``(x / 255 - (image_mean - b) / (255 a)) / (image_std / (255 a))``. The hub's defaults
    (1/127.5, offset, mean = std = 0.5) map pixels to [-3, 1]: mean 0.75, std 0.25 on x/255.
    """
    kind = str(proc.get("video_processor_type") or proc.get("image_processor_type") or "VivitImageProcessor")
    rescale = bool(proc.get("do_rescale", True))
    a = float(proc.get("rescale_factor", 1 / 127.5 if kind.startswith("Vivit") else 1 / 255)) if rescale else 1.0
    if kind == "VivitVideoProcessor":  # always offsets when it rescales
        offset = rescale
    else:  # VivitImageProcessor's `offset` defaults to true; other processors have none
        offset = rescale and bool(proc.get("offset", kind.startswith("Vivit")))
    b = -1.0 if offset else 0.0
    if proc.get("do_normalize", True):
        mean = [float(m) for m in _per_channel(proc.get("image_mean", 0.5))]
        std = [float(s) for s in _per_channel(proc.get("image_std", 0.5))]
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    return (tuple((m - b) / (255 * a) for m in mean), tuple(s / (255 * a) for s in std))


def _per_channel(v: Any) -> list[float]:
    return list(v) if isinstance(v, (list, tuple)) else [v] * 3


def read_hf_preprocessing(folder: str | Path, cfg: ViViTConfig) -> Preprocessing | None:
    """The :class:`Preprocessing` a transformers folder's processor config describes (its
    pixel normalisation; frames and size are the model's), or None without one."""
    for name in PROCESSOR_FILES:
        path = Path(folder) / name
        if path.is_file():
            try:
                proc = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} is not valid JSON ({e})") from None
            mean, std = pixels_from_processor(proc)
            return Preprocessing.for_config(cfg, pixel_mean=mean, pixel_std=std)
    return None


def processor_for(info: ModelInfo, cfg: ViViTConfig) -> dict[str, Any]:
    """A ``VivitImageProcessor`` config that feeds the model what tubelet feeds it: frames
    resized so the short side is the model's, centre-cropped to the model's size, pixels
    ``(x / 255 - pixel_mean) / pixel_std`` (the reference's [-1, 1] by default)."""
    pre = info.preprocessing_for(cfg)
    h, w = pre.image_size
    return {"image_processor_type": "VivitImageProcessor", "do_resize": True,
            "size": {"shortest_edge": min(h, w)}, "resample": 2, "do_center_crop": True,
            "crop_size": {"height": h, "width": w}, "do_rescale": True, "rescale_factor": 1 / 255,
            "offset": False, "do_normalize": True, "image_mean": list(pre.pixel_mean),
            "image_std": list(pre.pixel_std)}


def save_hf(model: ViViT, folder: str | Path, info: ModelInfo | None = None) -> Path:
    """Write ``model`` as a transformers folder that ``VivitForVideoClassification.from_pretrained``
    and ``pipeline("video-classification", model=folder)`` load: ``config.json`` (with the class
    names of ``info``, default ``model.info``, as ``id2label``), ``model.safetensors`` and a
    ``preprocessor_config.json`` giving the model's pixels (the reference's [-1, 1] by default)."""
    folder = Path(folder)
    info = info if info is not None else model.info
    info.check(model.config, f"export to {folder}")
    config = config_to_hf(model.config, info.names_of_head(0))
    # transformers keeps unknown keys: the stride its processor has no field for travels here
    config["tubelet"] = {"frame_stride": info.preprocessing_for(model.config).frame_stride}
    state = to_hf_state_dict(model)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
    write_text_atomic(folder / "preprocessor_config.json",
                      json.dumps(processor_for(info, model.config), indent=2) + "\n")
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2) + "\n")
    return folder


__all__ = ["info_from_hf", "pixels_from_processor", "processor_for", "read_hf_preprocessing", "config_from_hf", "config_to_hf", "convert_hf_state_dict", "detect_naming", "hf_rules",
           "load_hf", "read_hf_config", "read_hf_folder", "save_hf", "to_hf_state_dict"]
