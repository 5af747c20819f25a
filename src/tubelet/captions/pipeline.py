"""Captions of videos in one call: ``tubelet.pipeline(captioner)`` and `tubelet caption`.

    >>> caption = tubelet.pipeline("runs/caption")
    >>> caption("clip.mp4")                    # {"caption": "a bright digit moves to the left"}

Each video gives one clip, the centre one at the checkpoint's frames and stride, as in
validation; videos are decoded in worker processes and captioned in batches (rows of different
lengths stop at their own <eos>).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import resolve_device
from ..errors import ConfigError, DataError


def load_captioner(path: str | Path | nn.Module, device: str | torch.device = "cpu"):
    """A trained captioner (any folder :func:`tubelet.checkpoint.resolve_model_path` takes)."""
    from ..checkpoint import load_model
    from ..models.captioner import Captioner
    model = path.to(device).eval() if isinstance(path, nn.Module) else load_model(path, map_location=device)
    if not isinstance(model, Captioner):
        raise ConfigError(f"{path if not isinstance(path, nn.Module) else type(path).__name__} is a classifier, "
                          "not a captioner: train one with `tubelet train --task caption`, or classify with "
                          "`tubelet predict`")
    return model


def is_captioner(model: str | Path | nn.Module) -> bool:
    """Whether ``model`` (a model object, or a folder: only its config.json is read) captions."""
    from ..models.captioner import Captioner
    if isinstance(model, nn.Module):
        return isinstance(model, Captioner)
    from ..checkpoint import read_header, resolve_model_path
    folder, kind = resolve_model_path(model)
    return kind != "hf" and read_header(folder).get("task") == "caption"


class CaptionPipeline:
    """Caption videos with a captioner; see :func:`tubelet.pipeline`.

    ``sampling`` (:class:`tubelet.generate.Sampling`; default greedy) and ``seed`` as in
    :mod:`tubelet.generate`; with ``draft`` (a smaller captioner with the same vocabulary: a folder
    or a model; or ``"truncated:L"``, the model's own first L decoder blocks) the words come from
    exact speculative sampling, ``k`` drafts a step; ``beams`` > 1: beam search with
    ``length_penalty`` (see :meth:`Captioner.caption`).
    """

    def __init__(self, model: str | Path | nn.Module, *, device: str | torch.device | None = None,
                 draft: str | Path | nn.Module | None = None, k: int = 4, sampling=None, seed: int = 0,
                 max_words: int | None = None, batch_size: int = 16, workers: int = 0, beams: int = 1,
                 length_penalty: float = 1.0) -> None:
        self.device = resolve_device(device)
        self.model = load_captioner(model, self.device)
        self.draft = None
        if isinstance(draft, str) and draft.startswith("truncated:"):
            try:
                layers = int(draft.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"draft {draft!r}: write truncated:L with L decoder blocks, e.g. truncated:1") from None
            self.draft = self.model.truncated(layers)
        elif draft is not None:
            self.draft = load_captioner(draft, self.device)
        if self.draft is not None and self.draft.vocab != self.model.vocab:
            raise ConfigError("the draft captioner's vocabulary differs from the model's: train the draft on "
                              "the same captions")
        for name, value in (("k", k), ("batch_size", batch_size), ("beams", beams)):
            if int(value) < 1:
                raise ConfigError(f"{name}={value} must be at least 1")
        self.k, self.sampling, self.seed, self.max_words = k, sampling, seed, max_words
        self.batch_size, self.workers = batch_size, workers
        self.beams, self.length_penalty = beams, length_penalty
        if beams > 1 and (self.draft is not None or (sampling is not None and sampling.temperature > 0)):
            raise ConfigError("beam search is deterministic: give --beams without --draft and --temperature")

    @property
    def info(self):
        return self.model.info

    @property
    def clip(self):
        """The one clip a video gives: the centre one at the checkpoint's frames and stride."""
        from ..inference.pipeline import inference_clip
        return inference_clip(self.model.encoder, views=1, crops=1)

    def caption_views(self, views: Sequence[torch.Tensor]) -> list[str]:
        """Captions of decoded videos, each its (1, F, H, W, 3) uint8 view of :attr:`clip`, in one batch."""
        from ..data import normalise
        clips = normalise(torch.stack([v[0] for v in views]).to(self.device))
        texts, _ = self.model.caption(clips, draft=self.draft, k=self.k, sampling=self.sampling, seed=self.seed,
                                      max_new_tokens=self.max_words, beams=self.beams,
                                      length_penalty=self.length_penalty)
        return texts

    def results(self, videos: Sequence[Any]) -> Iterator[dict[str, Any]]:
        """``{"video", "caption"}`` or ``{"video", "error"}`` for every video, in order, as soon
        as its batch is captioned; a video that cannot be read does not stop the others."""
        from ..inference.pipeline import decoded, video_name
        videos = list(videos)
        clip = self.clip
        pending: list[tuple[str, torch.Tensor]] = []

        def flush() -> Iterator[dict[str, Any]]:
            texts = self.caption_views([v for _, v in pending])
            yield from ({"video": name, "caption": text} for (name, _), text in zip(pending, texts))
            pending.clear()

        for i, views, error in decoded(videos, clip, self.workers):
            name = video_name(videos[i])
            if error is not None:
                yield {"video": name, "error": error if name in error else f"{name}: {error}"}
                continue
            pending.append((name, views))
            if len(pending) == self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def __call__(self, videos):
        """``{"caption": str}`` for one video (a path or (T, H, W, 3) uint8 frames), a list of them
        for a list; a file that cannot be read raises :class:`DataError` naming it."""
        import numpy as np
        single = isinstance(videos, (str, Path, np.ndarray, torch.Tensor))
        out = []
        for entry in self.results([videos] if single else videos):
            if "error" in entry:
                raise DataError(entry["error"])
            out.append({"caption": entry["caption"]})
        return out[0] if single else out


__all__ = ["CaptionPipeline", "is_captioner", "load_captioner"]
