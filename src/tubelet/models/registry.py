"""Named ViViT configurations, timm-style: ``vivit_b16x2``, ``vivit_l16x2_fe``, ...

A name is ``vivit_<backbone><patch>x<tubelet t>[_<variant>]``:

=============  ====================================================================
backbone       ``ti`` ``s`` ``b`` ``l`` ``h`` (ViT-Ti/S/B/L/H)
patch          16 or 14 (pixels)
variant        none: Model 1; ``fe``: Model 2 (factorised encoder); ``fsa``: Model 3;
               ``fdp``: Model 4; ``fe_avgpool``: the average-pool baseline of Table 2
=============  ====================================================================

Every name defaults to 32 frames, 224x224 and 400 classes (Kinetics-400), the setting of the
paper's Table 2; :func:`create_model` overrides any field.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from .config import ConfigError, ViViTConfig
from .vivit import ViViT

# (hidden, layers, heads, mlp) of the ViT backbones (Dosovitskiy et al., Table 1; Ti/S from DeiT).
BACKBONES: dict[str, tuple[int, int, int, int]] = {
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096),
    "h": (1280, 32, 16, 5120),
}
# variant suffix -> (kind, classifier). Models 3 and 4 have no CLS token (paper 3.3).
VARIANTS: dict[str, tuple[str, str]] = {
    "": ("spatiotemporal", "token"),
    "_fe": ("factorised_encoder", "token"),
    "_fsa": ("factorised_self_attention", "gap"),
    "_fdp": ("factorised_dot_product", "gap"),
    "_fe_avgpool": ("average_pool", "token"),
}

_REGISTRY: dict[str, Callable[[], ViViTConfig]] = {}


def register_config(name: str, make: Callable[[], ViViTConfig]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = make


def _register_defaults() -> None:
    for b, (hidden, layers, heads, mlp) in BACKBONES.items():
        for patch in (16, 14):
            for suffix, (kind, classifier) in VARIANTS.items():
                if kind == "factorised_dot_product" and heads % 2:
                    continue  # ViT-Ti's 3 heads cannot be split between time and space
                name = f"vivit_{b}{patch}x2{suffix}"
                # Default arguments bind this iteration's values.
                def make(name=name, kind=kind, classifier=classifier, patch=patch, hidden=hidden,
                         layers=layers, heads=heads, mlp=mlp) -> ViViTConfig:
                    return ViViTConfig(kind=kind, classifier=classifier, patch_size=patch,
                                       tubelet_size=2, hidden_size=hidden, num_layers=layers,
                                       num_heads=heads, mlp_dim=mlp, name=name)
                register_config(name, make)
    # The small model that `tubelet train` fits on two CPU cores on the built-in dataset.
    register_config("vivit_micro", lambda: ViViTConfig(
        kind="spatiotemporal", classifier="token", num_frames=8, image_size=(64, 64),
        patch_size=8, tubelet_size=2, hidden_size=128, num_layers=4, num_heads=4, mlp_dim=256,
        temporal_layers=2, num_classes=10, name="vivit_micro"))


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, optionally those containing ``pattern``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern in n] if pattern else names


def get_config(name: str, **overrides: Any) -> ViViTConfig:
    """The named configuration with ``overrides`` applied (``None`` values are ignored)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `tubelet models` lists them"
        raise ConfigError(f"unknown model name {name!r}{hint}")
    cfg = _REGISTRY[name]()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        try:
            cfg = cfg.replace(**overrides)
        except TypeError as e:  # an unknown field
            raise ConfigError(f"{e}; fields of ViViTConfig: "
                              f"{', '.join(ViViTConfig.__dataclass_fields__)}") from None
    return cfg


def create_model(name: str, *, num_classes: int | tuple[int, ...] | None = None,
                 num_frames: int | None = None, image_size: int | tuple[int, int] | None = None,
                 **overrides: Any) -> ViViT:
    """Build a named ViViT with randomly initialised weights.

    >>> model = create_model("vivit_b16x2_fe", num_classes=(97, 300), num_frames=32)
    """
    return ViViT(get_config(name, num_classes=num_classes, num_frames=num_frames,
                            image_size=image_size, **overrides))


_register_defaults()
