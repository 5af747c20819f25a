"""transformers' VivitForVideoClassification <-> tubelet, checked against the real implementation."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tubelet.convert.hf import config_from_hf, config_to_hf, load_hf, save_hf, to_hf_state_dict  # noqa: E402
from tubelet.models import ConfigError, ViViT  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.VivitConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
        num_frames=8, tubelet_size=[2, 8, 8], num_labels=5)
    model = transformers.VivitForVideoClassification(config).eval()
    with torch.no_grad():  # transformers zero-initialises CLS, position embeddings and biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def clip():
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, C, T, H, W)


def _hf_logits(model, clip):
    with torch.no_grad():
        return model(pixel_values=clip.transpose(1, 2)).logits  # HF takes (B, T, C, H, W)


def test_config_mapping(hf_model):
    cfg = config_from_hf(hf_model.config)
    assert (cfg.gelu, cfg.layer_norm_eps, cfg.tubelet_size, cfg.patch_size, cfg.num_classes) == \
        ("tanh", 1e-6, 2, 8, 5)
    back = config_to_hf(cfg)
    for key in ("hidden_act", "tubelet_size", "num_frames", "intermediate_size", "layer_norm_eps"):
        assert back[key] == hf_model.config.to_dict()[key], key


def test_import_from_state_dict_in_memory(hf_model, clip):
    model = load_hf(hf_model.state_dict(), config=hf_model.config)
    with torch.no_grad():
        assert (model(clip) - _hf_logits(hf_model, clip)).abs().max().item() < TOL


def test_import_from_save_pretrained_folder(hf_model, clip, tmp_path):
    hf_model.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    with torch.no_grad():
        assert (model(clip) - _hf_logits(hf_model, clip)).abs().max().item() < TOL


def test_export_loads_back_into_transformers(hf_model, clip, tmp_path):
    model = load_hf(hf_model.state_dict(), config=hf_model.config)
    save_hf(model, tmp_path)
    back = transformers.VivitForVideoClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (model(clip) - _hf_logits(back, clip)).abs().max().item() < TOL
    # the module naming of transformers 5 loads strictly too
    fresh = transformers.VivitForVideoClassification(back.config).eval()
    fresh.load_state_dict(to_hf_state_dict(model, naming="module"), strict=True)
    assert (_hf_logits(fresh, clip) - _hf_logits(back, clip)).abs().max().item() == 0.0


def test_export_folds_the_table_over_time_into_the_position_table(hf_model, clip, tmp_path):
    # transformers has one joint table; time_embed adds per-frame rows that it must carry
    cfg = config_from_hf(hf_model.config).replace(time_embed=1.0)
    torch.manual_seed(2)
    model = ViViT(cfg).eval()
    torch.nn.init.normal_(model.head.weight)  # non-zero logits to compare
    save_hf(model, tmp_path)
    back = transformers.VivitForVideoClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (model(clip) - _hf_logits(back, clip)).abs().max().item() < TOL


def test_other_variants_are_refused(hf_model):
    cfg = config_from_hf(hf_model.config).replace(kind="factorised_encoder")
    with pytest.raises(ConfigError, match="kind=factorised_encoder"):
        save_hf(ViViT(cfg), "unused")


def test_wrong_depth_is_named(hf_model):
    cfg = config_from_hf(hf_model.config).replace(num_layers=3)
    with pytest.raises(ConfigError, match="layer.2|layers.2"):
        load_hf(hf_model.state_dict(), cfg=cfg)
