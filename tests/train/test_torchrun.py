"""`torchrun -m tubelet train` end to end with 2 gloo processes on the CPU, for DDP and FSDP2.

Each run trains a few steps and checkpoints; a copy cut back to its first checkpoint is resumed
with ``--resume`` and must end with the same weights (so the optimiser's sharded momentum was
saved whole and restored); ``final/`` holds the full weights (FSDP: gathered from the shards,
equal to what DDP trains) and ``tubelet predict`` loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tubelet.train.state import LATEST, read_state

from .conftest import REPO, losses, run_tubelet, train_args

STEPS = 4  # checkpoints at 2 and 4; the resumed copy starts again from 2
RECIPE = ("--max-steps", str(STEPS), "--checkpoint-every", "2", "--optimizer", "sgd", "--lr", "0.05")


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tubelet", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


_runs: dict[str, Path] = {}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """parallel mode -> the folder of an uninterrupted 2-process run (each trained once per module)."""
    def run(parallel: str) -> Path:
        if parallel not in _runs:
            out = tmp_path_factory.mktemp(parallel) / "run"
            done = torchrun(train_args(tiny_data, out, *RECIPE, "--parallel", parallel))
            assert done.returncode == 0, done.stderr[-3000:]
            _runs[parallel] = out
        return _runs[parallel]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_trains_checkpoints_resumes_and_writes_a_final_model_predict_loads(
        parallel, trained, tiny_data, tmp_path):
    run = trained(parallel)
    final = weights(run / "final")
    last = run / "checkpoints" / f"step-{STEPS:07d}"
    # the checkpoint holds the full model and the optimiser's full momentum, keyed by parameter name
    saved = weights(last)
    for name, tensor in saved.items():
        assert torch.equal(tensor, final[name]), name  # no EMA: final/ is the last step's weights
    momentum = read_state(last)["optimizer"]["state"]
    assert set(momentum) == set(saved)
    for name, tensor in saved.items():
        assert momentum[name]["momentum_buffer"].shape == tensor.shape, name  # whole, not a shard
    assert torch.count_nonzero(final["head.weight"]) > 0  # trained: the head left its zeros

    # interrupted after the first checkpoint, then resumed: the same losses and the same weights
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "final")
    shutil.rmtree(cut / "checkpoints" / last.name)
    (cut / "checkpoints" / LATEST).write_text("step-0000002\n")
    resumed = torchrun(["train", "--out", str(cut), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from step-0000002" in resumed.stdout + resumed.stderr
    assert losses(cut) == pytest.approx(losses(run), abs=1e-6)
    again = weights(cut / "final")
    for name, tensor in final.items():
        assert torch.allclose(again[name], tensor, atol=1e-6), name

    # tubelet predict loads the final model and answers with the run's class names
    video = next((tiny_data / "validate").rglob("*.mp4"))
    predicted = run_tubelet(["predict", str(run / "final"), str(video), "--json", "--device", "cpu"],
                            timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    top = json.loads(predicted.stdout)[0]["heads"][0]["top"]
    classes = (tiny_data / "classes.txt").read_text().split("\n")
    assert len(top) == 5 and all(t["label"] in classes for t in top)


@pytest.mark.slow
def test_fsdp_gathers_the_weights_ddp_trains(trained):
    """The same global batch, data and initial weights: the shards FSDP gathers are DDP's model."""
    ddp, fsdp = weights(trained("ddp") / "final"), weights(trained("fsdp") / "final")
    assert set(ddp) == set(fsdp)
    for name, tensor in ddp.items():
        assert torch.allclose(fsdp[name], tensor, atol=1e-5), name
