"""`tubelet info` on a registry name and on model folders (checkpoint, run, transformers export)."""

from __future__ import annotations

import json

import pytest

from tubelet import ModelInfo, Preprocessing, ViViT, ViViTConfig, save_model
from tubelet.cli import main

TINY = dict(num_frames=4, image_size=(16, 16), patch_size=8, hidden_size=16, num_layers=1, num_heads=2,
            mlp_dim=32, num_classes=(2, 3))


@pytest.fixture
def run(tmp_path):
    model = ViViT(ViViTConfig(**TINY))
    model.info = ModelInfo(class_names=(("open", "close"), ("door", "tap", "jar")), head_names=("verb", "noun"),
                           preprocessing=Preprocessing(4, (16, 16), frame_stride=3),
                           provenance={"preset": "epic", "val_top1": float("nan")})
    save_model(model, tmp_path / "run" / "final")
    return tmp_path / "run"


def test_info_of_a_run_folder_shows_classes_and_preprocessing(run, capsys):
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "verb: open, close" in out and "noun: door, tap, jar" in out
    assert "4 frames at stride 3, 16x16 pixels" in out and "preset: epic" in out


def test_info_json_is_strict_json(run, capsys):
    assert main(["info", str(run / "final"), "--json", "--frames", "8"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))
    assert d["classes"]["head_names"] == ["verb", "noun"] and d["provenance"]["val_top1"] is None
    assert d["preprocessing"]["num_frames"] == 8 and d["input"] == [3, 8, 16, 16]


def test_info_of_a_transformers_export(run, tmp_path, capsys):
    pytest.importorskip("transformers")
    model = ViViT(ViViTConfig(**{**TINY, "num_classes": 2}))
    model.info = ModelInfo(class_names=(("open", "close"),))
    from tubelet.convert.hf import save_hf
    save_hf(model, tmp_path / "export")
    assert main(["info", str(tmp_path / "export")]) == 0
    assert "open, close" in capsys.readouterr().out


def test_info_of_a_folder_that_is_no_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a model folder" in err and "notes.txt" in err and len(err.strip().splitlines()) == 1


def test_info_of_a_registry_name_still_works(capsys):
    assert main(["info", "vivit_ti16x2", "--frames", "8", "--size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == [3, 8, 32, 32]
