"""Helpers for tests/data: small videos written with PyAV (64x48, ~20 frames, a moving bar)."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec -> (container suffix, encoder options). Short GOPs so seeking has keyframes to find;
# x264 keeps its B-frames so presentation and decode order differ.
CODECS = {
    "h264": (".mp4", "libx264", {"g": "6", "bf": "2", "preset": "veryfast"}),
    "vp9": (".webm", "libvpx-vp9", {"g": "6", "deadline": "realtime", "cpu-used": "8"}),
    "mpeg4": (".avi", "mpeg4", {"g": "6", "bf": "1"}),
}


def frame_pattern(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(H, W, 3) uint8 frame ``i``: a bar moving right over a ground whose colour changes."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (40 + 9 * i) % 256
    img[..., 1] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    img[..., 2] = 90
    x = (3 * i) % (width - 8)
    img[height // 4: height // 2, x:x + 8] = 255
    return img


def write_video(path: Path, codec: str = "h264", frames: int = 20, width: int = 64,
                height: int = 48, fps: int = 25, pts: list[int] | None = None) -> Path:
    """Encode ``frames`` pattern frames; ``pts`` (in 1/fps units) gives a variable frame rate."""
    suffix, encoder, options = CODECS[codec]
    path = Path(path).with_suffix(suffix)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options)
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, height, width), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def full_decode(path: Path) -> list[np.ndarray]:
    """Every frame of a plain decode from the start, as PyAV gives it: the ground truth."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write_empty_tail(path: Path, frames: int = 30) -> Path:
    """An H.264 MP4 with B-frames whose last packet decodes to no frame (``frames + 1`` packets).

    The tail is an H.264 end-of-sequence NAL unit in a packet of its own, as some encoders and
    cutters write it: FFmpeg plays ``frames`` frames, while counting packets gives one more.
    """
    path = Path(path).with_suffix(".mp4")
    source = write_video(path.with_name(path.stem + "_source"), "h264", frames=frames)
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        last = None
        for packet in src.demux(stream):
            if packet.size == 0:
                continue
            last = (packet.pts, packet.dts, packet.duration, packet.time_base)
            packet.stream = out
            dst.mux(packet)
        pts, dts, duration, time_base = last
        end_of_sequence = av.Packet(struct.pack(">I", 1) + bytes([0x0A]))  # AVCC: length + NAL
        end_of_sequence.pts = max(pts, dts) + duration
        end_of_sequence.dts = dts + duration
        end_of_sequence.time_base, end_of_sequence.stream = time_base, out
        dst.mux(end_of_sequence)
    source.unlink()
    return path


def packet_count(path: Path) -> int:
    """Packets of the video stream that carry data (what a packet-counting index would list)."""
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(video=0) if p.size)
