"""A run killed with SIGKILL at any moment resumes exactly: same losses, no half checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tubelet.checkpoint import load_model
from tubelet.train.state import STATE_FILE

from .conftest import REPO, losses, run_tubelet, train_args

STEPS = 24  # 30 training clips / batch 4 = 7 steps per epoch: the run crosses three epochs


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_losses(tiny_data, tmp_path):
    common = ("--max-steps", str(STEPS), "--checkpoint-every", "3", "--optimizer", "sgd")
    straight = run_tubelet(train_args(tiny_data, tmp_path / "straight", *common), timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = losses(tmp_path / "straight")
    assert sorted(expected) == list(range(1, STEPS + 1))

    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tubelet", *train_args(tiny_data, run, *common)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # kill it once it is past its second checkpoint and inside an epoch (step 8 = epoch 1, batch 1)
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and max(losses(run), default=0) >= 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = max(losses(run))
    assert done_before < STEPS

    # every checkpoint under a real name is complete and loads
    folders = sorted((run / "checkpoints").glob("step-*"))
    assert folders
    for folder in folders:
        assert (folder / STATE_FILE).is_file()
        load_model(folder)

    resumed = run_tubelet([*train_args(tiny_data, run, *common), "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))  # every step logged once, none missing
    for step in range(1, STEPS + 1):
        assert abs(got[step] - expected[step]) <= 1e-6, (step, got[step], expected[step])
    assert not list((run / "checkpoints").glob(".step-*")), "a temporary checkpoint folder was left behind"


def test_an_existing_run_is_not_overwritten_without_resume(tiny_data, tmp_path):
    args = train_args(tiny_data, tmp_path / "run", "--max-steps", "1")
    assert run_tubelet(args, timeout=300).returncode == 0
    again = run_tubelet(args, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr
