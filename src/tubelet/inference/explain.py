"""Where a ViViT looked: attention rollout maps of clips, rendered over their frames.

Attention rollout (Abnar & Zuidema, 2020): each layer's attention, averaged over heads, plus the
identity for the residual connection and rows renormalised, is a token-to-token operator; their
product through the layers says how much of every output token comes from every input token.
The map of a clip is the row of the token the classifier reads (CLS), or the mean of all rows
when the model pools by averaging, over the t*h*w input tokens. Each variant is rolled out
through its own structure (paper 3.3):

- Model 1: one operator per block over all tokens.
- Model 2: a rollout of the spatial encoder per frame, weighted by the temporal encoder's
  rollout over frames (the average-pool baseline weighs frames equally).
- Model 3: per block, the spatial operator (within each frame) then the temporal one (within
  each spatial location), each with its residual, multiplied into one operator.
- Model 4: per layer, the mean over heads of the time heads' and the space heads' attention,
  each placed on the N x N token grid, plus the residual.

The token map is then brought to the clip's frames and pixels (each tubelet repeated over its
frames, bilinear in space) and normalised to sum 1 per clip. The weights come from
:func:`tubelet.models.attention.capture_attention`; normal runs keep the fused kernels.

    >>> from tubelet.inference.explain import attention_map
    >>> maps = attention_map(model, clip)  # (B, 3, T, H, W) model input -> (B, T, H, W)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ClipConfig
from ..data.synth import write_mp4
from ..models.attention import capture_attention
from ..models.config import ViViTConfig
from ..models.tokenisers import uniform_frame_indices
from ..train.evaluate import model_input
from .pipeline import Video, load_views, views_of_frames


# ---------------------------------------------------------------------------- rollout (pure)
def with_residual(attention: Tensor) -> Tensor:
    """(..., N, N) attention, rows summing to 1 -> (A + I) with rows renormalised: the residual
    connection carries each token on alongside what it attends to."""
    a = attention + torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
    return a / a.sum(dim=-1, keepdim=True)


def layer_operator(weights: Tensor) -> Tensor:
    """(B, heads, N, N) attention weights of one layer -> (B, N, N): the mean over heads, with
    the residual (:func:`with_residual`)."""
    return with_residual(weights.mean(dim=-3))


def rollout(operators: Sequence[Tensor]) -> Tensor:
    """(B, N, N) operators of the layers, first to last -> their product ``O_L @ ... @ O_1``:
    row i says how much of output token i comes from each input token."""
    out = operators[0]
    for op in operators[1:]:
        out = op @ out
    return out


def read_out(rolled: Tensor, cls: bool) -> Tensor:
    """(B, P + N, P + N) rollout -> (B, N) relevance of the N input tokens, summing to 1: the row
    of the CLS token (P = 1) without its own column, or the mean over all rows (P = 0, the
    model pools by the mean)."""
    relevance = rolled[:, 0, 1:] if cls else rolled.mean(dim=1)
    return relevance / relevance.sum(dim=-1, keepdim=True)


def space_to_tokens(space: Tensor, T: int) -> Tensor:
    """(B*T, S, S) per-frame operators -> (B, T*S, T*S) on the time-major token grid (frame t
    attends within frame t): (t, s) <- (t, s') is ``space[b*T + t, s, s']``."""
    S = space.shape[-1]
    eye = torch.eye(T, dtype=space.dtype, device=space.device)
    dense = torch.einsum("tu,btsr->btsur", eye, space.unflatten(0, (-1, T)))  # (B, T, S, T, S)
    return dense.reshape(-1, T * S, T * S)


def time_to_tokens(time: Tensor, S: int) -> Tensor:
    """(B*S, T, T) per-location operators -> (B, T*S, T*S) on the time-major token grid
    (location s attends over time at s): (t, s) <- (t', s) is ``time[b*S + s, t, t']``."""
    T = time.shape[-1]
    eye = torch.eye(S, dtype=time.dtype, device=time.device)
    dense = torch.einsum("sr,bstu->btsur", eye, time.unflatten(0, (-1, S)))  # (B, T, S, T, S)
    return dense.reshape(-1, T * S, T * S)


def factorised_self_attention_operator(space: Tensor, time: Tensor, T: int, order: str = "space_time") -> Tensor:
    """Model 3's block as one (B, N, N) operator: space (B*T, heads, S, S) and time
    (B*S, heads, T, T) weights, each averaged over heads with its residual, applied in the
    block's ``order`` (space_time: time after space, ``O = T~ @ S~``)."""
    S = space.shape[-1]
    s = space_to_tokens(with_residual(space.mean(dim=1)), T)
    t = time_to_tokens(with_residual(time.mean(dim=1)), S)
    return t @ s if order == "space_time" else s @ t


