"""--device: one reading for every command, a wrong value refused at once with what to use instead."""

import pytest
import torch

from tubelet.cli import main
from tubelet.devices import resolve_device
from tubelet.errors import ConfigError

from .conftest import FIXTURES

MODEL = str(FIXTURES / "models" / "micro-synth")
VIDEO = str(FIXTURES / "videos" / "cup.mp4")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_the_default_is_the_gpu_when_there_is_one_else_the_cpu(no_gpu):
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_the_default_under_torchrun_is_the_processs_own_gpu(two_gpus):
    assert resolve_device(None, default="cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize("spec, says", [
    ("gpu", "not a device; use cpu, cuda or cuda:N"),
    ("", "not a device"),
    ("meta", "does not run on 'meta' devices"),
])
def test_a_name_that_is_no_device_is_refused_with_the_names_to_use(spec, says):
    with pytest.raises(ConfigError, match=says):
        resolve_device(spec)


def test_a_gpu_this_machine_lacks_is_refused_naming_the_cpu(no_gpu):
    with pytest.raises(ConfigError, match="no cuda device .*use --device cpu"):
        resolve_device("cuda")


def test_a_gpu_index_past_the_last_names_the_ones_there(two_gpus):
    with pytest.raises(ConfigError, match=r"has 2 cuda devices \(indices 0 to 1\)"):
        resolve_device("cuda:2")


COMMANDS = {
    "predict": ["predict", MODEL, VIDEO],
    "eval": ["eval", MODEL, "--data", str(FIXTURES / "videos")],
    "caption": ["caption", MODEL, VIDEO],
    "serve": ["serve", MODEL],
    "generate": ["generate", "--target", "smollm2", "--prompt", "x"],
    "draft distill": ["draft", "distill", "--target", "smollm2", "--layers", "1", "--corpus", VIDEO,
                      "--out", "unused"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device, says", [("gpu", "device 'gpu': not a device"),
                                          ("cuda", "device 'cuda': this machine has no cuda device")])
def test_every_command_refuses_a_wrong_device_in_one_line_before_loading_anything(
        command, device, says, no_gpu, capsys, tmp_path, monkeypatch):
    # before: 'gpu' was a RuntimeError traceback, and 'cuda' on a machine without one called the
    # model file "truncated or damaged" (its loader failed to pin memory for a GPU)
    monkeypatch.chdir(tmp_path)
    assert main([*COMMANDS[command], "--device", device]) == 2
    err = capsys.readouterr().err
    assert f"tubelet {command.split()[0]}: error: {says}" in err and "damaged" not in err, err


def test_train_refuses_a_wrong_device_before_writing_its_run_folder(no_gpu, capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "default", "--runtime.out", str(out), "--device", "cuda:0"]) == 2
    assert "device 'cuda:0': this machine has no cuda device" in capsys.readouterr().err
    assert not out.exists()
