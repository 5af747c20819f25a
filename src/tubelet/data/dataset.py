"""The torch Dataset of video clips: records in, uint8 clips out, cropped to the model's size.

Training items are one random clip, scale-jittered and randomly cropped to ``size`` in the loader
worker (the cheap part of the augmentation); the rest runs batched on the device
(:mod:`tubelet.data.augment`). Evaluation items are ``views`` clips x ``crops`` spatial crops.

Randomness comes only from ``(seed, epoch, index)``: ask for item ``(index, epoch)`` (what
:class:`tubelet.data.loader.ClipSampler` yields) and the same clip comes back in any process, any
run. A file that cannot be decoded gives an item ``{"skipped": path, ...}`` instead of an
exception; :func:`collate_clips` and the loader count and report those.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import sampling
from .decode import DecodeError, VideoIndex, VideoReader, index_video
from .formats import Annotations, Record, find_split, read_annotations, read_class_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut: the paper's defaults are 32 frames at stride 2, 224 px, 4 views x 3 crops.

    ``scale`` is the scale jitter range; ``train_short_side`` the short side the reference resizes
    to before jittering and cropping (``None``: ``size * 8 / 7``, i.e. 256 for 224).
    """

    num_frames: int = 32
    stride: int = 2
    size: int = 224
    views: int = 4
    crops: int = 3
    scale: tuple[float, float] = (0.9, 1.33)
    train_short_side: int | None = None

    @property
    def short_side(self) -> int:
        return self.train_short_side or math.ceil(self.size * 8 / 7)


