"""Every augmentation treats the frames of a clip alike and the clips of a batch differently."""

from __future__ import annotations

import pytest
import torch

from tubelet.data.augment import (PRESETS, RANDAUGMENT_OPS, AugmentConfig, VideoAugment,
                                  build_augmentation, colour_jitter, mixup, normalise, randaugment,
                                  soft_targets)


def _static_clips(b=6, t=4, h=24, w=24, seed=0) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1]: each clip is one random image repeated over T frames."""
    image = torch.rand(b, 3, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return image.expand(b, 3, t, h, w).contiguous()


def _frames_identical(x: torch.Tensor) -> bool:
    return bool((x - x[:, :, :1]).abs().max() < 1e-5)


def test_normalise_is_the_reference_scaling():
    video = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 1, 1, 1, 3)  # (B,T,H,W,C)
    out = normalise(video)
    assert out.shape == (1, 3, 1, 1, 1) and out.dtype == torch.float32
    assert torch.allclose(out.flatten(), torch.tensor([-1.0, 1.0, 51 * 2 / 255 - 1]))
    assert torch.equal(normalise(video.float()), out)


@pytest.mark.parametrize("name", [n for n in RANDAUGMENT_OPS])
def test_each_randaugment_op_is_the_same_on_every_frame(name, monkeypatch):
    monkeypatch.setattr("tubelet.data.augment.RANDAUGMENT_OPS", {name: RANDAUGMENT_OPS[name]})
    x = (_static_clips(b=12) + 1) / 2
    x = x.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W) in [0, 1]
    # Magnitude 8: at 5 the enhance ops are the identity, at 15 or 20 Solarize is (as in TF)
    out = randaugment(x, layers=2, magnitude=8, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out - out[:, :1]).abs().max() < 1e-5, f"{name} differs between frames"
    assert not torch.equal(out, x), f"{name} changed nothing"


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_presets_same_on_frames_different_across_clips(preset):
    augment = VideoAugment(preset, seed=1)
    same_image = _static_clips(b=8)[:1].expand(8, -1, -1, -1, -1)  # 8 copies of one clip
    out = augment(same_image)
    assert out.shape == same_image.shape
    assert _frames_identical(out)
    distinct = {tuple(clip[:, 0].flatten()[:64].mul(1000).round().tolist()) for clip in out}
    assert len(distinct) >= 5, f"{preset}: clips of a batch should get different parameters"


def test_generator_makes_it_reproducible_and_eval_mode_is_identity():
    x = _static_clips()
    augment = build_augmentation("randaugment", magnitude=20)
    a = augment(x, generator=torch.Generator().manual_seed(7))
    b = augment(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(x, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(augment.eval()(x), x)
    assert augment.config.randaugment_magnitude == 20
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augmentation("autoaugment")


def test_colour_jitter_and_flip_respect_frames():
    x = ((_static_clips(b=16) + 1) / 2).permute(0, 2, 1, 3, 4)
    out = colour_jitter(x, AugmentConfig(colour_jitter=1.0), torch.Generator().manual_seed(0))
    assert (out - out[:, :1]).abs().max() < 1e-5
    flipped = VideoAugment(AugmentConfig(flip=1.0))(_static_clips())
    assert torch.equal(flipped, _static_clips().flip(-1))


def test_soft_targets_and_mixup_two_heads():
    labels = torch.tensor([[0, 2], [1, 0], [2, 1]])  # (B, heads): verb, noun
    targets = soft_targets(labels, [3, 4], smoothing=0.2)
    assert [t.shape for t in targets] == [(3, 3), (3, 4)]
    assert torch.allclose(targets[1][0], torch.tensor([0.05, 0.05, 0.85, 0.05]))
    assert all(torch.allclose(t.sum(1), torch.ones(3)) for t in targets)
    x = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 3, 2, 4, 4)
    mixed, mixed_targets = mixup(x, targets, alpha=0.3, generator=torch.Generator().manual_seed(0))
    lam = 1 - mixed[0, 0, 0, 0, 0].item() / 2  # clip 0 (value 0) mixed with clip 2 (value 2)
    assert 0 <= lam <= 1
    assert torch.allclose(mixed_targets[0][0], lam * targets[0][0] + (1 - lam) * targets[0][2])
    assert torch.allclose(mixed_targets[1][0], lam * targets[1][0] + (1 - lam) * targets[1][2])
    assert mixup(x, targets, alpha=0.0)[0] is x
