"""What the model thread runs: a classifier (the pipeline) or a captioner, behind one interface.

Each has ``clip`` (what a video is decoded into), ``explains`` (whether it gives attention maps),
``describe(name)`` (what ``GET /v1/model`` answers) and ``run(jobs)`` (one answer, or an
exception to answer with, per job). A classifier answers ``{"top": ...}`` as ``tubelet.pipeline``
does; a captioner ``{"caption": ...}`` as ``tubelet caption`` does (greedy, the centre clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data import ClipConfig
from ..devices import resolve_device
from ..inference.pipeline import Pipeline, as_pipeline_output, head_names_of
from .encoding import encode_explanation


@dataclass
class Job:
    """What the model thread is given: a request's decoded views, or its file to explain."""

    views: torch.Tensor | None = None  # (views * crops, F, H, W, 3) uint8
    explain: Path | None = None


def _preprocessing(pre, stride: int, views: int, crops: int) -> dict[str, Any]:
    return {"frames": pre.num_frames, "stride": stride, "size": list(pre.image_size),
            "pixel_mean": list(pre.pixel_mean), "pixel_std": list(pre.pixel_std), "views": views, "crops": crops}


class Classifier:
    """The pipeline: the test views of every video scored in one call; explanations one by one."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe

    @property
    def clip(self) -> ClipConfig:
        return self.pipe.clip()

    @property
    def explains(self) -> bool:
        return hasattr(self.pipe, "explain")

    def describe(self, name: str) -> dict[str, Any]:
        pipe, cfg = self.pipe, self.pipe.model.config
        names = head_names_of(pipe.info, pipe.class_splits)
        heads = [{"name": head, "classes": list(pipe.info.names_of_head(h) or [str(i) for i in range(n)])}
                 for h, (head, n) in enumerate(zip(names, pipe.class_splits))]
        pre = _preprocessing(pipe.preprocessing, pipe.stride or pipe.preprocessing.frame_stride, pipe.views,
                             pipe.crops)
        return {"name": name, "architecture": cfg.name, "kind": cfg.kind, "heads": heads,
                "preprocessing": {**pre, "average": pipe.average}, "top_k": pipe.top_k,
                "explain": self.explains, "caption": False}

    def run(self, jobs: Sequence[Job]) -> list[Any]:
        out: list[Any] = [None] * len(jobs)
        scored = [i for i, j in enumerate(jobs) if j.views is not None]
        if scored:
            scores = self.pipe.score(torch.stack([jobs[i].views for i in scored]))  # (N, classes)
            for i, s in zip(scored, scores):
                out[i] = {"top": as_pipeline_output(self.pipe.top(s))}
        for i, job in enumerate(jobs):
            if job.explain is not None:
                try:
                    found = self.pipe.explain(job.explain)
                    out[i] = {"top": found["top"], "explain": encode_explanation(found["frames"], found["map"])}
                except Exception as e:  # noqa: BLE001 - this request's answer; the batch goes on
                    out[i] = e
        return out


class Captions:
    """A captioner (``tubelet train --task caption``): the centre clip of every video, captioned
    together by the caption pipeline, greedy, as ``tubelet caption`` does."""

    explains = False

    def __init__(self, model: torch.nn.Module):
        from ..captions.pipeline import CaptionPipeline
        self.pipe = CaptionPipeline(model, device=next(model.parameters()).device)
        self.model = self.pipe.model
        self.clip = self.pipe.clip

    def describe(self, name: str) -> dict[str, Any]:
        cfg = self.model.encoder.config
        pre = self.model.encoder.info.preprocessing_for(cfg)  # what inference_clip reads
        return {"name": name, "architecture": cfg.name, "kind": cfg.kind, "heads": [],
                "preprocessing": _preprocessing(pre, self.clip.stride, 1, 1), "top_k": None,
                "explain": False, "caption": True}

    def run(self, jobs: Sequence[Job]) -> list[Any]:
        return [{"caption": text} for text in self.pipe.caption_views([job.views for job in jobs])]


def load_runner(path: str | Path, *, device: str | None, top_k: int, batch: int) -> Classifier | Captions:
    """The model folder ``path`` ready to serve: a captioner as :class:`Captions`, any classifier
    as :class:`Classifier` (whose forward passes take ``batch`` videos' test views at once)."""
    from ..checkpoint import load_model
    from ..models.captioner import Captioner

    device = resolve_device(device)
    model = load_model(path, map_location=device)
    if isinstance(model, Captioner):
        return Captions(model)
    pipe = Pipeline(model, device=device, top_k=top_k)
    pipe.batch_size = batch * pipe.views * pipe.crops  # a batch of requests in one forward pass
    return Classifier(pipe)
