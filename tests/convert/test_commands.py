"""`tubelet convert`: the fixtures, transformers and image ViTs through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tubelet import load_model
from tubelet.cli import main

CASES = ["model1_spatiotemporal_token", "model1_uniform_frame_sampling_token",
         "model2_factorised_encoder_token", "model3_factorised_self_attention_gap",
         "model4_factorised_dot_product_gap"]


@pytest.mark.parametrize("suffix", ["npz", "msgpack"])
@pytest.mark.parametrize("name", CASES)
def test_fixture_through_the_command(scenic_fixtures, tmp_path, name, suffix):
    out = tmp_path / "ckpt"
    rc = main(["convert", "--from", "scenic", str(scenic_fixtures / f"{name}.{suffix}"),
               "--config", str(scenic_fixtures / f"{name}.json"), "--out", str(out)])
    assert rc == 0
    z = np.load(scenic_fixtures / f"{name}.npz")
    model = load_model(out)
    with torch.no_grad():
        logits = model(torch.from_numpy(z["x"]).permute(0, 4, 1, 2, 3))  # (B, T, H, W, C) -> (B, C, T, H, W)
    assert (logits - torch.from_numpy(z["logits"])).abs().max().item() < 1e-4


def test_at_another_clip_size_and_re_saved(scenic_fixtures, tmp_path):
    name = CASES[0]
    assert main(["convert", "--from", "scenic", str(scenic_fixtures / f"{name}.msgpack"), "--config",
                 str(scenic_fixtures / f"{name}.json"), "--num-frames", "16", "--image-size", "48x32",
                 "--out", str(tmp_path / "a")]) == 0
    model = load_model(tmp_path / "a")
    assert model.config.grid == (8, 6, 4)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 16, 48, 32))).all()
    assert main(["convert", "--from", "tubelet", str(tmp_path / "a"), "--num-frames", "4",
                 "--out", str(tmp_path / "b")]) == 0
    assert load_model(tmp_path / "b").encoder.pos_embed.shape == (1, 1 + 2 * 6 * 4, 32)


def test_wrong_model_is_a_one_line_error(scenic_fixtures, tmp_path, capsys):
    rc = main(["convert", "--from", "scenic", str(scenic_fixtures / f"{CASES[0]}.msgpack"),
               "--model", "vivit_ti16x2", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "tubelet convert: error:" in err and "num_layers=12" in err
    assert not (tmp_path / "x").exists()


def test_transformers_in_and_out(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.VivitForVideoClassification(transformers.VivitConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=32,
        num_frames=4, tubelet_size=[2, 8, 8], num_labels=3)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "t")]) == 0
    assert main(["convert", "--from", "tubelet", str(tmp_path / "t"), "--to", "hf",
                 "--out", str(tmp_path / "back")]) == 0
    back = transformers.VivitForVideoClassification.from_pretrained(tmp_path / "back").eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        want = hf(pixel_values=x.transpose(1, 2)).logits
        assert (load_model(tmp_path / "t")(x) - want).abs().max().item() < 1e-5
        assert (back(pixel_values=x.transpose(1, 2)).logits - want).abs().max().item() < 1e-5
    assert json.loads((tmp_path / "back" / "config.json").read_text())["hidden_act"] == "gelu_fast"


def test_image_vit_naming_is_detected_and_reported(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTModel(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
        patch_size=8))
    vit.save_pretrained(tmp_path / "vit")
    rc = main(["convert", "--from", "vit", str(tmp_path / "vit"), "--model", "vivit_ti16x2_fsa",
               "--set", "hidden_size=32", "--set", "num_layers=2", "--set", "num_heads=4",
               "--set", "mlp_dim=64", "--set", "patch_size=8", "--num-frames", "4", "--image-size", "32",
               "--num-classes", "7", "--kernel-init", "filter_inflation", "--out", str(tmp_path / "t")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "hf naming" in out and "GELU exact" in out and "eps 1e-12" in out
    model = load_model(tmp_path / "t")
    assert (model.config.kind, model.config.gelu, model.config.layer_norm_eps) == \
        ("factorised_self_attention", "exact", 1e-12)
    assert model.head.out_features == 7 and model.head.weight.abs().sum() == 0


# ------------------------------------------------------------------ heads, identity, paths, damage
TINY8 = dict(num_frames=4, image_size=(16, 16), patch_size=8, hidden_size=32, num_layers=1, num_heads=8,
             mlp_dim=32, num_classes=3)


def _tiny(tmp_path, name="ckpt", **changes):
    from tubelet import ModelInfo, ViViT, ViViTConfig, save_model

    model = ViViT(ViViTConfig(**{**TINY8, **changes}))
    model.info = ModelInfo(class_names=(("sit", "stand", "wave"),), provenance={"preset": "tiny"})
    return save_model(model, tmp_path / name), model


def test_set_num_heads_on_8_head_weights_is_an_error(tmp_path, capsys):
    src, _ = _tiny(tmp_path)
    rc = main(["convert", "--from", "tubelet", str(src), "--set", "num_heads=4", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "num_heads=8" in err and "set num_heads=8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_set_num_heads_against_reference_kernels(scenic_fixtures, tmp_path, capsys):
    name = CASES[0]
    heads = json.loads((scenic_fixtures / f"{name}.json").read_text())["num_heads"]
    rc = main(["convert", "--from", "scenic", str(scenic_fixtures / f"{name}.npz"), "--config",
               str(scenic_fixtures / f"{name}.json"), "--set", f"num_heads={heads // 2}",
               "--out", str(tmp_path / "x")])
    assert rc == 2
    assert f"set num_heads={heads}" in capsys.readouterr().err


def test_set_num_heads_against_a_transformers_config(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    transformers.VivitForVideoClassification(transformers.VivitConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=32,
        num_frames=4, tubelet_size=[2, 8, 8], num_labels=3)).save_pretrained(tmp_path / "hf")
    rc = main(["convert", "--from", "hf", str(tmp_path / "hf"), "--set", "num_heads=2", "--out", str(tmp_path / "x")])
    assert rc == 2 and "set num_heads=4" in capsys.readouterr().err


def test_to_gqa_and_from_tubelet_keep_the_identity(tmp_path):
    src, model = _tiny(tmp_path, "run/final")
    run = tmp_path / "run"
    header = json.loads((src / "config.json").read_text())  # a version-1 folder with classes.json
    (src / "config.json").write_text(json.dumps({"format": "tubelet", "version": 1, "config": header["config"]}))
    (src / "classes.json").write_text(json.dumps({"class_names": [["sit", "stand", "wave"]], "head_names": None}))
    assert main(["convert", "--from", "tubelet", str(run), "--to-gqa", "2", "--out", str(tmp_path / "gqa")]) == 0
    gqa = load_model(tmp_path / "gqa")
    assert gqa.config.num_kv_heads == 2 and gqa.info.class_names == (("sit", "stand", "wave"),)
    assert gqa.info.provenance["gqa"] == {"num_kv_heads_before": 8, "num_kv_heads": 2}
    assert main(["convert", "--from", "tubelet", str(tmp_path / "gqa"), "--num-frames", "8",
                 "--out", str(tmp_path / "long")]) == 0
    info = load_model(tmp_path / "long").info
    assert info.class_names == (("sit", "stand", "wave"),) and info.provenance["gqa"]["num_kv_heads"] == 2


def test_damaged_source_is_a_one_line_error(tmp_path, capsys):
    src, _ = _tiny(tmp_path)
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["convert", "--from", "tubelet", str(src), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err and "damaged" in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["convert", "--from", "scenic", str(bad), "--model", "vivit_ti16x2", "--out", str(tmp_path / "y")]) == 1
    assert "bad.npz" in capsys.readouterr().err


def test_hub_processor_is_recorded_reported_and_exported_back(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    names = {0: "sit", 1: "stand", 2: "wave"}
    transformers.VivitForVideoClassification(transformers.VivitConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=32,
        num_frames=4, tubelet_size=[2, 8, 8], id2label=names,
        label2id={v: k for k, v in names.items()})).save_pretrained(tmp_path / "hf")
    transformers.VivitImageProcessor().save_pretrained(tmp_path / "hf")  # the hub's [-3, 1]
    assert main(["convert", "--from", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "3 class names from id2label (sit, stand, wave)" in out and "[-3, 1]" in out
    header = json.loads((tmp_path / "t" / "config.json").read_text())
    assert header["classes"]["class_names"] == [["sit", "stand", "wave"]]
    assert header["preprocessing"]["pixel_mean"] == pytest.approx([0.75] * 3)
    assert header["preprocessing"]["pixel_std"] == pytest.approx([0.25] * 3)
    assert main(["convert", "--from", "tubelet", str(tmp_path / "t"), "--to", "hf", "--out", str(tmp_path / "b")]) == 0
    back = load_model(tmp_path / "b")  # a transformers folder loads directly
    assert back.info.class_names == (("sit", "stand", "wave"),)
    assert back.info.preprocessing.pixel_range == pytest.approx((-3.0, 1.0))
