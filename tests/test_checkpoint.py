"""The tubelet checkpoint folder: save, load, resize on load, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from tubelet import CheckpointError, ModelInfo, Preprocessing, ViViT, load_model, read_info, save_model
from tubelet.checkpoint import resolve_model_path
from tubelet.models import ConfigError, ViViTConfig

TINY = dict(num_frames=4, image_size=(16, 16), patch_size=8, tubelet_size=2, hidden_size=16,
            num_layers=1, num_heads=2, mlp_dim=32, temporal_layers=1, num_classes=3)


@pytest.mark.parametrize("kind,classifier", [("spatiotemporal", "token"), ("factorised_encoder", "token"),
                                             ("factorised_self_attention", "gap")])
def test_round_trip_is_exact(tmp_path, kind, classifier):
    torch.manual_seed(0)
    model = ViViT(ViViTConfig(kind=kind, classifier=classifier, **TINY)).eval()
    torch.nn.init.normal_(model.head.weight)
    save_model(model, tmp_path / "ckpt")
    header = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert header["format"] == "tubelet" and header["config"]["kind"] == kind
    loaded = load_model(tmp_path / "ckpt")
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not list((tmp_path / "ckpt").glob(".*tmp"))  # no temporary files left


def test_load_at_other_clip_size_resizes_pos_embed(tmp_path):
    model = ViViT(ViViTConfig(**TINY))
    save_model(model, tmp_path)
    bigger = load_model(tmp_path, num_frames=8, image_size=32)
    assert bigger.encoder.pos_embed.shape == (1, 1 + 4 * 4 * 4, 16)
    torch.testing.assert_close(bigger.encoder.pos_embed[:, 0], model.encoder.pos_embed[:, 0])
    with torch.no_grad():
        assert bigger(torch.randn(1, 3, 8, 32, 32)).shape == (1, 3)


def test_mismatch_names_tensor_shapes_and_field(tmp_path):
    save_model(ViViT(ViViTConfig(**TINY)), tmp_path)
    with pytest.raises(ConfigError, match=r"'head.weight'.*\(3, 16\).*\(5, 16\).*num_classes"):
        load_model(tmp_path, num_classes=5)
    with pytest.raises(ConfigError, match=r"encoder.blocks.1.*num_layers"):
        load_model(tmp_path, num_layers=2)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"not a model folder: it holds notes.txt.*config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="'bert'.*tubelet convert"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_model2_resizes_the_temporal_embedding_only_in_time(tmp_path):
    model = ViViT(ViViTConfig(kind="factorised_encoder", **TINY))
    save_model(model, tmp_path)
    longer = load_model(tmp_path, num_frames=8)
    torch.testing.assert_close(longer.spatial.pos_embed, model.spatial.pos_embed, rtol=0, atol=0)
    assert longer.temporal.pos_embed.shape == (1, 1 + 4, 16)
    torch.testing.assert_close(longer.temporal.pos_embed[:, 0], model.temporal.pos_embed[:, 0])


# ------------------------------------------------------------------ the model's identity
NAMES = (("walk", "run", "jump"),)


def test_info_round_trips_through_config_json(tmp_path):
    model = ViViT(ViViTConfig(**TINY))
    model.info = ModelInfo(class_names=NAMES, preprocessing=Preprocessing(4, (16, 16), frame_stride=3),
                           provenance={"preset": "k400", "top1": float("nan"), "steps": 10})
    save_model(model, tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())  # strict JSON: no bare NaN
    assert header["version"] == 2
    assert header["classes"] == {"class_names": [["walk", "run", "jump"]], "head_names": None}
    assert header["preprocessing"]["frame_stride"] == 3 and header["provenance"]["top1"] is None
    loaded = load_model(tmp_path)
    assert loaded.info.class_names == NAMES and loaded.info.preprocessing.frame_stride == 3
    assert read_info(tmp_path).provenance["steps"] == 10
    # loaded at another clip size, the recorded preprocessing follows the model
    assert load_model(tmp_path, num_frames=8).info.preprocessing.num_frames == 8


def test_class_names_must_fit_the_heads(tmp_path):
    model = ViViT(ViViTConfig(**{**TINY, "num_classes": (2, 3)}))
    model.info = ModelInfo(class_names=(("a", "b"), ("c", "d")), head_names=("verb", "noun"))
    with pytest.raises(ConfigError, match=r"heads of \[2, 2\] classes.*num_classes=\(2, 3\)"):
        save_model(model, tmp_path)
    model.info = ModelInfo(class_names=(("a", "b"), ("c", "d", "e")), head_names=("verb",))
    with pytest.raises(ConfigError, match="1 head name"):
        save_model(model, tmp_path)
    model.info.head_names = ("verb", "noun")
    save_model(model, tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    header["classes"]["class_names"][1].pop()  # an edited config.json that no longer fits
    (tmp_path / "config.json").write_text(json.dumps(header))
    with pytest.raises(ConfigError, match="class names"):
        load_model(tmp_path)


def test_version_1_folder_with_classes_json_loads(tmp_path):
    model = ViViT(ViViTConfig(**TINY))
    save_model(model, tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"format": "tubelet", "version": 1,
                                                       "config": header["config"]}))
    (tmp_path / "classes.json").write_text(json.dumps({"class_names": [list(NAMES[0])], "head_names": None}))
    info = load_model(tmp_path).info
    assert info.class_names == NAMES and info.preprocessing is None
    assert info.preprocessing_for(model.config) == Preprocessing(4, (16, 16))


def test_reset_head_forgets_the_class_names():
    model = ViViT(ViViTConfig(**TINY))
    model.info = ModelInfo(class_names=NAMES)
    model.reset_head(5)
    assert model.info.class_names is None


def test_resolve_run_folder_checkpoint_and_export(tmp_path):
    model = ViViT(ViViTConfig(**TINY))
    run = tmp_path / "run"
    save_model(model, run / "checkpoints" / "step-0000002")
    save_model(model, run / "checkpoints" / "step-0000004")
    assert resolve_model_path(run) == (run / "checkpoints" / "step-0000004", "tubelet")
    (run / "checkpoints" / "latest").write_text("step-0000002\n")
    assert resolve_model_path(run) == (run / "checkpoints" / "step-0000002", "tubelet")
    save_model(model, run / "final")
    assert resolve_model_path(run) == (run / "final", "tubelet")
    assert resolve_model_path(run / "final" / "model.safetensors") == (run / "final", "tubelet")
    assert load_model(run).config == model.config


# ------------------------------------------------------------------ checks on load
def _edit_config(folder, **changes):
    header = json.loads((folder / "config.json").read_text())
    header["config"].update(changes)
    (folder / "config.json").write_text(json.dumps(header))


def test_an_edited_head_count_is_refused(tmp_path):
    """(3D, D) qkv matrices look the same for 2 or 4 heads: the recorded layout tells."""
    save_model(ViViT(ViViTConfig(**{**TINY, "num_heads": 4})), tmp_path)
    _edit_config(tmp_path, num_heads=2)
    with pytest.raises(ConfigError, match=r"num_heads=4.*asks for num_heads=2.*set num_heads=4"):
        load_model(tmp_path)
    _edit_config(tmp_path, num_heads=4)
    with pytest.raises(ConfigError, match="set num_heads=4"):
        load_model(tmp_path, num_heads=2)
    assert load_model(tmp_path).config.num_heads == 4


def test_an_edited_grid_names_the_fields(tmp_path):
    save_model(ViViT(ViViTConfig(**TINY)), tmp_path)
    _edit_config(tmp_path, num_frames=8)
    with pytest.raises(ConfigError, match=r"'encoder.pos_embed' has 9 rows.*4 x 2 x 2.*num_frames"):
        load_model(tmp_path)


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[: len(b) // 2], "truncated or damaged"),
    (lambda b: b"\x00garbage" * 50, "truncated or damaged"),
    (lambda b: b"", r"empty \(0 bytes\)"),
])
def test_damaged_weights_are_one_line_errors(tmp_path, damage, match):
    save_model(ViViT(ViViTConfig(**TINY)), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(tmp_path)
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_damaged_or_missing_files(tmp_path):
    save_model(ViViT(ViViTConfig(**TINY)), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors does not exist"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "tubelet", "config": {')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        read_info(tmp_path)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    model = ViViT(ViViTConfig(**TINY))
    with torch.no_grad():
        model.encoder.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    save_model(model, tmp_path)
    with pytest.raises(CheckpointError, match=r"'encoder.blocks.0.mlp.fc1.weight' holds 1 NaN/Inf"):
        load_model(tmp_path)


def test_an_edited_time_embed_is_refused_not_drawn_fresh(tmp_path):
    save_model(ViViT(ViViTConfig(**TINY)), tmp_path)
    _edit_config(tmp_path, time_embed=1.0)
    with pytest.raises(ConfigError, match=r"time_embed=1.0.*'encoder.time_embed'"):
        load_model(tmp_path)
