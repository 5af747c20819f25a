"""Inference for users: the one-call pipeline, long videos window by window, and export.

    >>> import tubelet
    >>> tubelet.pipeline("runs/default")("clip.mp4")
    [{'label': 'moving left', 'score': 0.97}, ...]
"""

from .pipeline import Pipeline, Result, inference_clip, pipeline, top_labels, views_of_frames
from .windows import WindowResult, classify_windows, window_spans

__all__ = ["Pipeline", "Result", "WindowResult", "classify_windows", "inference_clip", "pipeline",
           "top_labels", "views_of_frames", "window_spans"]
