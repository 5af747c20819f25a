"""The tubelet checkpoint folder: save, load, resize on load, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from tubelet import ViViT, load_model, save_model
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
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "vivit"}')
    with pytest.raises(ConfigError, match="tubelet convert"):
        load_model(tmp_path)


def test_model2_resizes_the_temporal_embedding_only_in_time(tmp_path):
    model = ViViT(ViViTConfig(kind="factorised_encoder", **TINY))
    save_model(model, tmp_path)
    longer = load_model(tmp_path, num_frames=8)
    torch.testing.assert_close(longer.spatial.pos_embed, model.spatial.pos_embed, rtol=0, atol=0)
    assert longer.temporal.pos_embed.shape == (1, 1 + 4, 16)
    torch.testing.assert_close(longer.temporal.pos_embed[:, 0], model.temporal.pos_embed[:, 0])
