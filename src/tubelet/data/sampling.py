"""Which frames and which pixels make a clip: pure index math, no I/O.

The paper's protocol (section 4.1): a clip is ``F`` frames taken every ``s`` frames (32 frames at
stride 2 by default), so it spans ``(F - 1) * s + 1`` frames of the video.

* Training: one clip at a uniformly random start (:func:`training_clip`).
* Evaluation: ``V`` clips ("views", 4 in the paper) at evenly spaced starts
  (:func:`evaluation_clips`), each cut into 3 spatial crops (:func:`crop_boxes`): left / centre /
  right for landscape video, top / middle / bottom for portrait video.

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


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after resizing so the short side is ``short_side``, keeping the aspect."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def crop_boxes(height: int, width: int, size: int, crops: int = 3) -> list[tuple[int, int, int, int]]:
    """``crops`` square boxes ``(top, left, size, size)`` spread along the long side.

    With 3 crops: left / centre / right for landscape frames, top / middle / bottom for portrait
    frames; with 1 crop: the centre. The frame must already be at least ``size`` on each side.
    """
    if min(height, width) < size:
        raise ValueError(f"a {height}x{width} frame is smaller than a {size}x{size} crop")
    if crops == 1:
        return [((height - size) // 2, (width - size) // 2, size, size)]
    along = np.round(np.linspace(0, max(height, width) - size, crops)).astype(int).tolist()
    if width >= height:
        top = (height - size) // 2
        return [(top, left, size, size) for left in along]
    left = (width - size) // 2
    return [(top, left, size, size) for top in along]


def scale_jitter_box(height: int, width: int, size: int, scale: tuple[float, float],
                     rng: np.random.Generator, short_side: int | None = None
                     ) -> tuple[int, int, int, int]:
    """A random square box ``(top, left, h, w)`` for the paper's scale jitter plus random crop.

    The reference resizes the video so its short side is ``short_side`` (default ``size``),
    scales it by a factor drawn uniformly from ``scale`` (0.9-1.33 in the paper), and crops
    ``size`` x ``size`` at a random position. In the frame's own pixels that is a box of side
    ``size / (factor * short_side / min(height, width))``, clipped to the frame, which is then
    resized to ``size``: one resize instead of two.
    """
    short_side = short_side or size
    factor = float(rng.uniform(scale[0], scale[1]))
    side = size * min(height, width) / (factor * short_side)
    side = max(1, min(int(round(side)), height, width))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return top, left, side, side


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
