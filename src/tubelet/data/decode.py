"""Reading frames from video files with PyAV (which bundles FFmpeg).

Frame ``i`` of a video is the ``i``-th frame a full decode from the start would return: every
reader here returns exactly those pixels, bit for bit, whichever way it gets there.

* :func:`index_video` demuxes the file once without decoding (cheap) and records the presentation
  timestamp of every frame and which frames are keyframes. The frame count comes from the packets,
  never from the container's metadata, which can lie (``tree.avi`` claims 444 frames, 68 decode).
* :class:`VideoReader` seeks to the keyframe before the frames it is asked for and decodes only up
  to the last of them, checking each decoded timestamp against the index. When the decoder's output
  order does not match the index (damaged timestamps, packed B-frames in AVI, ...) it falls back to
  decoding from the start and counting, which is slower but still exact.
* One :class:`av.video.reformatter.VideoReformatter` per stream converts to RGB and, when the
  source is larger than needed, downscales at decode time (``max_short_side``).
* Variable frame rates need nothing special: frames are addressed by index, and time ranges
  (EPIC-KITCHENS segments) are turned into indices through the real timestamps.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import DataError


class DecodeError(DataError):
    """A file that cannot be decoded: unreadable, truncated, empty, or without a video stream."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot decode {path}: {reason}")
        self.path = str(path)
        self.reason = reason


# Everything PyAV/FFmpeg raises for a bad file, plus what a half-written file can cause.
_AV_ERRORS = (av.FFmpegError, OSError, EOFError, ValueError, IndexError)


