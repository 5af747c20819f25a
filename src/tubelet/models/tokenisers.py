"""Video tokenisers of ViViT (paper 3.2): tubelet embedding and uniform frame sampling.

Both map a clip (B, C, T, H, W) to tokens (B, t, h*w, D), flattened time-major (t, h, w)
as in the reference.
"""

from __future__ import annotations

from fractions import Fraction

import torch.nn.functional as F
from torch import Tensor, nn

from .config import ViViTConfig


def uniform_frame_indices(num_frames: int, n: int) -> list[int]:
    """``n`` evenly spaced frames of ``num_frames``, as the reference samples them.

    The reference takes ``round(i * T / (n + 1))`` for i = 1..n (round half to even, at most
    T - 1): the interior points of n + 1 equal steps, so neither end frame is favoured. With
    n >= T it keeps every frame.
    """
    if n >= num_frames:
        return list(range(num_frames))
    return [min(round(Fraction(i * num_frames, n + 1)), num_frames - 1) for i in range(1, n + 1)]


class TubeletEmbedding(nn.Module):
    """Non-overlapping t x p x p tubes, linearly projected.

    The parameters are those of a 3D convolution with stride = kernel (``proj``, (D, C, t, p, p),
    the layout of checkpoints), but the forward is the same map written as one matrix product:
    each tube is gathered into a row of C*t*p*p values (one copy of the clip) and multiplied
    by the flattened kernel. That is faster than the convolution on CPU (and in bf16 by a wide
    margin) and yields tokens already in (B, t, h*w, D) order, contiguous, where the
    convolution's (B, D, t, h, w) output would leave the whole residual stream transposed in
    memory for models without a CLS token.
    """

    def __init__(self, cfg: ViViTConfig) -> None:
        super().__init__()
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=k, stride=k)

    def forward(self, x: Tensor) -> Tensor:
        B, C, T, H, W = x.shape
        kt, p, _ = self.proj.kernel_size
        t, h, w = T // kt, H // p, W // p
        # (B, C, t*kt, h*p, w*p) -> (B, t, h, w, C, kt, p, p) -> (B, t, h*w, C*kt*p*p)
        tubes = x.reshape(B, C, t, kt, h, p, w, p).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, t, h * w, -1)
        return F.linear(tubes, self.proj.weight.flatten(1), self.proj.bias)  # -> (B, t, h*w, D)


class FrameSampling(nn.Module):
    """Uniform frame sampling: n evenly spaced frames, each embedded by a 2D patch convolution."""

    def __init__(self, cfg: ViViTConfig) -> None:
        super().__init__()
        self.num_frames = cfg.num_frames
        self.sampled = cfg.frames_in
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, kernel_size=p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        idx = uniform_frame_indices(x.shape[2], self.sampled)
        x = x[:, :, idx]  # (B, C, T, H, W) -> (B, C, n, H, W)
        B, C, n, H, W = x.shape
        p = self.proj.kernel_size[0]
        h, w = H // p, W // p
        # As TubeletEmbedding: the patch convolution as one matrix product, tokens contiguous.
        # (B, C, n, h*p, w*p) -> (B, n, h, w, C, p, p) -> (B, n, h*w, C*p*p)
        patches = x.reshape(B, C, n, h, p, w, p).permute(0, 2, 3, 5, 1, 4, 6).reshape(B, n, h * w, -1)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # -> (B, n, h*w, D)


def build_tokeniser(cfg: ViViTConfig) -> nn.Module:
    return TubeletEmbedding(cfg) if cfg.tokeniser == "tubelet" else FrameSampling(cfg)

