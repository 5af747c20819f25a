"""The training state: safetensors + JSON read back identical, no pickle ever run; and what a kill
leaves behind (checkpoint temporaries, a half-written metrics line) does not survive."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import tubelet
from tubelet.errors import CheckpointError
from tubelet.train.init import _tubelet_checkpoint
from tubelet.train.logging import MetricLog, read_metrics
from tubelet.train.state import (LATEST, LEGACY_STATE_FILE, STATE_FILE, TENSORS_FILE, latest_checkpoint,
                                 load_checkpoint, rng_states, save_checkpoint, saved_step, set_rng_states)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, num_classes=3, hidden_size=16,
                                num_layers=1, num_heads=2, mlp_dim=32)


def test_next_checkpoint_removes_what_a_killed_writer_left(tmp_path):
    model = tiny_model()
    root = tmp_path / "checkpoints"
    (root / ".step-0000009.akxzleok").mkdir(parents=True)  # a kill inside save_checkpoint
    (root / ".step-0000009.akxzleok" / "model.safetensors").write_bytes(b"half")
    (root / f".{LATEST}.q1w2e3.tmp").write_text("step-0000009")  # a kill while replacing the pointer

    final = save_checkpoint(tmp_path, model, {"step": 9}, step=9)

    assert sorted(p.name for p in root.iterdir()) == [LATEST, "step-0000009"]
    assert latest_checkpoint(tmp_path) == final
    assert load_checkpoint(final)[1] == {"step": 9}


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_and_resuming_rewrites_the_rest(tmp_path):
    log = MetricLog(tmp_path, enabled=True)
    for step in (1, 2, 3):
        log.write("train", step, loss=float(step))
    log.close()
    with log.path.open("a") as f:
        f.write('{"kind": "train", "step": 4, "lo')  # the kill landed inside the write of step 4
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3]

    log.truncate_after(2)  # resuming from the checkpoint of step 2
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2]
    assert log.path.read_text().endswith("\n") and not list(tmp_path.glob(".metrics*"))


def test_a_damaged_line_before_the_last_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 1.0}\nnot json\n{"kind": "train", "step": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)


# ---------------------------------------------------------------------- the state without pickle
def trained(optimizer: str, steps: int = 3) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """A tiny model after ``steps`` optimiser steps (momentum / Adam moments are non-trivial)."""
    model = tiny_model()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 1e-2}, {"params": rest, "weight_decay": 0.0}]
    opt = (torch.optim.SGD(groups, lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.999)))
    x = torch.randn(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        step(model, opt, x)
    return model, opt, x


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def assert_identical(got, want, path="state"):
    """Equal values of the same types all the way down (tuples stay tuples, arrays keep their dtype)."""
    assert type(got) is type(want), (path, type(got), type(want))
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want), path
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and np.array_equal(got, want), path
    elif isinstance(want, dict):
        assert list(got) == list(want), path
        for k in want:
            assert_identical(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_identical(g, w, f"{path}/{i}")
    else:
        assert got == want, path


def loop_state(opt: torch.optim.Optimizer, ema: dict | None) -> dict:
    """A state like the training loop's ``Trainer._state``."""
    return {"optimizer": opt.state_dict(), "step": 3, "epoch": 1, "micro_in_epoch": 2, "rng": rng_states(),
            "ema": ema, "total_steps": 24, "class_names": [["pour", "stir"], ["cup", "pan"]],
            "head_names": ["verb", "noun"],
            "train_config": {"lr": 0.05, "model_args": {"hidden_size": 16}, "max_steps": None,
                             "init": None, "eval_average": "logits", "min_lr": 0.0}}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_training_state_reads_back_identical_from_safetensors_and_json(tmp_path, optimizer):
    model, opt, _ = trained(optimizer)
    random.random(), np.random.standard_normal()  # numpy now caches a gaussian: its state has a float
    state = loop_state(opt, ema={k: v.clone() for k, v in model.state_dict().items()})

    folder = save_checkpoint(tmp_path, model, state, step=3)

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.safetensors", STATE_FILE, TENSORS_FILE])
    header = json.loads((folder / STATE_FILE).read_text(), parse_constant=pytest.fail)  # strict JSON
    assert header["state"]["step"] == 3 and header["state"]["class_names"] == [["pour", "stir"], ["cup", "pan"]]
    assert latest_checkpoint(tmp_path) == folder and saved_step(folder) == 3
    _, loaded = load_checkpoint(folder)
    assert_identical(loaded, state)
    moments = {"sgd": ["momentum_buffer"], "adamw": ["step", "exp_avg", "exp_avg_sq"]}[optimizer]
    assert sorted(loaded["optimizer"]["state"][0]) == sorted(moments)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_resumed_optimiser_takes_exactly_the_step_of_an_uninterrupted_one(tmp_path, optimizer):
    straight, opt, x = trained(optimizer, steps=3)
    step(straight, opt, x)  # the 4th step, uninterrupted

    model, opt, x = trained(optimizer, steps=3)
    folder = save_checkpoint(tmp_path, model, {"optimizer": opt.state_dict()}, step=3)
    resumed, saved = load_checkpoint(folder)
    # a fresh optimiser over the loaded model, as a resumed run builds it
    decay = [p for p in resumed.parameters() if p.dim() >= 2]
    rest = [p for p in resumed.parameters() if p.dim() < 2]
    fresh = (torch.optim.SGD([{"params": decay}, {"params": rest}], lr=1.0, momentum=0.0)
             if optimizer == "sgd" else torch.optim.AdamW([{"params": decay}, {"params": rest}], lr=1.0))
    fresh.load_state_dict(saved["optimizer"])  # lr, momentum, weight decay and moments come from the state
    step(resumed, fresh, x)
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_the_random_streams_continue_identically_after_a_round_trip(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.gauss(0, 1), np.random.standard_normal()  # cached gaussians are part of the state
    folder = save_checkpoint(tmp_path, tiny_model(), {"rng": rng_states()}, step=1)

    def draws():
        return ([random.random() for _ in range(3)], random.gauss(0, 1), np.random.standard_normal(3).tolist(),
                np.random.randint(0, 2**31, 3).tolist(), torch.rand(3).tolist())

    expected = draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # elsewhere in between
    set_rng_states(load_checkpoint(folder)[1]["rng"])
    assert draws() == expected


def test_a_legacy_train_state_pt_of_tensors_and_numpy_is_still_read(tmp_path):
    model, opt, _ = trained("sgd")
    state = loop_state(opt, ema=None)
    folder = tmp_path / "checkpoints" / "step-0000003"
    tubelet.save_model(model, folder)
    torch.save(state, folder / LEGACY_STATE_FILE)  # what tubelet wrote before: a pickle of plain data
    (folder.parent / LATEST).write_text("step-0000003\n")

    assert latest_checkpoint(tmp_path) == folder
    assert saved_step(folder) == 3
    assert_identical(load_checkpoint(folder)[1], state)


class WritesAFile:
    """Unpickling this runs a shell command that writes a file: what a crafted checkpoint can do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.target}",)


def plant_malicious_state(folder: Path, target: Path) -> None:
    tubelet.save_model(tiny_model(), folder)
    torch.save({"step": 3, "optimizer": WritesAFile(target)}, folder / LEGACY_STATE_FILE)  # as tubelet did


def test_the_planted_pickle_really_runs_code_when_unpickled_freely(tmp_path):
    """The payload of the next test is live: today's readers would have run it."""
    target = tmp_path / "pwned"
    plant_malicious_state(tmp_path / "ckpt", target)
    torch.load(tmp_path / "ckpt" / LEGACY_STATE_FILE, weights_only=False)
    assert target.read_text().strip() == "pwned"


def test_resume_and_init_refuse_a_planted_pickle_and_nothing_runs(tmp_path):
    target = tmp_path / "pwned"
    folder = tmp_path / "run" / "checkpoints" / "step-0000003"
    plant_malicious_state(folder, target)
    (folder.parent / LATEST).write_text("step-0000003\n")

    assert latest_checkpoint(tmp_path / "run") == folder  # a resume finds it ...
    with pytest.raises(CheckpointError, match=f"{LEGACY_STATE_FILE}.*refuses to unpickle.*--init"):
        load_checkpoint(folder)  # ... and refuses it
    for given in (folder, tmp_path / "run"):  # --init with the checkpoint or its run folder
        found = _tubelet_checkpoint(given) if given == folder else (folder, latest_checkpoint(given))
        assert found is not None and found[1] == folder
        with pytest.raises(CheckpointError, match="refuses to unpickle"):
            saved_step(found[1])
    assert not target.exists()


def test_a_damaged_state_is_a_checkpoint_error_naming_the_file(tmp_path):
    folder = save_checkpoint(tmp_path, tiny_model(), {"step": 1, "x": torch.ones(2)}, step=1)
    (folder / TENSORS_FILE).write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match=TENSORS_FILE):
        load_checkpoint(folder)
    (folder / STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=STATE_FILE):
        saved_step(folder)


@pytest.mark.slow
def test_tubelet_train_resume_and_init_refuse_a_planted_pickle_with_a_message(tiny_data, tmp_path):
    from .conftest import run_tubelet, train_args

    run = tmp_path / "run"
    done = run_tubelet(train_args(tiny_data, run, "--max-steps", "1"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = latest_checkpoint(run)
    target = tmp_path / "pwned"
    for name in (STATE_FILE, TENSORS_FILE):  # as an old run someone sent would look
        (folder / name).unlink()
    torch.save({"step": 1, "optimizer": WritesAFile(target)}, folder / LEGACY_STATE_FILE)

    resumed = run_tubelet(["train", "--out", str(run), "--resume"], timeout=300)
    init = run_tubelet(train_args(tiny_data, tmp_path / "new", "--max-steps", "1", "--init", str(folder)),
                       timeout=300)
    for refused in (resumed, init):
        assert refused.returncode == 1, refused.stderr[-2000:]
        assert "refuses to unpickle" in refused.stderr and "Traceback" not in refused.stderr
    assert not target.exists()
