"""Long videos: classify window by window, decoding only each window's frames.

A video of ``duration`` seconds is cut into windows of ``window`` seconds every ``hop`` seconds
(:func:`window_spans`); each window is classified as a short video of its own (the pipeline's
views x crops inside the window) and the whole video's scores are the mean of the windows'.
Frames are decoded window by window (the file is indexed once, from its packets, then each
window seeks to the keyframe before it and decodes only the frames its views need), so memory is
bounded by one window's clips, never by the video: a 10-minute video is never decoded whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..data import evaluation_views, index_video
from ..errors import ConfigError, DataError
from .pipeline import as_pipeline_output, views_of_frames

if TYPE_CHECKING:
    from .pipeline import Pipeline


def window_spans(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """(start, end) seconds of the windows covering ``[0, duration]``.

    Windows start every ``hop`` seconds until one reaches the end; the last is cut at
    ``duration``. A video shorter than one window is one window.
    """
    if not (window > 0 and hop > 0 and math.isfinite(window) and math.isfinite(hop)):
        raise ConfigError(f"window={window} and hop={hop} must be positive seconds, e.g. --window 2 --hop 1")
    count = 1 if duration <= window else math.ceil((duration - window) / hop - 1e-9) + 1
    return [(round(i * hop, 6), round(min(i * hop + window, duration), 6)) for i in range(count)]


@dataclass
class WindowResult:
    """Scores of every window of one video and of the whole video (the windows' mean)."""

    video: str
    spans: list[tuple[float, float]] = field(default_factory=list)
    scores: list[Tensor] = field(default_factory=list)  # (classes,) per window
    top_k: int = 5
    pipe: Any = None

    @property
    def video_scores(self) -> Tensor:
        return torch.stack(self.scores).mean(0)

    def entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(per window ``{"start", "end", "heads"}``, the whole video's heads) as ``tubelet
        predict`` prints them."""
        windows = [{"start": s, "end": e, "heads": self.pipe.top(sc, self.top_k)}
                   for (s, e), sc in zip(self.spans, self.scores)]
        return windows, self.pipe.top(self.video_scores, self.top_k)

    def as_output(self) -> dict[str, Any]:
        """The pipeline's answer: ``{"windows": [{"start", "end", "labels"}], "labels"}``."""
        windows, whole = self.entries()
        return {"windows": [{"start": w["start"], "end": w["end"], "labels": as_pipeline_output(w["heads"])}
                            for w in windows], "labels": as_pipeline_output(whole)}


def classify_windows(pipe: "Pipeline", video: str | Path | np.ndarray | Tensor, window: float,
                     hop: float | None = None, *, fps: float | None = None, top_k: int | None = None,
                     views: int | None = None, crops: int | None = None,
                     average: str | None = None) -> WindowResult:
    """Classify ``video`` window by window with ``pipe`` (see the module's docstring).

    A path is indexed once and each window decoded on its own; decoded frames (T, H, W, 3)
    need ``fps`` to know their times. Raises :class:`DataError` for a file that cannot be read.
    """
    hop = hop if hop is not None else window
    clip = pipe.clip(views, crops)
    result = WindowResult(video=str(video) if isinstance(video, (str, Path)) else f"array{tuple(video.shape)}",
                          top_k=top_k or pipe.top_k, pipe=pipe)
    if isinstance(video, (str, Path)):
        index = index_video(video)
        duration = float(index.times[-1]) + (1 / index.fps if index.fps > 0 else 0.0)

        def views_between(start: float, end: float) -> Tensor:
            return evaluation_views(video, clip, index=index, start=start, end=end)
    else:
        if not fps or fps <= 0:
            raise DataError("classifying decoded frames by windows needs their frame rate: pass fps=...")
        frames = video
        duration = len(frames) / fps
        times = np.arange(len(frames)) / fps

        def views_between(start: float, end: float) -> Tensor:
            first = min(int(np.searchsorted(times, start - 1e-6)), len(frames) - 1)
            stop = max(int(np.searchsorted(times, end - 1e-6)), first + 1)
            return views_of_frames(frames[first:stop], clip)
    for start, end in window_spans(duration, window, hop):
        result.spans.append((start, end))
        result.scores.append(pipe.score(views_between(start, end)[None], average)[0])
    return result


__all__ = ["WindowResult", "classify_windows", "window_spans"]
