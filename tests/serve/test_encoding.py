"""The attention map's compact form and the model's description, without a server."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import torch

import tubelet
from tubelet.inference.pipeline import Pipeline
from tubelet.models.info import ModelInfo, Preprocessing
from tubelet.serve.runners import Classifier
from tubelet.serve.encoding import encode_explanation, png


def png_pixels(data: bytes) -> np.ndarray:
    """(H, W, 3) pixels of an unfiltered 8-bit RGB PNG (what :func:`png` writes)."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    w, h = struct.unpack(">II", data[16:24])
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def test_png_holds_the_pixels():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (png_pixels(png(image)) == image).all()


def test_the_map_is_pooled_quantised_and_keeps_each_frames_share():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    heat = rng.random((3, 64, 48)).astype(np.float32)
    heat[1] *= 2
    heat /= heat.sum()
    out = encode_explanation(frames, heat)
    assert (out["frames"], out["height"], out["width"]) == (3, 64, 48)
    assert out["map"]["shape"] == [3, 32, 32]
    cells = np.frombuffer(base64.b64decode(out["map"]["data"]), np.uint8).reshape(3, 32, 32)
    assert cells.max() == 255
    assert np.allclose(out["frame_mass"], heat.sum(axis=(1, 2)), atol=1e-6) and abs(sum(out["frame_mass"]) - 1) < 1e-5
    shown = png_pixels(base64.b64decode(out["images"][0].split(",", 1)[1]))
    assert (shown == frames[0]).all()  # 64 px: under 128, kept whole


def test_the_description_names_every_head():
    torch.manual_seed(0)
    model = tubelet.create_model("vivit_micro", num_classes=(3, 2), num_frames=4, image_size=32, hidden_size=32,
                                 num_layers=1, num_heads=2, mlp_dim=32)
    model.info = ModelInfo(class_names=[["cut", "open", "wash"], ["knife", "door"]], head_names=("verb", "noun"),
                           preprocessing=Preprocessing(4, (32, 32), frame_stride=2))
    described = Classifier(Pipeline(model, device="cpu")).describe("ek")
    assert described["heads"] == [{"name": "verb", "classes": ["cut", "open", "wash"]},
                                  {"name": "noun", "classes": ["knife", "door"]}]
    assert described["preprocessing"]["stride"] == 2 and described["name"] == "ek"
