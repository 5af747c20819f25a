"""torchrun with 2 gloo processes: identical replicas, equal to one process with the same global batch."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tubelet.data.synth import CLASSES
from tubelet.errors import CheckpointError

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

    rank0 = load_file(str(tmp_path / "two" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "two" / "rank1.safetensors"))
    single = load_file(str(tmp_path / "one" / "rank0.safetensors"))
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


def test_one_process_gathers_its_own_model_and_a_state_keyed_by_parameter_name():
    from tubelet.train.distributed import Runtime, gather_model, gather_optimizer_state, load_optimizer_state
    from tubelet.train.state import flatten_state

    from .test_state import trained

    model, opt, x = trained("sgd")
    main, other = Runtime(), Runtime(rank=1, world_size=1)
    assert gather_model(model, model, main) is model and gather_model(model, model, other) is None
    state = gather_optimizer_state(model, opt, main)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(state["state"]) == sorted(names)
    assert [p for g in state["param_groups"] for p in g["params"]] == [
        n for g in opt.param_groups for p in g["params"] for n, q in model.named_parameters() if q is p]
    assert flatten_state(state)[1]  # storable without pickle
    assert gather_optimizer_state(model, opt, other) is None

    for saved in (state, opt.state_dict()):  # by name, and by position (older checkpoints)
        fresh = torch.optim.SGD([{"params": g["params"]} for g in opt.param_groups], lr=1.0)
        load_optimizer_state(model, fresh, saved, main)
        for p in model.parameters():
            assert torch.equal(fresh.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])
        assert [g["weight_decay"] for g in fresh.param_groups] == [1e-2, 0.0]
        assert fresh.param_groups[0]["momentum"] == 0.9


    other_model = copy.deepcopy(state)  # a state of another model: its names do not match
    other_model["param_groups"][0]["params"][0] = "blocks.99.mlp.fc1.weight"
    with pytest.raises(CheckpointError, match="blocks.99.mlp.fc1.weight"):
        load_optimizer_state(model, opt, other_model, main)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp"])  # DDP's trivial gather is run by test_torchrun.py
def test_full_state_gathered_saved_and_resharded_follows_one_process(parallel, tmp_path):
    """gather_model / gather_optimizer_state / load_*_state under 2 gloo ranks, with an EMA copy
    sharded like the model: the gathered weights, momentum and average equal a single process's,
    before and after a resume from the checkpoint they make (``shard_worker.py ddp`` runs too)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    for attempt in range(2):
        out = tmp_path / f"run-{attempt}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "train" / "shard_worker.py"), parallel, str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        # A gloo rank has aborted while the two leave the group (SIGABRT: "terminate called without an
        # active exception"), about once in five full test runs under load and never in 32 runs of this
        # test alone: that signature, and only it, gets one more run, which must pass whole.
        if done.returncode == 0 or "terminate called without an active exception" not in done.stderr:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result.pop("sharded") == (parallel == "fsdp")
    assert result.pop("info_kept")
    assert set(result) == {"model", "momentum", "ema", "resumed_model", "resumed_ema"}
    for what, difference in result.items():
        assert difference <= 1e-6, (what, difference)
