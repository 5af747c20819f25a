"""Export: ONNX run by onnxruntime within 1e-4 of PyTorch for Models 1-4 and the average-pool
baseline, a torch.export program, torch.jit.trace, and the class names and preprocessing that
travel with each."""

from __future__ import annotations

import json

import pytest
import torch

import tubelet
from tubelet.cli import main
from tubelet.inference.export import export_model, trace

from .conftest import tiny_model

KINDS = ["spatiotemporal", "factorised_encoder", "factorised_self_attention", "factorised_dot_product",
         "average_pool"]


def clips(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runs_in_onnxruntime_with_pytorch_logits(kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny_model(kind, num_kv_heads=1 if kind == "spatiotemporal" else None)  # Model 1 with GQA
    path = export_model(model, tmp_path, "onnx", dynamic_batch=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = clips(3)  # another batch size than the export's example
    (got,) = session.run(["logits"], {"video": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert want.std() > 0.1  # random weights: logits that differ, so a wrong graph shows
    assert (torch.from_numpy(got) - want).abs().max() < 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["tubelet.classes"])["class_names"] == [list(model.info.class_names[0])]
    assert json.loads(meta["tubelet.preprocessing"])["frame_stride"] == 1


def test_exported_program_and_its_description(run, tmp_path):
    model = tubelet.load_model(run)
    assert main(["export", str(run), "--format", "exported-program", "--out", str(tmp_path / "ep"),
                 "--dynamic-batch"]) == 0
    program = torch.export.load(str(tmp_path / "ep" / "model.pt2"))
    x = clips(3)
    with torch.no_grad():
        assert (program.module()(x) - model(x)).abs().max() < 1e-5
    info = json.loads((tmp_path / "ep" / "tubelet.json").read_text())
    assert info["classes"]["class_names"] == [list(model.info.class_names[0])]
    assert info["preprocessing"] == model.info.preprocessing.to_dict()
    assert info["export"]["input"]["shape"] == ["batch", 3, 4, 32, 32]
    assert tubelet.ViViTConfig.from_dict(info["config"]) == model.config


def test_onnx_through_the_command(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "x")]) == 0
    assert "tubelet.json" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "x" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 4, 32, 32]  # a fixed batch of 1 by default
    (got,) = session.run(None, {"video": clips(1).numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(got) - tubelet.load_model(run)(clips(1))).abs().max() < 1e-4
    assert main(["export", str(run), "--format", "exported-program", "--opset", "17",
                 "--out", str(tmp_path / "y")]) == 2  # --opset is ONNX's


@pytest.mark.parametrize("kind", KINDS)
def test_torch_jit_trace_works(kind):
    """It failed with "scaled_dot_product_attention(): argument 'enable_gqa' must be bool"."""
    model = tiny_model(kind)
    traced = trace(model, clips(2))
    with torch.no_grad():
        assert (traced(clips(3, seed=2)) - model(clips(3, seed=2))).abs().max() < 1e-5


def test_onnx_without_its_extra_names_the_extra(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # as if not installed
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "x")]) == 1
    assert "pip install 'tubelet[onnx]'" in capsys.readouterr().err
