"""Augmentation on the training device, batched, with the same parameters on every frame of a clip.

Appendix A.1 of the paper: "the same transformation is applied on each frame of the video". Here
every random parameter is drawn once per clip, shape (B,), and repeated over the clip's T frames;
the ops that depend on image statistics (equalise, auto-contrast) take them over the whole clip.
Clips of a batch draw different parameters. All draws come from one ``torch.Generator``
(``seed=``), so a resumed run can reproduce them.

The worker side of the recipe (scale jitter 0.9-1.33 and the random crop) is in
:mod:`tubelet.data.dataset`; this module adds the flip, colour jitter, RandAugment, mixup and
label smoothing. Presets follow Table 7 of the paper:

===========  ====================================================================
``kinetics`` flip 0.5, colour jitter with probability 0.8 (also Moments in Time)
``epic``     flip 0.5, RandAugment 2 layers, magnitude 15; mixup 0.1, smoothing 0.2
``ssv2``     RandAugment 2 layers, magnitude 20; mixup 0.3, smoothing 0.3. No flip:
             SSv2 has left/right classes ("pushing something from left to right").
``randaugment`` RandAugment 2 layers (magnitude set by :func:`build_augmentation`), no flip
``none``     nothing (the built-in motion dataset: flips would swap its left/right classes)
===========  ====================================================================

Tensors: the loader gives uint8 (B, T, H, W, C); :func:`normalise` makes the model's float
(B, C, T, H, W) in [-1, 1] on the device, and :class:`VideoAugment` maps that to the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


def normalise(video: torch.Tensor) -> torch.Tensor:
    """The reference's input normalisation, shared by training and prediction.

    uint8 or float in [0, 255], (..., T, H, W, C) -> float32 (..., C, T, H, W) as ``x * 2/255 - 1``.
    """
    x = video.float() * (2 / 255) - 1
    return x.movedim(-1, -4)  # (..., T, H, W, C) -> (..., C, T, H, W)


# -- parameters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """What :class:`VideoAugment` does, and the batch-level regularisers of the recipe."""

    flip: float = 0.0  # probability of a horizontal flip
    colour_jitter: float = 0.0  # probability of colour jitter
    brightness: float = 32 / 255  # additive delta, uniform in [-b, b] (on [0, 1] pixels)
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.6, 1.4)
    hue: float = 0.2  # fraction of the colour circle, uniform in [-h, h]
    randaugment_layers: int = 0
    randaugment_magnitude: float = 0.0
    mixup_alpha: float = 0.0
    label_smoothing: float = 0.0


PRESETS: dict[str, AugmentConfig] = {
    "kinetics": AugmentConfig(flip=0.5, colour_jitter=0.8),
    "randaugment": AugmentConfig(randaugment_layers=2, randaugment_magnitude=15),
    # No flip: for labels that name a direction (the built-in dataset's moving left / right).
    "colour": AugmentConfig(colour_jitter=0.8),
    "epic": AugmentConfig(flip=0.5, randaugment_layers=2, randaugment_magnitude=15,
                          mixup_alpha=0.1, label_smoothing=0.2),
    "ssv2": AugmentConfig(randaugment_layers=2, randaugment_magnitude=20, mixup_alpha=0.3,
                          label_smoothing=0.3),
    "none": AugmentConfig(),
}


def _per_frame(params: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, ...) per-clip parameters -> (B*T, ...) per-frame parameters, equal within a clip."""
    return params.repeat_interleave(frames, dim=0)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B*T, C, H, W)."""
    return x.flatten(0, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """TF/PIL ``ImageEnhance``: ``degenerate + factor * (x - degenerate)``, clipped to [0, 1].

    ``factor`` is (B,) per clip; x and degenerate are (B, T, C, H, W).
    """
    return (degenerate + factor.view(-1, 1, 1, 1, 1) * (x - degenerate)).clamp(0, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, T, 3, H, W) luminance repeated over the channels."""
    return kornia.color.rgb_to_grayscale(_frames(x)).view(*x.shape[:2], 1, *x.shape[3:]).expand_as(x)


def _affine(x: torch.Tensor, matrix: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
    """Warp each clip by its (B, 2, 3) matrix, the same one on every frame; grey fill like TF."""
    b, t, c, h, w = x.shape
    fill_value = torch.full((c,), fill, device=x.device, dtype=x.dtype)
    out = kornia.geometry.transform.warp_affine(_frames(x), _per_frame(matrix, t), (h, w),
                                                padding_mode="fill", fill_value=fill_value,
                                                align_corners=False)
    return out.view(b, t, c, h, w)


def _centred(linear: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 2, 2) linear maps about the image centre -> (B, 2, 3) affine matrices."""
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=linear.device, dtype=linear.dtype)
    shift = centre - (linear @ centre)
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)


# -- RandAugment ops: (x (B,T,C,H,W) in [0,1], level (B,) signed where it applies) -> x -----------
def _rotate(x, level):
    angle = torch.deg2rad(level / 10 * 30)
    cos, sin = torch.cos(angle), torch.sin(angle)
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return _affine(x, _centred(linear, *x.shape[-2:]))


def _shear(axis: int):
    def op(x, level):
        linear = torch.eye(2, device=x.device).repeat(len(level), 1, 1)
        linear[:, axis, 1 - axis] = level / 10 * 0.3
        return _affine(x, _centred(linear, *x.shape[-2:]))
    return op


def _translate(axis: int):
    def op(x, level):  # TF shifts up to 100 px at level 10 for 224 px images
        matrix = torch.eye(2, 3, device=x.device).repeat(len(level), 1, 1)
        matrix[:, axis, 2] = level / 10 * (100 / 224) * x.shape[-1 - axis]
        return _affine(x, matrix)
    return op


def _enhance(degenerate_of):
    def op(x, level):
        return _blend(degenerate_of(x), x, level.abs() / 10 * 1.8 + 0.1)
    return op


def _contrast_degenerate(x):
    return _grey(x).mean(dim=(1, 2, 3, 4), keepdim=True).expand_as(x)  # one grey level per clip


def _sharpness(x, level):
    factor = _per_frame(level.abs() / 10 * 1.8 + 0.1, x.shape[1])
    return kornia.enhance.sharpness(_frames(x), factor).view_as(x)


def _posterize(x, level):
    bits = (level.abs() / 10 * 4).long().clamp(1, 8)
    return kornia.enhance.posterize(_frames(x), _per_frame(bits, x.shape[1])).view_as(x)


def _solarize(x, level):
    threshold = (level.abs() / 10).clamp(max=1.0)  # TF: level/10 * 256 on 0..255 pixels
    t = threshold.view(-1, 1, 1, 1, 1)
    return torch.where(x < t, x, 1 - x)


def _solarize_add(x, level):
    add = (level.abs() / 10 * 110 / 255).view(-1, 1, 1, 1, 1)
    return torch.where(x < 128 / 255, (x + add).clamp(0, 1), x)


def _autocontrast(x, level):
    low = x.amin(dim=(1, 3, 4), keepdim=True)  # per clip and channel, over all frames
    high = x.amax(dim=(1, 3, 4), keepdim=True)
    scale = torch.where(high > low, 1 / (high - low).clamp(min=1e-6), torch.ones_like(high))
    return torch.where(high > low, (x - low) * scale, x)


def _equalise(x, level):
    b, t, c, h, w = x.shape
    tall = x.permute(0, 2, 1, 3, 4).reshape(b, c, t * h, w)  # the clip as one tall image
    out = kornia.enhance.equalize(tall)
    return out.view(b, c, t, h, w).permute(0, 2, 1, 3, 4)


def _invert(x, level):
    return 1 - x


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n,) uniform [0, 1) draws from ``generator`` (on its own device), moved to ``device``."""
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _cutout(x, level, generator):
    b, t, c, h, w = x.shape
    half = (level.abs() / 10 * 40 / 224 * min(h, w)).round()  # TF: 40 px at level 10, 224 px
    cy = _uniform(b, generator, x.device) * h
    cx = _uniform(b, generator, x.device) * w
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy.view(-1, 1, 1)).abs() < half.view(-1, 1, 1)) & \
             ((xs - cx.view(-1, 1, 1)).abs() < half.view(-1, 1, 1))  # (B, H, W)
    return torch.where(inside[:, None, None], torch.full_like(x, 0.5), x)


# name -> (op, takes a random sign). The TF RandAugment list (tensorflow/models augment.py).
RANDAUGMENT_OPS = {
    "AutoContrast": (_autocontrast, False),
    "Equalize": (_equalise, False),
    "Invert": (_invert, False),
    "Rotate": (_rotate, True),
    "Posterize": (_posterize, False),
    "Solarize": (_solarize, False),
    "Color": (_enhance(_grey), False),
    "Contrast": (_enhance(_contrast_degenerate), False),
    "Brightness": (_enhance(torch.zeros_like), False),
    "Sharpness": (_sharpness, False),
    "ShearX": (_shear(0), True),
    "ShearY": (_shear(1), True),
    "TranslateX": (_translate(0), True),
    "TranslateY": (_translate(1), True),
    "Cutout": (None, False),  # needs the generator for its position; handled in randaugment()
    "SolarizeAdd": (_solarize_add, False),
}


def randaugment(x: torch.Tensor, layers: int, magnitude: float, generator: torch.Generator
                ) -> torch.Tensor:
    """RandAugment with one op per clip and layer, the same on all its frames.

    x: (B, T, C, H, W) float in [0, 1]. As in the TF reference, each layer picks one of the ops or
    the identity uniformly, and applies it with a probability drawn from [0.2, 0.8]; magnitudes
    are on the reference's scale (10 is "full"; the paper uses 15 and 20).
    """
    names = list(RANDAUGMENT_OPS)
    b = x.shape[0]
    cpu = torch.device("cpu")
    for _ in range(layers):
        choice = (_uniform(b, generator, cpu) * (len(names) + 1)).long()  # len(names): identity
        apply = _uniform(b, generator, cpu) < 0.2 + 0.6 * _uniform(b, generator, cpu)
        sign = torch.where(_uniform(b, generator, cpu) < 0.5, -1.0, 1.0)
        for i, name in enumerate(names):
            chosen = ((choice == i) & apply).nonzero().flatten()
            if len(chosen) == 0:
                continue
            op, signed = RANDAUGMENT_OPS[name]
            level = torch.full((len(chosen),), float(magnitude)) * (sign[chosen] if signed else 1)
            level = level.to(x.device)
            idx = chosen.to(x.device)
            part = x[idx]
            part = _cutout(part, level, generator) if name == "Cutout" else op(part, level)
            x = x.index_copy(0, idx, part)
    return x


