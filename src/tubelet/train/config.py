"""One typed training configuration, the paper's recipes as presets, and how to override them.

Precedence, lowest first: the preset, a YAML file (``--config run.yaml``), command-line flags
(every field is a flag: ``--batch-size 16``, ``--model-args '{"drop_path": 0.1}'``). The
resolved configuration is saved as ``config.yaml`` in the run folder.

The presets follow Table 7 of the paper (see ../DESIGN.md): synchronous SGD with momentum 0.9,
batch 64, a cosine schedule after 2.5 epochs of linear warm-up, gradient clipping at global
norm 1, and per dataset the base learning rate, the epochs and the regularisers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    # What to train.
    model: str = "vivit_micro"
    model_args: dict[str, Any] = field(default_factory=dict)  # ViViTConfig overrides
    num_frames: int | None = None  # clip length fed to the model (default: the model's)
    image_size: int | None = None  # square crop size (default: the model's)
    num_kv_heads: int | None = None  # grouped-query attention (GQA); 1 = multi-query
    init: str | None = None  # image ViT weights or a tubelet checkpoint folder
    init_kernel: str = "central_frame"  # tubelet kernel from a 2D one: central_frame | filter_inflation
    # Data. None = the built-in motion dataset (generated on first use, then cached).
    data: str | None = None
    val_data: str | None = None  # default: the validation split of `data`
    data_format: str = "auto"
    frame_stride: int = 2  # temporal stride s between sampled frames
    workers: int = 2
    # Optimisation (Table 7).
    epochs: float = 30.0
    batch_size: int = 64  # global batch; reached by gradient accumulation when needed
    micro_batch_size: int | None = None  # clips per forward pass per process (default: batch_size)
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: float = 2.5
    min_lr: float = 0.0
    grad_clip: float | None = 1.0
    # Regularisation (Table 7 / appendix A).
    augment: str = "kinetics"  # kinetics (flip, colour jitter) | randaugment | colour (no flip) | none
    randaugment_magnitude: int = 15
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    drop_path: float = 0.0
    dropout: float = 0.0
    # Evaluation (paper 4.1: 4 temporal views x 3 spatial crops, logits averaged).
    eval_views: int = 4
    eval_crops: int = 3
    eval_average: str = "logits"  # logits | softmax
    eval_every: float = 1.0  # epochs between validation passes (0: only at the end)
    # Runtime.
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    ema: float | None = None  # decay of an exponential moving average of the weights
    grad_checkpointing: bool = False
    parallel: str = "ddp"  # ddp | fsdp (under torchrun)
    seed: int = 0
    out: str | None = None  # run folder; default: the next free runs/<preset>[-N]
    checkpoint_every: int = 200  # optimiser steps between checkpoints (and at every epoch end)
    max_steps: int | None = None  # stop early (tests, smoke runs)
    uptrain_fraction: float | None = None  # GQA uptraining: length as a fraction of the init's steps
    log_every: int = 10
    preset: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Table 7 of the paper (and ../DESIGN.md). The built-in dataset's preset is tuned to reach
# >= 90% top-1 on two CPU cores in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    # Model 1 on 8 frames at stride 2 (the built-in clips' 16 frames); 8x8 patches see the motion
    # (16x16 learned the size and fade classes but not direction); no flip (it swaps left and right).
    "default": dict(model="vivit_micro", epochs=28, batch_size=16, optimizer="adamw", lr=1e-3,
                    weight_decay=0.05, warmup_epochs=1, augment="colour", label_smoothing=0.1,
                    eval_every=0, frame_stride=2, eval_views=2, eval_crops=1),
    "k400": dict(model="vivit_b16x2", epochs=30, lr=0.1, augment="kinetics"),
    "k600": dict(model="vivit_b16x2", epochs=30, lr=0.1, augment="kinetics"),
    "mit": dict(model="vivit_b16x2", epochs=10, lr=0.25, augment="kinetics"),
    "ek100": dict(model="vivit_b16x2_fe", epochs=50, lr=0.5, augment="randaugment",
                  randaugment_magnitude=15, drop_path=0.2, label_smoothing=0.2, mixup_alpha=0.1),
    "ssv2": dict(model="vivit_b16x2_fe", epochs=35, lr=0.5, augment="randaugment",
                 randaugment_magnitude=20, drop_path=0.3, label_smoothing=0.3, mixup_alpha=0.3),
}


def _field_type(f: dataclasses.Field) -> Any:
    t = str(f.type)
    if "dict" in t:
        return json.loads
    if t.startswith("bool"):
        return _parse_bool
    if t.startswith("int"):
        return int
    if t.startswith("float"):
        return float
    return str


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _nullable(parse):
    return lambda text: None if text.lower() in ("none", "null") else parse(text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (``--batch-size``), plus ``--preset`` and ``--config FILE.yaml``."""
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a recipe of the paper (Table 7), or 'default' for the built-in dataset")
    parser.add_argument("--config", metavar="FILE", help="a YAML file of fields to override")
    group = parser.add_argument_group(
        "training fields (override the preset and --config; the defaults shown are the 'default' "
        "preset's, and the other presets set their own: see --preset)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        parse = _field_type(f)
        if "None" in str(f.type):
            parse = _nullable(parse)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = PRESETS["default"].get(f.name, default)
        group.add_argument(flag, dest=f.name, type=parse, default=argparse.SUPPRESS,
                           metavar=f.name.split("_")[-1].upper(), help=f"default: {default}")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Preset, then YAML file, then flags -> a validated :class:`TrainConfig`."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    preset = getattr(args, "preset", None)
    file_values: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        file_values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(file_values, dict):
            raise ValueError(f"{path}: expected a mapping of field: value, got {type(file_values).__name__}")
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {unknown}; `tubelet train --help` lists them")
        preset = preset or file_values.get("preset")
    preset = preset or "default"
    values.update(PRESETS[preset])
    values.update(file_values)
    values.update({k: v for k, v in vars(args).items() if k in known})
    values["preset"] = preset
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    def fail(msg: str) -> None:
        raise ValueError(msg)

    if cfg.batch_size < 1:
        fail(f"batch_size={cfg.batch_size} must be at least 1")
    if cfg.micro_batch_size is not None and cfg.micro_batch_size < 1:
        fail(f"micro_batch_size={cfg.micro_batch_size} must be at least 1")
    if cfg.optimizer not in ("sgd", "adamw"):
        fail(f"optimizer={cfg.optimizer!r}: choose sgd or adamw")
    from ..data.augment import PRESETS as AUGMENTATIONS
    if cfg.augment not in AUGMENTATIONS:
        fail(f"augment={cfg.augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if cfg.eval_average not in ("logits", "softmax"):
        fail(f"eval_average={cfg.eval_average!r}: choose logits or softmax")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        fail(f"precision={cfg.precision!r}: choose auto, fp32 or bf16")
    if cfg.parallel not in ("ddp", "fsdp"):
        fail(f"parallel={cfg.parallel!r}: choose ddp or fsdp")
    if cfg.init_kernel not in ("central_frame", "filter_inflation"):
        fail(f"init_kernel={cfg.init_kernel!r}: choose central_frame or filter_inflation")
    if cfg.epochs <= 0 and not cfg.max_steps:
        fail(f"epochs={cfg.epochs} must be positive")
    if cfg.ema is not None and not 0 < cfg.ema < 1:
        fail(f"ema={cfg.ema} must be a decay in (0, 1), e.g. 0.999")
    if cfg.uptrain_fraction is not None and not 0 < cfg.uptrain_fraction <= 1:
        fail(f"uptrain_fraction={cfg.uptrain_fraction} must be in (0, 1], e.g. 0.05")


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: Path) -> TrainConfig:
    return TrainConfig(**yaml.safe_load(Path(path).read_text()))
