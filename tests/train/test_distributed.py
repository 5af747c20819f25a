"""torchrun with 2 gloo processes: identical replicas, equal to one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tubelet.data.synth import CLASSES

from .conftest import REPO, train_args

WORKER = REPO / "tests" / "train" / "ddp_worker.py"


def launch(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(29500 + os.getpid() % 1000 + nproc), str(WORKER), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_same_global_batch(tiny_data, tmp_path):
    # global batch 4: two ranks x 2 clips, or one process x 2 micro-batches of 2 (accumulation)
    steps = ["--max-steps", "4", "--optimizer", "sgd", "--lr", "0.05"]
    two = launch(2, train_args(tiny_data, tmp_path / "two", *steps))
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(1, train_args(tiny_data, tmp_path / "one", *steps))
    assert one.returncode == 0, one.stderr[-3000:]

    rank0 = torch.load(tmp_path / "two" / "rank0.pt")
    rank1 = torch.load(tmp_path / "two" / "rank1.pt")
    single = torch.load(tmp_path / "one" / "rank0.pt")
    initial_moved = False
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks"
        assert torch.allclose(rank0[name], single[name], atol=1e-6), f"{name} differs from 1 process"
    # training did something: the head left its zero initialisation
    assert rank0["head.weight"].abs().sum() > 0

    # evaluation over 2 ranks counts every validation video exactly once
    counts = [json.loads((tmp_path / "two" / f"eval_rank{r}.json").read_text()) for r in (0, 1)]
    num_val = len(CLASSES)  # 1 validation video per class
    assert counts[0]["count"] == counts[1]["count"] == num_val
    assert counts[0]["indices"] == list(range(num_val))
