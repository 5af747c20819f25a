"""ViViTConfig.time_embed: a learned table over time, shared by every spatial position."""

import pytest
import torch

import tubelet
from tubelet.checkpoint import load_model, save_model
from tubelet.models.posembed import resize_pos_embed
from tubelet.models import ConfigError, count_parameters

TINY = dict(num_frames=8, image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4,
            mlp_dim=48, temporal_layers=1, num_classes=3)
JOINT = {"spatiotemporal": "token", "factorised_self_attention": "gap", "factorised_dot_product": "gap"}


def build(kind, classifier="token", **kw):
    return tubelet.create_model("vivit_micro", kind=kind, classifier=classifier, **{**TINY, **kw})


@pytest.mark.parametrize("kind", JOINT)
def test_models_1_3_4_gain_one_row_per_token_frame(kind):
    torch.manual_seed(0)
    plain, timed = build(kind, JOINT[kind]), build(kind, JOINT[kind], time_embed=0.5)
    t, d = timed.config.grid[0], timed.config.hidden_size
    assert timed.encoder.time_embed.shape == (1, t, d)
    assert count_parameters(timed) == count_parameters(plain) + t * d
    assert plain.encoder.time_embed is None


@pytest.mark.parametrize("kind", JOINT)
def test_the_row_of_a_frame_is_added_to_every_token_of_that_frame(kind):
    torch.manual_seed(0)
    model = build(kind, JOINT[kind], time_embed=1.0).eval()
    t, h, w = model.config.grid
    tokens = torch.randn(2, t * h * w, model.config.hidden_size)
    grid = None if kind == "spatiotemporal" else (t, h * w)  # as ViViT.forward_features passes it
    with torch.no_grad():
        got = model.encoder(tokens, grid)
        by_hand = tokens + model.encoder.time_embed.repeat_interleave(h * w, dim=1)  # frame-major rows
        model.encoder.time_embed.zero_()
        want = model.encoder(by_hand, grid)
    torch.testing.assert_close(got, want)


def test_model_2_draws_its_temporal_table_at_that_scale_and_the_baseline_has_no_time():
    torch.manual_seed(0)
    model2 = build("factorised_encoder", time_embed=1.0, hidden_size=128, num_heads=4, num_frames=32)
    assert 0.9 < model2.temporal.pos_embed.std().item() < 1.1  # 17 x 128 draws of N(0, 1)
    assert model2.spatial.pos_embed.std().item() < 0.03  # space keeps the reference's 0.02
    torch.manual_seed(0)
    plain = build("average_pool")
    torch.manual_seed(0)
    timed = build("average_pool", time_embed=1.0)
    assert plain.state_dict().keys() == timed.state_dict().keys()
    assert all(torch.equal(v, timed.state_dict()[k]) for k, v in plain.state_dict().items())


def test_a_checkpoint_without_the_table_loads_with_a_fresh_one(tmp_path):
    torch.manual_seed(0)
    plain = build("spatiotemporal")
    save_model(plain, tmp_path / "plain")
    model = load_model(tmp_path / "plain", time_embed=1.0)
    assert model.config.time_embed == 1.0
    assert 0.8 < model.encoder.time_embed.std().item() < 1.2  # 4 x 32 draws of N(0, 1)
    for name, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_the_table_is_resized_in_time_with_the_clip(tmp_path):
    torch.manual_seed(0)
    model = build("factorised_self_attention", "gap", time_embed=1.0)
    save_model(model, tmp_path / "m")
    longer = load_model(tmp_path / "m", num_frames=16)
    assert longer.encoder.time_embed.shape == (1, 8, 32)
    want = resize_pos_embed(model.encoder.time_embed.detach(), (4, 1, 1), (8, 1, 1))
    torch.testing.assert_close(longer.encoder.time_embed.detach(), want)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_the_standard_deviation_must_be_positive(bad):
    with pytest.raises(ConfigError, match="time_embed"):
        build("spatiotemporal", time_embed=bad)