def factorised_dot_product_operator(weights: dict[str, Tensor], T: int) -> Tensor:
    """Model 4's layer as one (B, N, N) operator: the mean over all heads of the attention, the
    time half (B*S, H/2, T, T) and the space half (B*T, H/2, S, S) each zero outside its
    neighbourhood, with the residual."""
    space, time = weights["space"], weights["time"]
    S = space.shape[-1]
    mean = (time_to_tokens(time.mean(dim=1), S) + space_to_tokens(space.mean(dim=1), T)) / 2
    return with_residual(mean)


# ---------------------------------------------------------------------------- maps of a model
def token_relevance(model: nn.Module, weights: dict) -> Tensor:
    """The captured weights of one forward pass of a ViViT -> (B, t, h, w) token relevance,
    summing to 1 per clip (see the module's description of each variant)."""
    cfg: ViViTConfig = model.config
    t, h, w = cfg.grid
    cls = cfg.classifier == "token"
    kind = cfg.kind
    if kind in ("factorised_encoder", "average_pool"):
        frames = rollout([layer_operator(weights[b.attn][0]) for b in model.spatial.blocks])
        spatial = read_out(frames, cls).unflatten(0, (-1, t))  # (B*t, h*w) -> (B, t, h*w)
        if model.temporal is None:
            over_time = spatial.new_full(spatial.shape[:2], 1 / t)
        else:
            over_time = read_out(rollout([layer_operator(weights[b.attn][0]) for b in model.temporal.blocks]), cls)
        return (over_time[:, :, None] * spatial).unflatten(2, (h, w))
    blocks = model.encoder.blocks
    if kind == "spatiotemporal":
        ops = [layer_operator(weights[b.attn][0]) for b in blocks]
    elif kind == "factorised_self_attention":
        ops = [factorised_self_attention_operator(weights[b.attn_space][0], weights[b.attn_time][0], t, b.order)
               for b in blocks]
    else:  # factorised_dot_product
        ops = [factorised_dot_product_operator(weights[b.attn][0], t) for b in blocks]
    return read_out(rollout(ops), cls).unflatten(1, (t, h, w))


