"""Reading frames from video files with PyAV (which bundles FFmpeg).

Frame ``i`` of a video is the ``i``-th frame a full decode from the start would return: every
reader here returns exactly those pixels, bit for bit, whichever way it gets there.

* :func:`index_video` demuxes the file once and records the presentation timestamp of every frame
  and which frames are keyframes, then decodes the last group of pictures (from the last keyframe
  to the end) so that the index agrees with the decoder: packets that decode to nothing (the empty
  end-of-sequence packet after B-frames, a packet the decoder rejects) do not count as frames. The
  frame count never comes from the container's metadata, which can lie (``tree.avi`` claims 444
  frames, 68 decode).
* Decoding behaves like FFmpeg's own player: a packet the decoder rejects yields no frame instead
  of ending the file (:func:`decoded_frames`), everywhere.
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
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from ..errors import DataError


class DecodeError(DataError):
    """A file that cannot be decoded: unreadable, truncated, empty, or without a video stream."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot decode {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class VideoNotFound(DecodeError, FileNotFoundError):
    """A video that does not exist, or a symbolic link whose target does not."""


# Everything PyAV/FFmpeg raises for a bad file, plus what a half-written file can cause.
_AV_ERRORS = (av.FFmpegError, OSError, EOFError, ValueError, IndexError)


