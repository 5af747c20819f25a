"""The one-call pipeline: a model (folder or object) in, labels and scores of videos out.

    >>> classify = tubelet.pipeline("runs/default")
    >>> classify("clip.mp4")                       # [{"label": "moving left", "score": 0.97}, ...]

Inputs are a video path, a decoded ``(T, H, W, 3)`` uint8 array, or a list of them. Every video
gives the paper's test views (section 4.1): ``views`` clips of the checkpoint's frames at its
stride, evenly spaced, each cut into ``crops`` spatial crops; the model scores every view and the
raw logits (or probabilities, ``average="softmax"``) are averaged. Clips of several videos are
batched into one forward pass, and videos are decoded in ``workers`` processes. ``tubelet
predict`` is this pipeline with a command line around it, so both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import load_model
from ..data import ClipConfig, evaluation_views
from ..data import sampling
from ..data.dataset import crop_views
from ..devices import resolve_device
from ..errors import ConfigError, DataError
from ..models.info import ModelInfo, Preprocessing
from ..train.evaluate import score_views
from ..train.metrics import average_views

if TYPE_CHECKING:
    from ..captions.pipeline import CaptionPipeline

Video = str | Path | np.ndarray | Tensor  # a file, or decoded (T, H, W, 3) uint8 frames


def inference_clip(model: nn.Module, *, stride: int | None = None, views: int = 4, crops: int = 3) -> ClipConfig:
    """The clip a loaded model is fed: its frames and size, the checkpoint's stride unless
    ``stride`` says otherwise, and ``views`` x ``crops`` test views."""
    pre = model.info.preprocessing_for(model.config)
    h, w = model.config.image_size
    return ClipConfig(num_frames=model.config.num_frames, stride=stride or pre.frame_stride,
                      size=h if h == w else (h, w), views=views, crops=crops)


def views_of_frames(frames: np.ndarray | Tensor, clip: ClipConfig) -> Tensor:
    """The test views of decoded frames, as :func:`tubelet.data.evaluation_views` cuts them from
    a file: (T, H, W, 3) uint8 -> (views * crops, F, height, width, 3) uint8, view-major.

    Frames larger than the crop are resized to cover it with torch's antialiased bilinear filter
    (a file is scaled by FFmpeg while decoding): equal to the file's views when the frames are
    already at that size.
    """
    frames = frames.numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise DataError(f"a decoded video must be a (T, H, W, 3) uint8 array with T >= 1, got "
                        f"{frames.dtype} {tuple(frames.shape)}: decode it with tubelet.data.read_frames or "
                        "pass the file's path")
    frames_at = sampling.evaluation_clips(clip.num_frames, clip.stride, 0, len(frames), clip.views)  # (V, F)
    return crop_views(frames[frames_at.reshape(-1)], clip)


def load_views(video: Video, clip: ClipConfig) -> Tensor:
    """(views * crops, F, H, W, 3) uint8 test views of a path (decoded) or of decoded frames."""
    if isinstance(video, (str, Path)):
        return evaluation_views(video, clip)
    return views_of_frames(video, clip)


def video_name(video: Video) -> str:
    return str(video) if isinstance(video, (str, Path)) else f"array{tuple(video.shape)}"


# ---------------------------------------------------------------------------- labels
def head_names_of(info: ModelInfo, splits: Sequence[int]) -> list[str | None]:
    """The name of every head: the recorded ones, else None for one head and head0, head1, ..."""
    if info.head_names:
        return list(info.head_names)
    return [None] if len(splits) == 1 else [f"head{i}" for i in range(len(splits))]


def top_labels(scores: Tensor, info: ModelInfo, splits: Sequence[int], k: int) -> list[dict[str, Any]]:
    """Video-level scores (sum(splits),) -> one entry per head, ``{"head", "top": [{"label",
    "index", "score"}, ...]}``, scores being softmax probabilities of that head.

    With two or more heads the last entry is ``"action"``: the k most probable combinations,
    scored by the product of the heads' probabilities (EPIC-KITCHENS' verb + noun).
    """
    names = head_names_of(info, splits)
    heads, probs_of = [], []
    for h, s in enumerate(scores.float().split(list(splits))):
        probs = s.softmax(-1)
        probs_of.append(probs)
        top = probs.topk(min(k, len(probs)))
        labels = info.names_of_head(h)
        heads.append({"head": names[h], "top": [
            {"label": labels[i] if labels else str(i), "index": int(i), "score": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]})
    if len(splits) > 1:
        joint = probs_of[0]
        for probs in probs_of[1:]:
            joint = (joint[:, None] * probs[None, :]).flatten()  # (C1*...*Ch-1, Ch)
        top = joint.topk(min(k, len(joint)))
        combos = []
        for p, flat in zip(top.values.tolist(), top.indices.tolist()):
            parts = []
            for h in reversed(range(len(splits))):
                flat, i = divmod(flat, splits[h])
                labels = info.names_of_head(h)
                parts.append(labels[i] if labels else str(i))
            combos.append({"label": " ".join(reversed(parts)), "index": None, "score": float(p)})
        heads.append({"head": "action", "top": combos})
    return heads


def as_pipeline_output(heads: list[dict[str, Any]]) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]]:
    """One head: its ``[{"label", "score"}, ...]``; several: ``{head name: [...], "action": [...]}``."""
    strip = [[{"label": t["label"], "score": t["score"]} for t in h["top"]] for h in heads]
    if len(heads) == 1:
        return strip[0]
    return {h["head"]: s for h, s in zip(heads, strip)}


# ---------------------------------------------------------------------------- decoding in workers
class _Views(torch.utils.data.Dataset):
    """Item i: (i, views or None, why it failed or None); decode errors are values, not raised,
    so that a worker process reports a bad file and goes on."""

    def __init__(self, videos: Sequence[Video], clip: ClipConfig):
        self.videos, self.clip = videos, clip

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str | None]:
        try:
            return i, load_views(self.videos[i], self.clip), None
        except (OSError, DataError) as e:
            return i, None, str(e)


def _one(item):
    return item


def decoded(videos: Sequence[Video], clip: ClipConfig, workers: int = 0) -> Iterator[tuple[int, Tensor | None, str | None]]:
    """(i, views, error) for every video, in order, decoded in ``workers`` processes (0: here)."""
    if workers == 0 or len(videos) < 2:
        yield from (_Views(videos, clip)[i] for i in range(len(videos)))
        return
    loader = torch.utils.data.DataLoader(_Views(videos, clip), batch_size=None, shuffle=False,
                                         num_workers=min(workers, len(videos)), collate_fn=_one,
                                         prefetch_factor=4)
    yield from loader


# ---------------------------------------------------------------------------- the pipeline
@dataclass
class Result:
    """What the pipeline found for one video: its name, and its video-level scores (logits, or
    probabilities when views are averaged as softmax) or why it could not be read."""

    video: str
    scores: Tensor | None = None
    error: str | None = None


class Pipeline:
    """Classify videos with a ViViT model; see :func:`pipeline`."""

    def __init__(self, model: str | Path | nn.Module, *, device: str | torch.device | None = None,
                 views: int = 4, crops: int = 3, average: str = "logits", stride: int | None = None,
                 top_k: int = 5, batch_size: int = 16, workers: int = 0, precision: str = "auto"):
        self.device = resolve_device(device)
        if isinstance(model, nn.Module):
            self.model = model.to(self.device).eval()
        else:
            self.model = load_model(model, map_location=self.device)
        if not isinstance(getattr(self.model, "info", None), ModelInfo):
            self.model.info = ModelInfo()
        if average not in ("logits", "softmax"):
            raise ConfigError(f"average={average!r}: choose logits or softmax")
        if precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision={precision!r}: choose auto (bf16 on GPU), fp32 or bf16")
        for name, value in (("views", views), ("crops", crops), ("top_k", top_k), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"{name}={value} must be at least 1")
        self.views, self.crops, self.average, self.stride = views, crops, average, stride
        self.top_k, self.batch_size, self.workers, self.precision = top_k, batch_size, workers, precision

    # -- what the model is --------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing_for(self.model.config)

    @property
    def class_splits(self) -> tuple[int, ...]:
        return self.model.config.class_splits

    def clip(self, views: int | None = None, crops: int | None = None) -> ClipConfig:
        return inference_clip(self.model, stride=self.stride, views=views or self.views, crops=crops or self.crops)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, views: Tensor, average: str | None = None) -> Tensor:
        """(N, V, F, H, W, 3) uint8 views of N videos -> (N, classes) video-level scores."""
        logits = score_views(self.model, views, self.device, self.precision, chunk=self.batch_size,
                             preprocessing=self.preprocessing)
        return average_views(logits, average or self.average).cpu()

    def results(self, videos: Iterable[Video], *, views: int | None = None, crops: int | None = None,
                average: str | None = None) -> Iterator[Result]:
        """A :class:`Result` per video, in order, as soon as its batch is scored; a video that
        cannot be read gives a Result with ``error`` (the others are all answered)."""
        videos = list(videos)
        clip = self.clip(views, crops)
        per_video = clip.views * clip.crops
        pending: list[tuple[int, Tensor]] = []

        def flush() -> Iterator[Result]:
            scores = self.score(torch.stack([v for _, v in pending]), average)
            for (i, _), s in zip(pending, scores):
                yield Result(video_name(videos[i]), scores=s)
            pending.clear()

        for i, views_i, error in decoded(videos, clip, self.workers):
            if error is not None:
                yield from flush() if pending else ()
                yield Result(video_name(videos[i]), error=error)
                continue
            pending.append((i, views_i))
            if len(pending) * per_video >= self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def top(self, scores: Tensor, top_k: int | None = None) -> list[dict[str, Any]]:
        """Per head ``{"head", "top": [{"label", "index", "score"}, ...]}`` (see :func:`top_labels`)."""
        return top_labels(scores, self.info, self.class_splits, top_k or self.top_k)

    def __call__(self, videos: Video | Sequence[Video], *, top_k: int | None = None, views: int | None = None,
                 crops: int | None = None, average: str | None = None, window: float | None = None,
                 hop: float | None = None, fps: float | None = None):
        """Labels of one video (a path or (T, H, W, 3) uint8 frames) or of a list of them.

        One video: ``[{"label", "score"}, ...]`` (top-k, probabilities); for several heads a dict
        of such lists per head plus ``"action"``. A list: one of those per video. A file that
        cannot be read raises :class:`DataError` naming it (``tubelet predict`` skips it instead).
        With ``window`` (seconds; ``hop`` defaults to it) a path is classified window by window:
        ``{"windows": [{"start", "end", "labels"}, ...], "labels": ...}`` (see
        :mod:`tubelet.inference.windows`); decoded frames need their ``fps`` for that.
        """
        single = isinstance(videos, (str, Path, np.ndarray, Tensor))
        items = [videos] if single else list(videos)
        if window is not None:
            from .windows import classify_windows
            out = [classify_windows(self, v, window, hop, fps=fps, top_k=top_k, views=views, crops=crops,
                                    average=average).as_output() for v in items]
            return out[0] if single else out
        out = []
        for r in self.results(items, views=views, crops=crops, average=average):
            if r.error is not None:
                raise DataError(r.error if r.video in r.error else f"{r.video}: {r.error}")
            out.append(as_pipeline_output(self.top(r.scores, top_k)))
        return out[0] if single else out

    def explain(self, video: Video, *, top_k: int | None = None) -> dict[str, Any]:
        """Labels of one video (a path or (T, H, W, 3) uint8 frames) and where the model looked.

        Returns ``{"top": ..., "frames": ..., "map": ...}``:

        - ``"top"``: what ``self(video, top_k=top_k)`` returns (all test views averaged);
        - ``"frames"``: (T, H, W, 3) uint8, the clip the map is of: the video's middle clip at
          the checkpoint's frames and stride, centre crop (the one view of ``views=1, crops=1``);
        - ``"map"``: (T, H, W) float32, non-negative, summing to 1: the attention rollout of that
          clip (:func:`tubelet.inference.explain.attention_map`), one value per pixel of ``frames``.

        :func:`tubelet.inference.explain.save_strip` and ``save_video`` draw it over the frames.
        """
        top = self(video, top_k=top_k)
        frames, heat = self.explained_view(video)
        return {"top": top, "frames": frames, "map": heat}

    def explained_view(self, video: Video) -> tuple[np.ndarray, np.ndarray]:
        """The ``"frames"`` and ``"map"`` of :meth:`explain`, without scoring the test views."""
        from .explain import explain_view
        frames, heat = explain_view(self.model, video, self.clip(views=1, crops=1))
        return frames, heat.astype(np.float32)


def pipeline(model: str | Path | nn.Module, **options: Any) -> "Pipeline | CaptionPipeline":
    """A callable that classifies videos with ``model``: a run folder, a checkpoint folder, a
    transformers export folder, or a model object.

    Defaults follow the checkpoint (frames, stride, size, pixels) and the paper's protocol:
    ``views=4`` temporal views x ``crops=3`` spatial crops, ``average="logits"``. Other options:
    ``top_k=5``, ``device`` (default cuda when available), ``precision`` (``auto``: bf16 on GPU),
    ``batch_size`` (clips per forward pass, over videos), ``workers`` (decoding processes),
    ``stride``.

    >>> classify = tubelet.pipeline("runs/default")
    >>> classify("clip.mp4")
    [{'label': 'moving left', 'score': 0.97}, ...]

    A captioner (``tubelet train --task caption``) gives a
    :class:`~tubelet.captions.pipeline.CaptionPipeline` instead: ``{"caption": ...}`` per video.
    """
    from ..captions.pipeline import CaptionPipeline, is_captioner
    if is_captioner(model):
        return CaptionPipeline(model, **options)
    return Pipeline(model, **options)


__all__ = ["Pipeline", "Result", "inference_clip", "load_views", "pipeline", "top_labels", "views_of_frames"]
