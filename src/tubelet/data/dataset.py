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

import dataclasses
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
from .formats import AnnotationError, Annotations, Record, read_annotations, read_class_names
from .layouts import Layout, detect_layout

log = logging.getLogger(__name__)


EVAL_ORDER = 2**31 - 1  # the 'epoch' of an evaluation item's shuffled frame order


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut: the paper's defaults are 32 frames at stride 2, 224 px, 4 views x 3 crops.

    ``size`` is the crop: an int (square) or ``(height, width)``. ``scale`` is the scale jitter
    range; ``train_short_side`` the side the reference resizes the crop's short side to before
    jittering and cropping (``None``: ``8 / 7`` of it, i.e. 256 for 224). ``shuffle_frames`` is a
    control for temporal order: every clip's frames in a random order (seeded, fixed per video in
    evaluation), so a model can use what is in the frames but not their order.
    """

    num_frames: int = 32
    stride: int = 2
    size: int | tuple[int, int] = 224
    views: int = 4
    crops: int = 3
    scale: tuple[float, float] = (0.9, 1.33)
    train_short_side: int | None = None
    shuffle_frames: bool = False

    def __post_init__(self):
        if not isinstance(self.size, int):  # a list from YAML/JSON: keep the config hashable
            object.__setattr__(self, "size", sampling.crop_size(self.size))

    @property
    def crop(self) -> tuple[int, int]:
        """(height, width) of the crop."""
        return sampling.crop_size(self.size)

    @property
    def short_side(self) -> int:
        return self.train_short_side or math.ceil(min(self.crop) * 8 / 7)


def resize_crop(frames: np.ndarray, box: tuple[int, int, int, int],
                size: int | tuple[int, int]) -> torch.Tensor:
    """Crop ``box`` = (top, left, h, w) of (T, H, W, C) uint8 frames and resize to ``size``.

    (T, H, W, C) uint8 -> (T, height, width, C) uint8; bilinear with antialiasing when shrinking.
    """
    top, left, h, w = box
    ch, cw = sampling.crop_size(size)
    clip = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + h, left:left + w]))
    if (h, w) == (ch, cw):
        return clip
    x = clip.permute(0, 3, 1, 2).float()  # (T, h, w, C) -> (T, C, h, w)
    x = F.interpolate(x, size=(ch, cw), mode="bilinear", align_corners=False,
                      antialias=h > ch or w > cw)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (T, ch, cw, C)


def resize_to_cover(frames: np.ndarray, crop: int | tuple[int, int]) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, H', W', C) uint8, the smallest size with the aspect kept that
    covers ``crop`` (a square crop: the short side becomes its side)."""
    t, h, w, c = frames.shape
    nh, nw = sampling.cover_shape(h, w, crop)
    if (nh, nw) == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def decode_short_side(index: VideoIndex, scale: float) -> int:
    """The short side to decode ``index``'s video at so that it is ``scale`` times its size
    (rounded up: the decoder never upscales, and the crops are cut from what it returns)."""
    return math.ceil(min(index.height, index.width) * scale - 1e-6)


def evaluation_views(path: str | Path, clip: ClipConfig, index: VideoIndex | None = None,
                     start: float | None = None, end: float | None = None,
                     decode_threads: int = 1) -> torch.Tensor:
    """The paper's test views of one video: ``clip.views`` clips x ``clip.crops`` crops.

    Frames are resized to cover the crop (a square crop: the short side becomes ``clip.size``),
    then cut into crops along the long side.
    -> (views * crops, T, height, width, 3) uint8, view-major. Raises :class:`DecodeError`
    (:class:`VideoNotFound` for a missing file).
    """
    index = index if index is not None else index_video(path)
    first, stop = index.frames_between(start, end)
    c = clip
    frames_at = sampling.evaluation_clips(c.num_frames, c.stride, first, stop, c.views)  # (V, T)
    cover = sampling.cover_shape(index.height, index.width, c.crop)
    with VideoReader(path, index, max_short_side=min(cover), threads=decode_threads) as reader:
        frames = reader.read(frames_at.reshape(-1))  # (V*T, H, W, 3)
    return crop_views(frames, clip)


def crop_views(frames: np.ndarray, clip: ClipConfig) -> torch.Tensor:
    """The crops of decoded view frames: (V*T, H, W, 3) uint8, view-major -> (V*C, T, h, w, 3).

    Frames are resized to cover the crop, then cut into ``clip.crops`` crops along the long side.
    """
    frames = resize_to_cover(frames, clip.crop)
    h, w = frames.shape[1:3]
    frames = frames.reshape(clip.views, clip.num_frames, h, w, 3)
    return torch.stack([resize_crop(frames[v], box, clip.crop)
                        for v in range(clip.views)
                        for box in sampling.crop_boxes(h, w, clip.crop, clip.crops)])


