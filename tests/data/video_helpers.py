"""Helpers for tests/data: small videos written with PyAV (64x48, ~20 frames, a moving bar)."""

from __future__ import annotations

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