def _why(error: Exception) -> str:
    """FFmpeg's own words for ``error``, without the file name (the message names it once)."""
    return getattr(error, "strerror", None) or str(error)


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
        if path.is_symlink():
            raise VideoNotFound(path, f"a dangling symbolic link (its target {os.readlink(path)} "
                                      "does not exist)")
        raise VideoNotFound(path, "the file does not exist")
    if path.is_dir():
        raise DecodeError(path, "a folder, not a video file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "the file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise DecodeError(path, "the file is not readable (permission denied)")
    try:
        container = av.open(str(path), mode="r")
    except _AV_ERRORS as e:
        raise DecodeError(path, f"not a readable video ({_why(e)})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(path, "no video stream")
    return container, container.streams.video[0]


def decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream):
    """The frames of a decode from the container's current position, as FFmpeg's player sees them.

    A packet the decoder rejects (``InvalidDataError``: a damaged or non-picture packet) yields no
    frame instead of ending the file; the last, empty packet flushes the frames the decoder holds
    back (B-frames). Every reader and the index decode through this one function.
    """
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue
        yield from frames


@dataclass(frozen=True)
class StreamInfo:
    """What the container says about the video stream (the index checks the parts that matter)."""

    time_base: Fraction
    width: int
    height: int
    claimed_frames: int


def _demux(path: str | Path) -> tuple[list[int], list[int], StreamInfo]:
    """Presentation timestamps of every packet that carries a picture, and of the keyframes."""
    container, stream = _open(path)
    info = StreamInfo(Fraction(stream.time_base or Fraction(1, 1)), int(stream.width),
                      int(stream.height), int(stream.frames or 0))
    pts: list[int] = []
    key_pts: list[int] = []
    dts_fallback = 0
    try:
        with container:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # the flush packet; edit-list discards
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:  # no timestamp at all: number the packets
                    p = dts_fallback
                dts_fallback = p + 1
                pts.append(int(p))
                if packet.is_keyframe:
                    key_pts.append(int(p))
    except _AV_ERRORS as e:
        if not pts:
            raise DecodeError(path, f"demuxing failed ({_why(e)})") from None
        # A truncated file: keep the packets before the damage; the tail check decodes them.
    return pts, key_pts, info


def _decoded_tail(path: str | Path, key_pts: int) -> list[int | None] | None:
    """Timestamps of the frames decoded from the keyframe at ``key_pts`` to the end of the file.

    ``None`` when the seek does not land on that keyframe (timestamps the decoder does not honour).
    """
    container, stream = _open(path)
    with container:
        _count_only(stream)
        container.seek(int(key_pts), stream=stream, backward=True, any_frame=False)
        out = []
        for frame in decoded_frames(container, stream):
            if not out and frame.pts != key_pts and (frame.pts is None or frame.pts > key_pts):
                return None  # landed after the keyframe: cannot tell which frames decode
            if frame.pts is None or frame.pts >= key_pts:
                out.append(frame.pts)
        return out


def _decoded_count(path: str | Path) -> int:
    """Frames of a full decode from the start (the slow, always-right count)."""
    container, stream = _open(path)
    with container:
        _count_only(stream)
        return sum(1 for _ in decoded_frames(container, stream))


def _count_only(stream: av.video.stream.VideoStream) -> None:
    """Decode only to see which packets give frames: skipping the deblocking filter changes the
    pixels, never which frames come out, and saves about a fifth of the work for H.264."""
    stream.codec_context.thread_type = "SLICE"
    stream.codec_context.options = {"skip_loop_filter": "all"}


def index_video(path: str | Path) -> VideoIndex:
    """Demux ``path`` and decode its last group of pictures; return where its frames are.

    The frames are the ones a full decode returns: a packet after the last keyframe that decodes to
    nothing (an end-of-sequence packet, the tail of a B-frame stream, a packet the decoder rejects)
    is dropped from the index instead of failing the file later. When the decoder's timestamps do
    not match the packets' (damaged files), the count comes from a full decode.

    Raises :class:`DecodeError` for a file that cannot be opened, has no video stream or no frame,
    and :class:`VideoNotFound` (also a ``FileNotFoundError``) for a missing file.
    """
    pts, key_pts, info = _demux(path)
    if not pts:
        raise DecodeError(path, "the video stream has no frames")
    order = np.sort(np.asarray(pts, dtype=np.int64))
    keys = np.sort(np.asarray(key_pts or [order[0]], dtype=np.int64))
    last_key = int(keys[-1])
    try:
        tail = _decoded_tail(path, last_key)
    except _AV_ERRORS as e:
        raise DecodeError(path, f"decoding the last frames failed ({_why(e)})") from None
    head = order[order < last_key]
    if tail is not None and None not in tail and set(tail) <= set(order.tolist()):
        order = np.concatenate([head, np.unique(np.asarray(tail, dtype=np.int64))])
    else:  # the decoder does not follow the packets' timestamps: count a full decode
        try:
            count = _decoded_count(path)
        except _AV_ERRORS as e:
            raise DecodeError(path, f"decoding failed ({_why(e)})") from None
        order = order[:count]
    if len(order) == 0:
        raise DecodeError(path, "no frame decodes")
    keyframes = np.searchsorted(order, keys[np.isin(keys, order)])
    if len(keyframes) == 0 or keyframes[0] != 0:
        keyframes = np.concatenate([[0], keyframes])  # decoding from the start always works
    return VideoIndex(str(path), order, keyframes.astype(np.int64), info.time_base,
                      info.width, info.height, info.claimed_frames)


def output_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) after downscaling so the short side is at most ``max_short_side``.

    Never upscales; keeps the aspect ratio; rounds to even sizes like most codecs.
    """
    short = min(width, height)
    if max_short_side is None or short <= max_short_side:
        return width, height
    scale = max_short_side / short
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def frame_buffer(frames: int, height: int, width: int) -> np.ndarray:
    """An uninitialised (frames, height, width, 3) uint8 array for decoded frames.

    Allocated by torch rather than numpy: numpy asks the kernel for transparent huge pages on
    large arrays, and where the kernel then compacts memory to find them (THP ``defrag=madvise``,
    the common default) first-touching a 350 MB clip costs up to 3x the system time.
    """
    return torch.empty((frames, height, width, 3), dtype=torch.uint8).numpy()


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
        self._index = index
        self.max_short_side = max_short_side
        self.threads = threads
        self.sequential = False  # set once the decoder's order is found not to match the index
        self._container = None
        self._stream = None
        self._reformatter = VideoReformatter()  # one converter per stream, reused for every frame

    @property
    def index(self) -> VideoIndex:
        """The file's :class:`VideoIndex` (built on first use; :meth:`read_all` does not need it)."""
        if self._index is None:
            self._index = index_video(self.path)
        return self._index

    @property
    def width(self) -> int:
        return output_size(self.index.width, self.index.height, self.max_short_side)[0]

    @property
    def height(self) -> int:
        return output_size(self.index.width, self.index.height, self.max_short_side)[1]

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

    def _rgb_into(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        """Convert ``frame`` to RGB at ``out``'s size, into ``out`` (H, W, 3) uint8."""
        height, width = out.shape[:2]
        if (frame.width, frame.height, frame.format.name) != (width, height, "rgb24"):
            frame = self._reformatter.reformat(frame, width=width, height=height,
                                               format="rgb24", interpolation="AREA")
        out[...] = frame.to_ndarray()

    # -- reading ----------------------------------------------------------------------------
    def read(self, indices) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as (len(indices), H, W, 3) uint8."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.index.num_frames
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(f"{self.path}: frame indices must lie in [0, {n}), got "
                             f"[{indices.min()}, {indices.max()}]")
        wanted, slots = np.unique(indices, return_inverse=True)
        frames = self._read_unique(wanted)
        if len(wanted) == len(indices) and np.array_equal(wanted, indices):
            return frames  # sorted and distinct (read_all): no second copy
        return frames[slots.reshape(-1)]

    def read_all(self) -> np.ndarray:
        """Every frame, (N, H, W, 3) uint8: one decode from the start into one preallocated array.

        Without an index yet, the array is sized by the packets (demuxing is cheap) and a packet
        that decodes to nothing leaves the last row unused: the frames are exactly those of the
        index, without decoding the end of the file twice.
        """
        if self._index is not None:
            return self.read(np.arange(self._index.num_frames))
        pts, _, info = _demux(self.path)
        width, height = output_size(info.width, info.height, self.max_short_side)
        out = frame_buffer(len(pts), height, width)
        count = 0
        try:
            container, stream = self._reopen()
            for frame in decoded_frames(container, stream):
                if count == len(out):  # more frames than packets: the index counts those
                    return self.read(np.arange(self.index.num_frames))
                self._rgb_into(frame, out[count])
                count += 1
        except _AV_ERRORS as e:
            raise DecodeError(self.path, f"decoding failed ({_why(e)})") from None
        finally:
            self.close()
        if count == 0:
            raise DecodeError(self.path, "no frame decodes")
        return out if count == len(out) else out[:count]

    def _read_unique(self, wanted: np.ndarray) -> np.ndarray:
        """Sorted, distinct frames ``wanted`` into one (len(wanted), H, W, 3) uint8 array."""
        out = frame_buffer(len(wanted), self.height, self.width)
        if len(wanted) == 0:
            return out
        wanted_list = wanted.tolist()
        try:
            done = False
            if not self.sequential:
                try:
                    done = self._read_seeking(wanted_list, out)
                except _OrderMismatch:
                    self.sequential = True
            if not done:
                self._read_sequential(wanted_list, out)
        except _AV_ERRORS as e:
            self.close()
            raise DecodeError(self.path, f"decoding failed ({_why(e)})") from None
        return out

    def _read_seeking(self, wanted: list[int], out: np.ndarray) -> bool:
        """Seek to the keyframe before each run of wanted frames; decode only up to the run's end.

        Fills ``out[k]`` with frame ``wanted[k]``; False when the seek missed (read sequentially).
        """
        pts, keyframes = self.index.pts, self.index.keyframes.tolist()
        w = 0  # next wanted frame (position in ``wanted``)
        container, stream = self._container, self._stream
        if container is None:
            container, stream = self._reopen()
        while w < len(wanted):
            key = keyframes[bisect.bisect_right(keyframes, wanted[w]) - 1]
            container.seek(int(pts[key]), stream=stream, backward=True, any_frame=False)
            position = None  # index of the frame just decoded
            for frame in decoded_frames(container, stream):
                if frame.pts is None:
                    raise _OrderMismatch
                if position is None:  # the first frame after the seek: where did we land?
                    position = int(np.searchsorted(pts, frame.pts))
                    if position >= len(pts) or pts[position] != frame.pts or position > wanted[w]:
                        return False  # the seek missed; this read only
                else:
                    position += 1
                    if position >= len(pts) or pts[position] != frame.pts:
                        raise _OrderMismatch
                if position == wanted[w]:
                    self._rgb_into(frame, out[w])
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
        return True

    def _read_sequential(self, wanted: list[int], out: np.ndarray) -> None:
        """Decode from the start, counting frames in the decoder's output order."""
        container, stream = self._reopen()
        w, count = 0, 0
        for position, frame in enumerate(decoded_frames(container, stream)):
            count = position + 1
            if position == wanted[w]:
                self._rgb_into(frame, out[w])
                w += 1
                if w == len(wanted):
                    break
        self.close()  # the next read reopens; keeps seeking state simple
        if w < len(wanted):
            raise DecodeError(self.path, f"frame {wanted[w]} does not decode: the decoder stops "
                                         f"after {count} of the {self.index.num_frames} frames the "
                                         "index lists (the file changed since it was indexed?)")


def read_frames(path: str | Path, indices, max_short_side: int | None = None) -> np.ndarray:
    """Frames ``indices`` of ``path`` as (len(indices), H, W, 3) uint8 (opens and closes the file)."""
    with VideoReader(path, max_short_side=max_short_side) as reader:
        return reader.read(indices)