def load_eval_views(path: str | Path, clip: ClipConfig = ClipConfig()) -> torch.Tensor:
    """:func:`evaluation_views` of a whole video file (what ``tubelet predict`` feeds the model):
    the same index and reader as the loaders, so a file the loaders accept is accepted here."""
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
        self.clip = clip
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.decode_threads = decode_threads
        self._indices: dict[str, VideoIndex] = {}  # per process: workers build their own

    def __len__(self) -> int:
        return len(self.records)

    @property
    def class_names(self) -> tuple[tuple[str, ...], ...]:
        """The class names of each head: ``(names,)``, or ``(verbs, nouns)`` for EPIC-KITCHENS."""
        return tuple(tuple(names) for names in self.annotations.class_names)

    @property
    def num_classes(self) -> list[int]:
        return self.annotations.num_classes

    def left_out(self) -> dict[str, str]:
        """Files of the annotations that are not items (path -> reason): missing videos (with
        ``missing="skip"``) and files that are not videos by their extension."""
        out = {path: "listed but does not exist" for path in self.annotations.missing}
        out.update({path: "not a video file (by its extension); ignored"
                    for path in self.annotations.ignored})
        return out

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
            if self.clip.shuffle_frames:  # (V*C, T, H, W, 3): the same order for every view of a video
                order = sampling.item_seed(self.seed, EVAL_ORDER, index).permutation(clip.shape[1])
                clip = clip[:, torch.from_numpy(order)]
            return {"video": clip, "label": torch.as_tensor(record.label, dtype=torch.int64),
                    "index": index}
        c = self.clip
        rng = sampling.item_seed(self.seed, epoch, index)
        frames_at = sampling.training_clip(c.num_frames, c.stride, first, stop, rng)
        scale = sampling.train_scale(video.height, video.width, c.crop, c.short_side)
        with VideoReader(record.path, video, max_short_side=decode_short_side(video, scale),
                         threads=self.decode_threads) as reader:
            frames = reader.read(frames_at)  # (T, H, W, 3)
        box = sampling.scale_jitter_box(frames.shape[1], frames.shape[2], c.crop, c.scale, rng,
                                        short_side=c.short_side)
        clip = resize_crop(frames, box, c.crop)  # (T, height, width, 3)
        if c.shuffle_frames:
            clip = clip[torch.from_numpy(rng.permutation(len(clip)))]
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


def load_splits(data: str | Path, val: str | Path | None = None, *, format: str | None = None,
                root: str | Path | None = None, class_names=None, missing: str = "error"
                ) -> tuple[Annotations, Annotations | None, Layout | None]:
    """The annotations of the training split and of the validation split (None if there is none),
    and the detected :class:`~tubelet.data.layouts.Layout` of a dataset folder (None otherwise).

    The validation split reuses the training split's class names.
    """
    data = Path(data).expanduser()
    if not data.exists():
        raise AnnotationError(f"{data} does not exist")
    layout = detect_layout(data)
    train_path, train_root, val_root = data, root, root
    if layout is not None:  # a dataset folder
        train_path = layout.train
        format = format or (layout.format if layout.format != "folder" else None)
        if root is None and layout.root is not None:
            train_root = val_root = layout.root
        if val is None or Path(val).expanduser() == data:
            val = layout.val
        if class_names is None:
            class_names = layout.class_names
    if val is not None:
        val = Path(val).expanduser()
        val_layout = detect_layout(val)
        if val_layout is not None and val_layout.val is not None:
            val = val_layout.val
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    train = read_annotations(train_path, format, train_root, class_names, missing)
    if val is None:
        return train, None, layout
    names = train.class_names if train.format == "epic" else train.class_names[0]
    return train, read_annotations(val, format or train.format, val_root, names, missing), layout


def check_training_labels(annotations: Annotations) -> None:
    """A training split must have at least two classes and two different labels in each head."""
    for head, names in enumerate(annotations.class_names):
        labels = {r.label[head] if isinstance(r.label, tuple) else r.label
                  for r in annotations.records}
        what = f"head {head} of " if len(annotations.class_names) > 1 else ""
        if len(names) < 2 or len(labels) < 2:
            only = names[next(iter(labels))] if len(labels) == 1 and \
                next(iter(labels)) < len(names) else None
            raise AnnotationError(
                f"{annotations.source}: {what}the training split has {len(names)} class(es) and "
                f"{len(labels)} distinct label(s) over {len(annotations.records)} video(s)"
                + (f" (all {only!r})" if only is not None else "")
                + f" (read as the {annotations.format!r} format): a classifier needs at least two."
                " Check the detected format (--format) and the annotation files "
                "(tubelet data inspect shows what was read)")


