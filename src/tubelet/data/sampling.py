"""Which frames and which pixels make a clip: pure index math, no I/O.

The paper's protocol (section 4.1): a clip is ``F`` frames taken every ``s`` frames (32 frames at
stride 2 by default), so it spans ``(F - 1) * s + 1`` frames of the video.

* Training: one clip at a uniformly random start (:func:`training_clip`).
* Evaluation: ``V`` clips ("views", 4 in the paper) at evenly spaced starts
  (:func:`evaluation_clips`), each resized to cover the crop and cut into 3 spatial crops
  (:func:`crop_boxes`): left / centre / right for landscape video, top / middle / bottom for
  portrait video. Crops may be non-square, ``(height, width)``.

A video shorter than one clip's span is padded by looping: frame indices wrap around modulo the
video's length, so a 10-frame video sampled at 16 frames, stride 1, reads frames 0..9 then 0..5.
Looping keeps the motion's direction (unlike reflecting back and forth, which would reverse it).
"""

from __future__ import annotations

import math

import numpy as np


def clip_span(num_frames: int, stride: int) -> int:
    """Frames of the video that one clip of ``num_frames`` at ``stride`` covers."""
    return (num_frames - 1) * stride + 1


def clip_indices(start: int, num_frames: int, stride: int, first: int, stop: int) -> np.ndarray:
    """(F,) frame indices of the clip starting ``start`` frames into the range ``[first, stop)``.

    Indices past the end of the range wrap around to its beginning (padding by looping).
    """
    length = stop - first
    if length <= 0:
        raise ValueError(f"empty frame range [{first}, {stop})")
    return first + (start + np.arange(num_frames) * stride) % length


def training_clip(num_frames: int, stride: int, first: int, stop: int,
                  rng: np.random.Generator) -> np.ndarray:
    """(F,) frame indices of one clip at a uniformly random position within ``[first, stop)``."""
    room = (stop - first) - clip_span(num_frames, stride)
    start = int(rng.integers(0, room + 1)) if room > 0 else 0
    return clip_indices(start, num_frames, stride, first, stop)


def evaluation_clips(num_frames: int, stride: int, first: int, stop: int, views: int) -> np.ndarray:
    """(V, F) frame indices of ``views`` clips at evenly spaced starts covering ``[first, stop)``.

    The first view starts at the first frame and the last ends at the last frame; a video shorter
    than one clip gives ``views`` copies of the looped clip.
    """
    room = max((stop - first) - clip_span(num_frames, stride), 0)
    starts = np.round(np.linspace(0, room, views)).astype(np.int64) if views > 1 else \
        np.array([room // 2], dtype=np.int64)
    return np.stack([clip_indices(int(s), num_frames, stride, first, stop) for s in starts])


Size = tuple[int, int]  # (height, width) of a crop


def crop_size(size: int | Size) -> Size:
    """``size`` as (height, width): an int is a square crop."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def cover_shape(height: int, width: int, crop: int | Size) -> Size:
    """(height, width) of the frame resized, keeping its aspect, to the smallest size that covers
    ``crop``: for a square crop the short side becomes the crop's side."""
    ch, cw = crop_size(crop)
    scale = max(ch / height, cw / width)
    return max(ch, round(height * scale)), max(cw, round(width * scale))


def resized_shape(height: int, width: int, short_side: int) -> Size:
    """(height, width) after resizing so the short side is ``short_side``, keeping the aspect."""
    return cover_shape(height, width, short_side)


def crop_boxes(height: int, width: int, size: int | Size, crops: int = 3) -> list[tuple[int, int, int, int]]:
    """``crops`` boxes ``(top, left, h, w)`` of the crop size, spread along the frame's long side.

    With 3 crops: left / centre / right when the frame has room to spare across, top / middle /
    bottom when it has room down (portrait frames, or a crop wider than the frame's aspect);
    with 1 crop: the centre. The frame must already cover the crop.
    """
    ch, cw = crop_size(size)
    if height < ch or width < cw:
        raise ValueError(f"a {height}x{width} frame is smaller than a {ch}x{cw} crop")
    if crops == 1:
        return [((height - ch) // 2, (width - cw) // 2, ch, cw)]
    if width - cw >= height - ch:  # room across: left / centre / right
        top = (height - ch) // 2
        return [(top, int(left), ch, cw)
                for left in np.round(np.linspace(0, width - cw, crops)).astype(int)]
    left = (width - cw) // 2
    return [(int(top), left, ch, cw) for top in np.round(np.linspace(0, height - ch, crops)).astype(int)]


def train_scale(height: int, width: int, size: int | Size, short_side: int) -> float:
    """Scale of the reference's first resize before scale jitter: the frame covers the crop
    enlarged by ``short_side / min(crop)`` (for a square 224 crop, the short side becomes 256)."""
    ch, cw = crop_size(size)
    margin = short_side / min(ch, cw)
    return max(ch * margin / height, cw * margin / width)


def scale_jitter_box(height: int, width: int, size: int | Size, scale: tuple[float, float],
                     rng: np.random.Generator, short_side: int | None = None
                     ) -> tuple[int, int, int, int]:
    """A random box ``(top, left, h, w)`` for the paper's scale jitter plus random crop.

    The reference resizes the video so its short side is ``short_side`` (default: the crop's
    short side), scales it by a factor drawn uniformly from ``scale`` (0.9-1.33 in the paper), and
    crops ``size`` at a random position. In the frame's own pixels that is a box of the crop's
    shape divided by ``factor * train_scale``, shrunk (keeping its shape) to fit the frame, which
    is then resized to ``size``: one resize instead of two.
    """
    ch, cw = crop_size(size)
    short_side = short_side or min(ch, cw)
    factor = float(rng.uniform(scale[0], scale[1]))
    s = factor * train_scale(height, width, (ch, cw), short_side)
    bh, bw = ch / s, cw / s
    fit = min(1.0, height / bh, width / bw)
    bh, bw = max(1, min(int(round(bh * fit)), height)), max(1, min(int(round(bw * fit)), width))
    top = int(rng.integers(0, height - bh + 1))
    left = int(rng.integers(0, width - bw + 1))
    return top, left, bh, bw


def item_seed(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one dataset item: a function of (seed, epoch, index) only, so a
    resumed run, any number of workers and any rank see exactly the same clips."""
    return np.random.default_rng([seed, epoch, index])


def shard(indices: np.ndarray, rank: int, world_size: int, pad: bool) -> np.ndarray:
    """The part of ``indices`` that rank ``rank`` of ``world_size`` handles.

    With ``pad`` (training) the list is first padded by repeating its beginning so every rank gets
    the same number; without (evaluation) ranks get ``len // world_size`` or one more, and every
    index appears on exactly one rank.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    if pad and len(indices) % world_size:
        total = math.ceil(len(indices) / world_size) * world_size
        indices = np.resize(indices, total)  # repeats from the beginning
    return indices[rank::world_size]
