"""A tiny checkpoint, built-in videos, and the real `tubelet serve` process on loopback
(:mod:`tubelet.serve.client` starts it and speaks HTTP with the standard library)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

import tubelet
from tubelet.data.synth import CLASSES, SynthConfig, render, write_mp4
from tubelet.models.info import ModelInfo, Preprocessing
from tubelet.serve.client import running

pytest.importorskip("starlette", reason="the server needs: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the server needs: pip install -e '.[serve]'")
pytest.importorskip("python_multipart", reason="the server needs: pip install -e '.[serve]'")

MICRO_SYNTH = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "micro-synth"


def save_tiny_checkpoint(folder: Path) -> Path:
    """A 32x32, 4-frame Model 1 with random weights (non-zero, so that classes score apart)."""
    torch.manual_seed(0)
    model = tubelet.create_model("vivit_micro", num_classes=len(CLASSES), num_frames=4, image_size=32,
                                 hidden_size=32, num_layers=1, num_heads=2, mlp_dim=32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.info = ModelInfo(class_names=[CLASSES], preprocessing=Preprocessing(4, (32, 32), frame_stride=1))
    tubelet.save_model(model, folder)
    return folder


def built_in_video(path: Path, label: int = 0, size: int = 32, frames: int = 16, seed: int = 0) -> Path:
    """A video of the built-in dataset's class ``label`` (0: moving left), written as H.264."""
    write_mp4(path, render(label, np.random.default_rng(seed), SynthConfig(size=size, frames=frames)), fps=8)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve-model") / "tiny")


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return built_in_video(tmp_path_factory.mktemp("serve-videos") / "moving-left.mp4")


@contextlib.contextmanager
def running_server(checkpoint: Path, *flags: str, tmp: Path):
    """The real server (`python -m tubelet serve CHECKPOINT --port 0 FLAGS`) with TMPDIR=tmp; its
    upload folder must be gone once it has stopped."""
    with running(checkpoint, *flags, env={"TMPDIR": str(tmp)}, log=tmp / "serve.stderr") as served:
        yield served
    assert not served.uploads.exists(), f"the upload folder {served.uploads} was left behind"
