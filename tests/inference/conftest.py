"""Built-in videos, a tiny model with random weights saved as a checkpoint, a run folder and a
transformers export of it: fast enough for every test of the inference package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tubelet
from tubelet.data.synth import SynthConfig, generate
from tubelet.models.info import ModelInfo, Preprocessing

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 32, "temporal_layers": 1}


def tiny_model(kind: str = "spatiotemporal", classes=None, frames: int = 4, stride: int = 1,
               seed: int = 0, **overrides) -> tubelet.ViViT:
    """A 32x32 model with random weights (a zero head would give every class the same score)."""
    classes = classes or SynthConfig().classes
    heads = [classes] if isinstance(classes[0], str) else classes
    torch.manual_seed(seed)
    model = tubelet.create_model("vivit_micro", kind=kind, num_classes=tuple(len(h) for h in heads)
                                 if len(heads) > 1 else len(heads[0]), num_frames=frames, image_size=32,
                                 classifier="gap" if kind.startswith("factorised_") and kind != "factorised_encoder"
                                 else "token", **{**TINY, **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.info = ModelInfo(class_names=heads, preprocessing=Preprocessing(frames, (32, 32), frame_stride=stride))
    return model


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """The built-in dataset in small: one 32x32, 8-frame H.264 video per class (class folders)."""
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, SynthConfig(videos_per_class=1, val_videos_per_class=0, size=32, frames=8),
             progress=False, workers=1)
    return out / "train"


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """A run folder whose final/ model is :func:`tiny_model`."""
    folder = tmp_path_factory.mktemp("run")
    tubelet.save_model(tiny_model(), folder / "final")
    return folder


@pytest.fixture(scope="session")
def hf_export(run, tmp_path_factory) -> Path:
    """``tubelet convert --from tubelet RUN --to hf`` of the run."""
    from tubelet.cli import main
    out = tmp_path_factory.mktemp("hf") / "export"
    assert main(["convert", "--from", "tubelet", str(run), "--to", "hf", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "vivit"
    return out