@dataclass(frozen=True)
class VideoIndex:
    """Where the frames of one video are, from demuxing alone.

    ``pts`` is (N,) int64, the presentation timestamps in display order; ``keyframes`` the (K,)
    sorted positions (frame indices) of keyframes. ``claimed_frames`` is what the container's
    metadata says, kept only to report when it disagrees.
    """

    path: str
    pts: np.ndarray
    keyframes: np.ndarray
    time_base: Fraction
    width: int
    height: int
    claimed_frames: int

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def times(self) -> np.ndarray:
        """(N,) seconds of each frame, relative to the first frame."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)

    @property
    def fps(self) -> float:
        """Mean frame rate from the timestamps (the container's own rate can be wrong)."""
        span = float(self.times[-1]) if self.num_frames > 1 else 0.0
        return (self.num_frames - 1) / span if span > 0 else 0.0

    def frames_between(self, start: float | None, end: float | None) -> tuple[int, int]:
        """Frame range ``[first, stop)`` whose timestamps lie in ``[start, end)`` seconds.

        Timestamps count from the first frame. An empty range becomes the one frame nearest to
        ``start`` so that a very short segment still yields a (looped) clip.
        """
        t = self.times
        first = 0 if start is None else int(np.searchsorted(t, start - 1e-6, side="left"))
        stop = self.num_frames if end is None else int(np.searchsorted(t, end - 1e-6, side="left"))
        first = min(first, self.num_frames - 1)
        return first, max(stop, first + 1)


def _open(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DecodeError(path, "the file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except _AV_ERRORS as e:
        raise DecodeError(path, f"not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(path, "no video stream")
    return container, container.streams.video[0]


def index_video(path: str | Path) -> VideoIndex:
    """Demux ``path`` (no decoding) and return where its frames are.

    Raises :class:`DecodeError` for a file that cannot be opened, has no video stream or no frame,
    and :class:`FileNotFoundError` for a missing file.
    """
    container, stream = _open(path)
    pts: list[int] = []
    key_pts: list[int] = []
    dts_fallback = 0
    try:
        with container:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end, or an empty placeholder
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:  # no timestamp at all: number the packets
                    p = dts_fallback
                dts_fallback = p + 1
                pts.append(int(p))
                if packet.is_keyframe:
                    key_pts.append(int(p))
            time_base = stream.time_base or Fraction(1, 1)
            width, height, claimed = stream.width, stream.height, int(stream.frames or 0)
    except _AV_ERRORS as e:
        if not pts:
            raise DecodeError(path, f"demuxing failed ({e})") from None
        # A truncated file: keep the frames before the damage; the reader checks them again.
    if not pts:
        raise DecodeError(path, "the video stream has no frames")
    order = np.sort(np.asarray(pts, dtype=np.int64))
    keyframes = np.searchsorted(order, np.sort(np.asarray(key_pts or [order[0]], dtype=np.int64)))
    if keyframes[0] != 0:
        keyframes = np.concatenate([[0], keyframes])  # decoding from the start always works
    return VideoIndex(str(path), order, keyframes.astype(np.int64), Fraction(time_base),
                      int(width), int(height), claimed)


def output_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) after downscaling so the short side is at most ``max_short_side``.

    Never upscales; keeps the aspect ratio; rounds to even sizes like most codecs.
    """
    short = min(width, height)
    if max_short_side is None or short <= max_short_side:
        return width, height
    scale = max_short_side / short
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class _OrderMismatch(Exception):
    """The decoder's output order does not match the index: decode from the start instead."""


class VideoReader:
    """Reads frames by index from one video file, keeping the file open between reads.

    ``max_short_side`` downscales large sources at decode time (``None``: native size).
    ``threads`` is FFmpeg's decoding threads (0: automatic); loader workers already run in
    parallel, so 1 is the default.

    >>> with VideoReader("clip.mp4") as r:
    ...     clip = r.read([0, 2, 4, 6])  # (4, H, W, 3) uint8
    """

    def __init__(self, path: str | Path, index: VideoIndex | None = None,
                 max_short_side: int | None = None, threads: int = 1):
        self.path = str(path)
        self.index = index if index is not None else index_video(path)
        self.width, self.height = output_size(self.index.width, self.index.height, max_short_side)
        self.threads = threads
        self.sequential = False  # set once the decoder's order is found not to match the index
        self._container = None
        self._stream = None
        self._reformatter = VideoReformatter()  # one converter per stream, reused for every frame

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = self._stream = None

    def _reopen(self):
        self.close()
        self._container, self._stream = _open(self.path)
        ctx = self._stream.codec_context
        ctx.thread_count = self.threads
        ctx.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        return self._container, self._stream

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        out = self._reformatter.reformat(frame, width=self.width, height=self.height,
                                         format="rgb24", interpolation="AREA")
        return out.to_ndarray()  # (H, W, 3) uint8

    # -- reading ----------------------------------------------------------------------------
    def read(self, indices) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as (len(indices), H, W, 3) uint8."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.index.num_frames
        if len(indices) == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        if indices.min() < 0 or indices.max() >= n:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {n}), got "
                             f"[{indices.min()}, {indices.max()}]")
        wanted = sorted(set(indices.tolist()))
        try:
            frames = None
            if not self.sequential:
                try:
                    frames = self._read_seeking(wanted)
                except _OrderMismatch:
                    self.sequential = True
            if frames is None:
                frames = self._read_sequential(wanted)
        except _AV_ERRORS as e:
            self.close()
            raise DecodeError(self.path, f"decoding failed ({e})") from None
        return np.stack([frames[i] for i in indices.tolist()])

    def read_all(self) -> np.ndarray:
        """Every frame, (N, H, W, 3) uint8."""
        return self.read(np.arange(self.index.num_frames))

    def _read_seeking(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Seek to the keyframe before each run of wanted frames; decode only up to the run's end."""
        pts, keyframes = self.index.pts, self.index.keyframes.tolist()
        out: dict[int, np.ndarray] = {}
        w = 0  # next wanted frame (position in ``wanted``)
        container, stream = self._container, self._stream
        if container is None:
            container, stream = self._reopen()
        while w < len(wanted):
            key = keyframes[bisect.bisect_right(keyframes, wanted[w]) - 1]
            container.seek(int(pts[key]), stream=stream, backward=True, any_frame=False)
            position = None  # index of the frame just decoded
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise _OrderMismatch
                if position is None:  # the first frame after the seek: where did we land?
                    position = int(np.searchsorted(pts, frame.pts))
                    if position >= len(pts) or pts[position] != frame.pts or position > wanted[w]:
                        return self._read_sequential(wanted)  # the seek missed; this read only
                else:
                    position += 1
                    if position >= len(pts) or pts[position] != frame.pts:
                        raise _OrderMismatch
                if position == wanted[w]:
                    out[position] = self._rgb(frame)
                    w += 1
                    if w == len(wanted):
                        break
                    # Seek again when the next wanted frame lies past a later keyframe.
                    next_key = keyframes[bisect.bisect_right(keyframes, wanted[w]) - 1]
                    if next_key > position + 1:
                        break
            else:
                if w < len(wanted):  # the stream ended before the frames the index promised
                    raise _OrderMismatch
        return out

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the start, counting frames in the decoder's output order."""
        container, stream = self._reopen()
        out: dict[int, np.ndarray] = {}
        targets = set(wanted)
        last = wanted[-1]
        count = 0
        for position, frame in enumerate(container.decode(stream)):
            count = position + 1
            if position in targets:
                out[position] = self._rgb(frame)
            if position >= last:
                break
        if len(out) < len(targets):
            raise DecodeError(self.path, f"the index lists {self.index.num_frames} frames but only "
                              f"{count} decode")
        self.close()  # the next read reopens; keeps seeking state simple
        return out


def read_frames(path: str | Path, indices, max_short_side: int | None = None) -> np.ndarray:
    """Frames ``indices`` of ``path`` as (len(indices), H, W, 3) uint8 (opens and closes the file)."""
    with VideoReader(path, max_short_side=max_short_side) as reader:
        return reader.read(indices)
