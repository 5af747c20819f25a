"""The attention map in a compact form for a web page: the frames the model saw as small PNG
images, and the map pooled to a coarse grid and quantised to bytes.

    {"frames": T, "height": H, "width": W,            # the frames' size the map is over
     "images": ["data:image/png;base64,...", ...],    # the T frames, at most 128 px a side
     "map": {"shape": [T, h, w], "scale": s, "data": "<base64 of T*h*w uint8>"},
     "frame_mass": [m_0, ..., m_T-1]}                 # the map's share of each frame, summing to 1

Cell ``(t, y, x)`` of the map (at most 32 x 32 cells a frame, means of the pixels they cover)
is ``data[t*h*w + y*w + x] * scale``: 255 is the largest cell of the whole video.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F

MAX_IMAGE_SIDE = 128
MAX_MAP_SIDE = 32


def png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> the bytes of a PNG file (no filter, zlib level 6)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w, _ = image.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1)  # filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def data_url(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def shrink(frames: np.ndarray, side: int) -> np.ndarray:
    """(T, H, W, 3) -> every k-th pixel so that no side is over ``side`` (a preview, not a resize)."""
    step = -(-max(frames.shape[1:3]) // side)
    return frames[:, ::step, ::step]


def pool_map(attention: np.ndarray, side: int) -> np.ndarray:
    """(T, H, W) -> (T, h, w) cell means with h, w <= side (adaptive average pooling)."""
    t, h, w = attention.shape
    out = (min(h, side), min(w, side))
    return F.adaptive_avg_pool2d(torch.as_tensor(attention, dtype=torch.float32)[:, None], out)[:, 0].numpy()


def encode_explanation(frames: np.ndarray, attention: np.ndarray) -> dict:
    """The ``"explain"`` field of a response from :meth:`Pipeline.explain`'s frames (T, H, W, 3)
    uint8 and map (T, H, W) float32 summing to 1."""
    attention = np.asarray(attention, dtype=np.float32)
    t, h, w = attention.shape
    cells = pool_map(attention, MAX_MAP_SIDE)
    top = float(cells.max())
    quantised = np.zeros(cells.shape, np.uint8) if top <= 0 else np.rint(cells / top * 255).astype(np.uint8)
    return {"frames": t, "height": h, "width": w,
            "images": [data_url(png(f)) for f in shrink(np.asarray(frames), MAX_IMAGE_SIDE)],
            "map": {"shape": list(cells.shape), "scale": top / 255,
                    "data": base64.b64encode(quantised.tobytes()).decode("ascii")},
            "frame_mass": [round(float(m), 6) for m in attention.sum(axis=(1, 2))]}
