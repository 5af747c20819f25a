"""A tiny built-in dataset and a tiny model, so whole training runs take seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tubelet.data.synth import SynthConfig, generate
from tubelet.train.logging import read_metrics

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 32, "temporal_layers": 1}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, SynthConfig(videos_per_class=3, val_videos_per_class=1, size=32, frames=8),
             progress=False, workers=2)
    return out


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--num-frames", "8", "--image-size", "32",
            "--frame-stride", "1", "--model-args", json.dumps(TINY_MODEL), "--batch-size", "4",
            "--micro-batch-size", "2", "--workers", "0", "--augment", "none", "--eval-views", "1",
            "--eval-crops", "1", "--log-every", "1", "--lr", "0.001", *extra]


def run_tubelet(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tubelet", *args], env=env, capture_output=True,
                          text=True, **kw)


def losses(run: Path) -> dict[int, float]:
    # read_metrics: the test polls the file while the run appends to it, so a line may be half there
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"}