def token_frames(cfg: ViViTConfig) -> list[int]:
    """The token frame each of the clip's ``num_frames`` frames belongs to: its tubelet, or with
    uniform frame sampling the nearest sampled frame."""
    if cfg.tokeniser == "tubelet":
        return [f // cfg.tubelet_size for f in range(cfg.num_frames)]
    sampled = np.array(uniform_frame_indices(cfg.num_frames, cfg.frames_in))
    return [int(np.abs(sampled - f).argmin()) for f in range(cfg.num_frames)]


def to_pixels(tokens: Tensor, cfg: ViViTConfig) -> Tensor:
    """(B, t, h, w) token map -> (B, T, H, W) over the clip's frames and pixels: repeated over the
    frames of each token, bilinear in space, normalised to sum 1 per clip."""
    frames = tokens[:, token_frames(cfg)]  # (B, t, h, w) -> (B, T, h, w)
    B, T = frames.shape[:2]
    pixels = F.interpolate(frames.flatten(0, 1)[:, None], size=cfg.image_size, mode="bilinear",
                           align_corners=False)[:, 0].unflatten(0, (B, T))  # (B, T, H, W)
    return pixels / pixels.sum(dim=(1, 2, 3), keepdim=True)


@torch.no_grad()
def attention_map(model: nn.Module, clip: Tensor) -> Tensor:
    """Attention rollout of a ViViT on its input: (B, C, T, H, W) model input (as
    :func:`tubelet.train.evaluate.model_input` makes it) -> (B, T, H, W) float32, non-negative,
    each clip's map summing to 1."""
    was_training = model.training
    model.eval()
    try:
        with capture_attention(model) as weights:
            model(clip.float())
    finally:
        model.train(was_training)
    return to_pixels(token_relevance(model, weights).float(), model.config)


def explain_view(model: nn.Module, video: Video, clip: ClipConfig) -> tuple[np.ndarray, np.ndarray]:
    """The first view of ``video`` under ``clip`` (its middle clip, centre crop when views and
    crops are 1) and its map: (T, H, W, 3) uint8 frames, (T, H, W) float32 summing to 1."""
    view = load_views(video, clip)[:1]  # (1, T, H, W, 3)
    device = next(model.parameters()).device
    x = model_input(view.to(device), model.info.preprocessing_for(model.config))
    return view[0].numpy(), attention_map(model, x)[0].cpu().numpy()


# ---------------------------------------------------------------------------- scoring
def mask_view(masks: np.ndarray, clip: ClipConfig) -> np.ndarray:
    """(T, H, W) float masks in [0, 1] of a video's frames -> (F, h, w) of its first view, cut as
    :func:`views_of_frames` cuts the frames (the same frames, resize and crop; opacity kept to
    1/255)."""
    grey = np.repeat(np.round(np.clip(masks, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    return views_of_frames(grey, clip)[0, ..., 0].numpy().astype(np.float32) / 255


def mass_on(mask: np.ndarray, heat: np.ndarray) -> float:
    """Share of a map's mass on an object: sum(map * mask) / sum(map), mask the object's opacity
    per pixel (T, H, W). A uniform map scores the mean of the mask, the share of pixels covered."""
    heat = np.asarray(heat, dtype=np.float64)
    return float((heat * mask).sum() / heat.sum())


def object_share(model: nn.Module, frames: np.ndarray, masks: np.ndarray, clip: ClipConfig) -> tuple[float, float]:
    """For a rendered scene (``tubelet.data.synth.render_scene``): the share of the map of its
    first view on the object, and the share a uniform map puts there (the pixels it covers)."""
    _, heat = explain_view(model, frames, clip)
    mask = mask_view(masks, clip)
    return mass_on(mask, heat), float(mask.mean())


# ---------------------------------------------------------------------------- rendering
def jet(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (..., 3) uint8 colours of the jet map (blue, cyan, yellow, red)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * x - np.array([3.0, 2.0, 1.0], dtype=np.float32)), 0, 1)
    return np.round(255 * rgb).astype(np.uint8)


def overlay(frames: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(T, H, W, 3) uint8 frames and their (T, H, W) map -> (T, H, W, 3) uint8, the map in jet
    colours (scaled by its maximum over the clip) blended over the frames with weight ``alpha``."""
    heat = np.asarray(heat, dtype=np.float32)
    colours = jet(heat / max(float(heat.max()), 1e-12)).astype(np.float32)
    return np.round((1 - alpha) * frames.astype(np.float32) + alpha * colours).astype(np.uint8)


def _enlarge(images: np.ndarray, frame: tuple[int, int], min_side: int = 128) -> np.ndarray:
    """(..., H, W, 3) images of frames of size ``frame`` -> each pixel repeated by the smallest
    whole factor that makes a frame's short side at least ``min_side``, then padded to even sides
    (H.264 in yuv420p needs them)."""
    k = max(1, -(-min_side // min(frame)))
    big = images.repeat(k, axis=-3).repeat(k, axis=-2)
    pad = [(0, 0)] * (big.ndim - 3) + [(0, big.shape[-3] % 2), (0, big.shape[-2] % 2), (0, 0)]
    return np.pad(big, pad, mode="edge")


def strip(frames: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) frames and (T, H, W) map -> one (2H, T*W, 3) uint8 image: the frames in a row,
    the map over them in a row below."""
    rows = [frames, overlay(frames, heat)]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def save_strip(png_path: str | Path, frames: np.ndarray, heat: np.ndarray) -> Path:
    """Write :func:`strip` as a PNG (enlarged so a frame is at least 128 pixels)."""
    image = _enlarge(strip(frames, heat), frames.shape[1:3])
    path = Path(png_path)
    with av.open(str(path), mode="w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def save_video(mp4_path: str | Path, frames: np.ndarray, heat: np.ndarray, fps: int = 4) -> Path:
    """Write the frames with the map over them as an H.264 MP4 (enlarged as :func:`save_strip`)."""
    path = Path(mp4_path)
    write_mp4(path, _enlarge(overlay(frames, heat), frames.shape[1:3]), fps)
    return path


__all__ = ["attention_map", "explain_view", "factorised_dot_product_operator", "factorised_self_attention_operator",
           "layer_operator", "mask_view", "mass_on", "object_share", "overlay", "read_out", "rollout",
           "save_strip", "save_video", "space_to_tokens", "strip", "time_to_tokens", "token_relevance",
           "with_residual"]
