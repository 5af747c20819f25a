"""What a model is, beyond its architecture: its classes, heads, preprocessing and provenance.

A :class:`ModelInfo` travels with the model object (``ViViT.info``) and with its folder
(the ``classes`` / ``preprocessing`` / ``provenance`` sections of ``config.json``), so that
every tool that loads the model classifies the same way: the same class names, the same
frames, the same pixel normalisation.

Pixels: the model sees ``(x / 255 - pixel_mean) / pixel_std`` per channel. The reference's
``x * 2 / 255 - 1`` (pixels in [-1, 1]) is mean = std = 0.5, the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import ConfigError
from .config import ViViTConfig

REFERENCE_MEAN = (0.5, 0.5, 0.5)
REFERENCE_STD = (0.5, 0.5, 0.5)


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"preprocessing {name}={value!r} must be three finite numbers (R, G, B) on x/255")
    return out  # type: ignore[return-value]


def _fmt(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:g}" for v in values) + ")"


@dataclass(frozen=True)
class Preprocessing:
    """How clips are made for the model: frames, stride, size and pixel normalisation."""

    num_frames: int  # frames fed to the model
    image_size: tuple[int, int]  # (height, width) fed to the model
    frame_stride: int = 2  # stride between sampled frames
    pixel_mean: tuple[float, float, float] = REFERENCE_MEAN  # on x/255; the reference's x*2/255-1
    pixel_std: tuple[float, float, float] = REFERENCE_STD

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        try:
            size = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"preprocessing image_size={self.image_size!r} must be (height, width) pixels")
        object.__setattr__(self, "image_size", size)
        for name in ("num_frames", "frame_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"preprocessing {name}={value!r} must be a positive integer")
        object.__setattr__(self, "pixel_mean", _triple("pixel_mean", self.pixel_mean))
        object.__setattr__(self, "pixel_std", _triple("pixel_std", self.pixel_std))
        if min(self.pixel_std) <= 0:
            raise ConfigError(f"preprocessing pixel_std={self.pixel_std} must be positive")

    @classmethod
    def for_config(cls, cfg: ViViTConfig, **changes: Any) -> "Preprocessing":
        """The model config's frames and size, stride 2 and the reference's pixels."""
        return cls(num_frames=cfg.num_frames, image_size=cfg.image_size, **changes)

    @property
    def is_reference_pixels(self) -> bool:
        """Pixels mapped to [-1, 1] as the reference does (x * 2 / 255 - 1)."""
        return self.pixel_mean == REFERENCE_MEAN and self.pixel_std == REFERENCE_STD

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The range the model's input pixels span, (lowest, highest) over the channels."""
        lo = min((0 - m) / s for m, s in zip(self.pixel_mean, self.pixel_std))
        hi = max((1 - m) / s for m, s in zip(self.pixel_mean, self.pixel_std))
        return lo, hi

    def describe(self) -> str:
        """One line: frames, stride, size and pixels."""
        lo, hi = self.pixel_range
        pixels = ("the reference's x * 2 / 255 - 1" if self.is_reference_pixels else
                  f"(x / 255 - {_fmt(self.pixel_mean)}) / {_fmt(self.pixel_std)}")
        return (f"{self.num_frames} frames at stride {self.frame_stride}, {self.image_size[0]}x"
                f"{self.image_size[1]} pixels, {pixels} (in [{lo:g}, {hi:g}])")

    def normalise(self, video: Any) -> Any:
        """uint8 or float [0, 255] frames (..., T, H, W, C) -> float32 (..., C, T, H, W) model input."""
        import torch

        mean = torch.tensor(self.pixel_mean, dtype=torch.float32, device=video.device)
        std = torch.tensor(self.pixel_std, dtype=torch.float32, device=video.device)
        x = (video.float() / 255 - mean) / std  # channels last: broadcasts over (..., C)
        return x.movedim(-1, -4)  # (..., T, H, W, C) -> (..., C, T, H, W)

    def to_dict(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "image_size": list(self.image_size),
                "frame_stride": self.frame_stride, "pixel_mean": list(self.pixel_mean),
                "pixel_std": list(self.pixel_std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing field(s) {unknown}; known: {sorted(known)}")
        missing = sorted({"num_frames", "image_size"} - set(d))
        if missing:
            raise ConfigError(f"preprocessing lacks {missing}")
        return cls(**d)


@dataclass
class ModelInfo:
    """A model's identity: class names per head, head names, preprocessing, provenance."""

    class_names: tuple[tuple[str, ...], ...] | None = None  # one tuple per head, None = unknown
    head_names: tuple[str, ...] | None = None  # e.g. ("verb", "noun"); None for 1 head
    preprocessing: Preprocessing | None = None  # None = the model config's frames/size,
    #                                               stride 2, reference pixels
    provenance: dict[str, Any] = field(default_factory=dict)  # preset, data, steps, metrics, source...

    def __post_init__(self) -> None:
        if self.class_names is not None:
            heads = self.class_names
            if heads and all(isinstance(c, str) for c in heads):  # one head given as a flat list
                heads = (heads,)
            self.class_names = tuple(tuple(str(c) for c in names) for names in heads)
        if self.head_names is not None:
            self.head_names = tuple(str(h) for h in self.head_names)
        if isinstance(self.preprocessing, Mapping):
            self.preprocessing = Preprocessing.from_dict(self.preprocessing)
        self.provenance = dict(self.provenance or {})

    # ------------------------------------------------------------------ against a model config
    def check(self, cfg: ViViTConfig, source: str = "the model info") -> None:
        """Raise :class:`ConfigError` unless the class and head names fit ``cfg``'s heads."""
        splits = cfg.class_splits
        if self.class_names is not None:
            sizes = tuple(len(names) for names in self.class_names)
            if sizes != splits:
                raise ConfigError(f"{source}: class names for heads of {list(sizes)} classes but the model "
                                  f"has num_classes={cfg.num_classes}; give one name per class of every head")
            for names in self.class_names:
                dup = sorted({n for n in names if names.count(n) > 1})
                if dup:
                    raise ConfigError(f"{source}: class name(s) {dup[:3]} appear twice in one head; "
                                      "class names must be unique")
        if self.head_names is not None and len(self.head_names) != len(splits):
            raise ConfigError(f"{source}: {len(self.head_names)} head name(s) {list(self.head_names)} "
                              f"for a model with {len(splits)} head(s) (num_classes={cfg.num_classes})")

    def preprocessing_for(self, cfg: ViViTConfig) -> Preprocessing:
        """The preprocessing to feed a model built from ``cfg``: the recorded one at ``cfg``'s
        frames and size (a model loaded at another clip size is fed that size), else the default."""
        if self.preprocessing is None:
            return Preprocessing.for_config(cfg)
        return replace(self.preprocessing, num_frames=cfg.num_frames, image_size=cfg.image_size)

    def names_of_head(self, head: int = 0) -> tuple[str, ...] | None:
        return self.class_names[head] if self.class_names is not None else None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The ``classes`` / ``preprocessing`` / ``provenance`` sections of ``config.json``."""
        return {
            "classes": {"class_names": [list(n) for n in self.class_names] if self.class_names else None,
                        "head_names": list(self.head_names) if self.head_names else None},
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelInfo":
        classes = d.get("classes") or {}
        if not isinstance(classes, Mapping):
            raise ConfigError(f"'classes' must be {{\"class_names\": [[...]], \"head_names\": [...]}}, "
                              f"got {type(classes).__name__}")
        pre = d.get("preprocessing")
        return cls(class_names=classes.get("class_names"), head_names=classes.get("head_names"),
                   preprocessing=Preprocessing.from_dict(pre) if pre else None,
                   provenance=dict(d.get("provenance") or {}))


__all__ = ["ModelInfo", "Preprocessing", "REFERENCE_MEAN", "REFERENCE_STD"]