def colour_jitter(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Brightness, saturation, contrast and hue, each clip with its own draws, with probability
    ``config.colour_jitter`` per clip. x: (B, T, C, H, W) float in [0, 1]."""
    b, t = x.shape[:2]
    u = lambda lo, hi: lo + (hi - lo) * _uniform(b, generator, x.device)  # noqa: E731
    on = _uniform(b, generator, x.device) < config.colour_jitter
    brightness = u(-config.brightness, config.brightness)
    saturation = u(*config.saturation)
    contrast = u(*config.contrast)
    hue = u(-config.hue, config.hue) * 2 * math.pi  # kornia takes radians
    y = (x + brightness.view(-1, 1, 1, 1, 1)).clamp(0, 1)
    y = kornia.enhance.adjust_saturation(_frames(y), _per_frame(saturation, t)).view_as(x)
    mean = y.mean(dim=(2, 3, 4), keepdim=True)  # per frame, as TF's adjust_contrast
    y = (mean + contrast.view(-1, 1, 1, 1, 1) * (y - mean)).clamp(0, 1)
    y = kornia.enhance.adjust_hue(_frames(y), _per_frame(hue, t)).view_as(x).clamp(0, 1)
    return torch.where(on.view(-1, 1, 1, 1, 1), y, x)


class VideoAugment(nn.Module):
    """The device-side augmentation of a batch of clips.

    ``config``: an :class:`AugmentConfig` or a preset name (``kinetics``, ``randaugment``,
    ``epic``, ``ssv2``, ``none``). ``seed`` seeds the module's own generator;
    ``forward(..., generator=g)`` uses ``g`` instead (on any device). In eval mode
    (``module.eval()``) it returns its input.

    float (B, C, T, H, W) in [-1, 1] (:func:`normalise`'s output) -> the same.
    """

    def __init__(self, config: AugmentConfig | str = "kinetics", seed: int = 0):
        super().__init__()
        if isinstance(config, str):
            if config not in PRESETS:
                raise ConfigError(f"unknown augmentation preset {config!r}; choose one of "
                                 f"{', '.join(PRESETS)}")
            config = PRESETS[config]
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        if not self.training or (c.flip <= 0 and c.colour_jitter <= 0 and c.randaugment_layers <= 0):
            return video
        g = generator or self.generator
        x = ((video + 1) / 2).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W) in [-1, 1] -> (B, T, C, H, W) in [0, 1]
        if c.flip > 0:
            flip = _uniform(x.shape[0], g, x.device) < c.flip
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)
        if c.colour_jitter > 0:
            x = colour_jitter(x, c, g)
        if c.randaugment_layers > 0:
            x = randaugment(x, c.randaugment_layers, c.randaugment_magnitude, g)
        return (x * 2 - 1).permute(0, 2, 1, 3, 4)  # (B, T, C, H, W) -> (B, C, T, H, W) in [-1, 1]


def build_augmentation(name: str = "kinetics", magnitude: float | None = None, layers: int = 2,
                       seed: int = 0) -> VideoAugment:
    """The :class:`VideoAugment` of a preset; ``magnitude`` / ``layers`` set RandAugment's."""
    if name not in PRESETS:
        raise ConfigError(f"unknown augmentation {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    if config.randaugment_layers and magnitude is not None:
        config = replace(config, randaugment_layers=layers, randaugment_magnitude=magnitude)
    return VideoAugment(config, seed=seed)


# -- labels -------------------------------------------------------------------------------------
def soft_targets(labels: torch.Tensor, num_classes: int | list[int] | tuple[int, ...],
                 smoothing: float = 0.0, device: torch.device | str | None = None
                 ) -> list[torch.Tensor]:
    """Label smoothing (paper eq. 11): ``(1 - e) * one_hot + e / K`` for each head.

    labels: (B,) or (B, heads) int64 -> a list of (B, K_head) float targets, one per head.
    """
    labels = torch.as_tensor(labels).to(device) if device is not None else torch.as_tensor(labels)
    if labels.dim() == 1:
        labels = labels[:, None]
    sizes = [num_classes] if isinstance(num_classes, int) else list(num_classes)
    if labels.shape[1] != len(sizes):
        raise ValueError(f"labels have {labels.shape[1]} head(s) but num_classes has {len(sizes)}")
    return [F.one_hot(labels[:, h], k).float() * (1 - smoothing) + smoothing / k
            for h, k in enumerate(sizes)]


def mixup(video: torch.Tensor, targets: list[torch.Tensor], alpha: float,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mixup (paper eq. 12) of each clip with the clip at the mirrored batch position.

    One ``lam ~ Beta(alpha, alpha)`` per batch, as the reference: ``x = lam x + (1 - lam) x_flip``
    and the same mixture of every head's soft targets. Returns (video, targets).
    """
    if alpha <= 0:
        return video, targets
    lam = beta_sample(alpha, generator)
    mixed = video * lam + video.flip(0) * (1 - lam)
    return mixed, [t * lam + t.flip(0) * (1 - lam) for t in targets]


def beta_sample(alpha: float, generator: torch.Generator | None = None) -> float:
    """One draw of Beta(alpha, alpha), reproducible from ``generator`` (torch's Beta sampler takes
    none, so a forked global RNG is seeded from it)."""
    seed = None
    if generator is not None:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return float(torch.distributions.Beta(alpha, alpha).sample())