def resize_crop(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop ``box`` = (top, left, h, w) of (T, H, W, C) uint8 frames and resize to ``size`` square.

    (T, H, W, C) uint8 -> (T, size, size, C) uint8; bilinear with antialiasing when shrinking.
    """
    top, left, h, w = box
    clip = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + h, left:left + w]))
    if (h, w) == (size, size):
        return clip
    x = clip.permute(0, 3, 1, 2).float()  # (T, h, w, C) -> (T, C, h, w)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=h > size or w > size)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (T, size, size, C)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, H', W', C) uint8 with min(H', W') == ``short_side``."""
    t, h, w, c = frames.shape
    nh, nw = sampling.resized_shape(h, w, short_side)
    if (nh, nw) == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def evaluation_views(path: str | Path, clip: ClipConfig, index: VideoIndex | None = None,
                     start: float | None = None, end: float | None = None,
                     decode_threads: int = 1) -> torch.Tensor:
    """The paper's test views of one video: ``clip.views`` clips x ``clip.crops`` crops.

    Frames are resized so the short side is ``clip.size``, then cut into crops along the long side.
    -> (views * crops, T, size, size, 3) uint8, view-major. Raises DecodeError / FileNotFoundError.
    """
    index = index if index is not None else index_video(path)
    first, stop = index.frames_between(start, end)
    c = clip
    frames_at = sampling.evaluation_clips(c.num_frames, c.stride, first, stop, c.views)  # (V, T)
    with VideoReader(path, index, max_short_side=c.size, threads=decode_threads) as reader:
        frames = reader.read(frames_at.reshape(-1))  # (V*T, H, W, 3)
    frames = resize_short_side(frames, c.size)
    h, w = frames.shape[1:3]
    frames = frames.reshape(c.views, c.num_frames, h, w, 3)
    return torch.stack([resize_crop(frames[v], box, c.size)
                        for v in range(c.views)
                        for box in sampling.crop_boxes(h, w, c.size, c.crops)])


def load_eval_views(path: str | Path, clip: ClipConfig = ClipConfig()) -> torch.Tensor:
    """:func:`evaluation_views` of a whole video file (what ``tubelet predict`` feeds the model)."""
    return evaluation_views(path, clip)


class VideoClips(Dataset):
    """Clips of annotated videos.

    Items: ``{"video": uint8, "label": int64 (heads,) or (), "index": int}`` where ``video`` is
    (T, size, size, 3) in training and (views * crops, T, size, size, 3) in evaluation (view-major:
    view 0's crops first). A file that fails to decode gives ``{"skipped": path, "reason": str,
    "index": int}``.
    """

    def __init__(self, annotations: Annotations, clip: ClipConfig = ClipConfig(), train: bool = True,
                 seed: int = 0, decode_threads: int = 1):
        self.annotations = annotations
        self.records: list[Record] = annotations.records
        self.class_names = annotations.class_names
        self.clip = clip
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.decode_threads = decode_threads
        self._indices: dict[str, VideoIndex] = {}  # per process: workers build their own

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> list[int]:
        return self.annotations.num_classes

    @property
    def head_names(self) -> tuple[str, ...] | None:
        """``("verb", "noun")`` for EPIC-KITCHENS; None for one head."""
        return ("verb", "noun") if self.annotations.format == "epic" else None

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for plain integer keys (keys ``(index, epoch)`` carry their own)."""
        self.epoch = epoch

    def _index(self, path: Path) -> VideoIndex:
        key = str(path)
        if key not in self._indices:
            self._indices[key] = index_video(path)
        return self._indices[key]

    def load(self, index: int, epoch: int) -> dict[str, Any]:
        """Item ``index`` as seen in ``epoch``; raises :class:`DecodeError` for a bad file."""
        record = self.records[index]
        video = self._index(record.path)
        first, stop = video.frames_between(record.start, record.end)
        if not self.train:
            clip = evaluation_views(record.path, self.clip, video, record.start, record.end,
                                    self.decode_threads)
            return {"video": clip, "label": torch.as_tensor(record.label, dtype=torch.int64),
                    "index": index}
        c = self.clip
        rng = sampling.item_seed(self.seed, epoch, index)
        frames_at = sampling.training_clip(c.num_frames, c.stride, first, stop, rng)
        with VideoReader(record.path, video, max_short_side=c.short_side,
                         threads=self.decode_threads) as reader:
            frames = reader.read(frames_at)  # (T, H, W, 3)
        box = sampling.scale_jitter_box(frames.shape[1], frames.shape[2], c.size, c.scale, rng,
                                        short_side=c.short_side)
        clip = resize_crop(frames, box, c.size)  # (T, size, size, 3)
        label = torch.as_tensor(record.label, dtype=torch.int64)
        return {"video": clip, "label": label, "index": index}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        try:
            return self.load(index, epoch)
        except DecodeError as e:
            return {"skipped": str(self.records[index].path), "reason": e.reason, "index": index}


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack good items; list the skipped ones as ``batch["skipped"] = [(path, reason), ...]``.

    ``video``: (B, T, H, W, C) or (B, V*crops, T, H, W, C) uint8; ``label``: (B,) or (B, heads);
    ``index``: (B,). A batch whose items were all skipped has ``video`` of None.
    """
    good = [item for item in items if "skipped" not in item]
    batch: dict[str, Any] = {
        "skipped": [(item["skipped"], item["reason"]) for item in items if "skipped" in item]}
    if good:
        batch["video"] = torch.stack([item["video"] for item in good])
        batch["label"] = torch.stack([item["label"] for item in good])
        batch["index"] = torch.tensor([item["index"] for item in good], dtype=torch.int64)
    else:
        batch["video"] = batch["label"] = batch["index"] = None
    return batch


def _class_names_file(folder: Path) -> Path | None:
    for name in ("classes.txt", "class_names.txt", "labels.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def build_datasets(data: str | Path, val: str | Path | None = None, *, format: str | None = None,
                   root: str | Path | None = None, class_names=None, clip: ClipConfig = ClipConfig(),
                   seed: int = 0, missing: str = "error", decode_threads: int = 1
                   ) -> tuple[VideoClips, VideoClips | None]:
    """Training and validation datasets from a data spec.

    ``data`` is an annotation file or class folder (then ``val`` names the validation one, if any),
    or a dataset folder holding both splits: ``train.csv`` + ``validate.csv`` (Kinetics, also what
    ``tubelet data synth`` writes), ``train.json`` + ``validation.json`` (SSv2), ``train.txt`` +
    ``val.txt`` (lists), ``EPIC_100_train.csv`` + ``EPIC_100_validation.csv``, or ``train/`` +
    ``val/`` class folders. Class names come from ``class_names`` (a list or a file), else a
    ``classes.txt`` in the folder, else the training annotations; the validation split reuses them.
    """
    data = Path(data)
    train_path = data
    if data.is_dir() and find_split(data, "train") is not None:  # a dataset folder
        train_path = find_split(data, "train")
        if val is None or Path(val) == data:
            val = find_split(data, "val")
        if class_names is None:
            class_names = _class_names_file(data)
    if val is not None and Path(val).is_dir() and find_split(val, "val") is not None:
        val = find_split(val, "val")
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    train = read_annotations(train_path, format, root, class_names, missing)
    names = train.class_names if train.format == "epic" else train.class_names[0]
    train_set = VideoClips(train, clip, train=True, seed=seed, decode_threads=decode_threads)
    if val is None:
        return train_set, None
    val_ann = read_annotations(val, format or train.format, root, names, missing)
    return train_set, VideoClips(val_ann, clip, train=False, seed=seed, decode_threads=decode_threads)