def stratified_split(annotations: Annotations, fraction: float, seed: int
                     ) -> tuple[Annotations, Annotations]:
    """Hold out ``fraction`` of each class (by the first head's label) as a validation split,
    drawn with ``seed``; every class keeps at least one training video."""
    if not 0 < fraction < 1:
        raise AnnotationError(f"--val-split must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng([seed, 7919])
    by_class: dict[int, list[int]] = {}
    for i, r in enumerate(annotations.records):
        by_class.setdefault(r.label[0] if isinstance(r.label, tuple) else r.label, []).append(i)
    held: set[int] = set()
    for label in sorted(by_class):
        members = by_class[label]
        k = min(len(members) - 1, round(len(members) * fraction))
        held.update(rng.permutation(members)[:k].tolist())
    if not held:
        raise AnnotationError(f"{annotations.source}: --val-split {fraction} holds out no video "
                              f"of {len(annotations.records)}; use a larger fraction")
    pick = lambda keep: [r for i, r in enumerate(annotations.records) if (i in held) != keep]
    train = dataclasses.replace(annotations, records=pick(True))
    val = dataclasses.replace(annotations, records=pick(False), missing=[], ignored=[],
                              empty_classes=[])
    return train, val


def build_datasets(data: str | Path, val: str | Path | None = None, *, format: str | None = None,
                   root: str | Path | None = None, class_names=None, clip: ClipConfig = ClipConfig(),
                   seed: int = 0, missing: str = "error", val_split: float | None = None,
                   decode_threads: int = 1) -> tuple[VideoClips, VideoClips | None]:
    """Training and validation datasets from a data spec.

    ``data`` is an annotation file or class folder (then ``val`` names the validation one, if
    any), or a dataset folder as it is downloaded (:mod:`tubelet.data.layouts`: Kinetics, SSv2,
    EPIC-KITCHENS-100, Moments in Time, UCF101 / HMDB51 split lists, ``train.txt`` + ``val.txt``,
    ``train/`` + ``val/`` class folders). ``root`` is the folder the videos are under (default:
    the layout's, or beside the annotation file). Class names come from ``class_names`` (a list
    or a file), else the dataset's own class file, else the training annotations; the validation
    split reuses them. ``missing="skip"`` leaves out videos the annotations list but that do not
    exist (``"error"``: stop). Without a validation split, ``val_split=f`` holds out a fraction
    ``f`` of each class, drawn with ``seed``; else a warning says how to give one.

    Raises :class:`AnnotationError` (a :class:`~tubelet.errors.DataError`) for a malformed
    annotation, a missing video with ``missing="error"``, or a training split with fewer than two
    classes or labels.
    """
    if missing not in ("error", "skip"):
        raise AnnotationError(f"missing must be 'error' or 'skip' (--missing), got {missing!r}")
    train, val_ann, _ = load_splits(data, val, format=format, root=root, class_names=class_names,
                                    missing=missing)
    if val_ann is None and val_split:
        train, val_ann = stratified_split(train, val_split, seed)
    elif val_ann is not None and val_split:
        log.warning("%s has a validation split (%s): --val-split %s is not used", data,
                    val_ann.source, val_split)
    evaluating = val is not None and Path(val).expanduser() == Path(data).expanduser() and \
        detect_layout(data) is None  # build_datasets(x, x): x alone, to evaluate on
    if not evaluating:
        check_training_labels(train)
    train_set = VideoClips(train, clip, train=True, seed=seed, decode_threads=decode_threads)
    if val_ann is None:
        log.warning("%s has no validation split: pass --val PATH (val= in Python) or "
                    "--val-split 0.1 (val_split=0.1) to hold out 10%% of each class", data)
        return train_set, None
    return train_set, VideoClips(val_ann, clip, train=False, seed=seed, decode_threads=decode_threads)


def build_eval_dataset(data: str | Path, *, class_names=None, format: str | None = None,
                       root: str | Path | None = None, clip: ClipConfig = ClipConfig(),
                       missing: str = "error", decode_threads: int = 1) -> VideoClips:
    """The dataset ``tubelet eval`` scores: a dataset folder's validation split, else ``data``
    itself (an annotation file or class folder). ``class_names`` should be the model's own (from
    its folder), so labels map to the classes the model was trained on, not the data's order."""
    layout = detect_layout(data)
    spec = layout.val if layout is not None and layout.val is not None else data
    if layout is not None:
        format = format or (layout.format if layout.format != "folder" else None)
        root = root if root is not None else layout.root
        class_names = class_names if class_names is not None else layout.class_names
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    if class_names is not None and len(class_names) and not isinstance(class_names[0], str) \
            and len(class_names) == 1:
        class_names = class_names[0]  # one head, given as (names,)
    ann = read_annotations(spec, format, root, class_names, missing)
    return VideoClips(ann, clip, train=False, seed=0, decode_threads=decode_threads)
