"""Every ViViT variant runs forward and backward on awkward shapes; heads, GELU, tokenisers."""

import pytest
import torch

import tubelet
from tubelet.models import ViViT, ViViTConfig
from tubelet.models.tokenisers import uniform_frame_indices

VARIANTS = ["vivit_s16x2", "vivit_s16x2_fe", "vivit_s16x2_fsa", "vivit_s16x2_fdp", "vivit_s16x2_fe_avgpool"]
TINY = dict(hidden_size=32, num_layers=2, num_heads=4, mlp_dim=48, temporal_layers=2)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kv_heads", [None, 2, 1])
def test_forward_backward_odd_tubelets_non_square(name, batch, kv_heads):
    # 6 frames / tubelet 2 = 3 tubelets in time (odd); 32x48 frames (non-square).
    model = tubelet.create_model(name, num_frames=6, image_size=(32, 48), num_classes=7,
                                 num_kv_heads=kv_heads, patch_size=16, **TINY)
    torch.nn.init.normal_(model.head.weight)  # the reference's zero head would block all gradients
    x = torch.randn(batch, 3, 6, 32, 48)
    logits = model(x)
    assert logits.shape == (batch, 7)
    logits.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.tokeniser.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["spatiotemporal", "factorised_encoder", "factorised_self_attention",
                                  "factorised_dot_product", "average_pool"])
def test_uniform_frame_sampling_tokeniser(kind):
    classifier = "gap" if kind.startswith("factorised_") and kind != "factorised_encoder" else "token"
    cfg = ViViTConfig(kind=kind, classifier=classifier, tokeniser="frame_sampling", num_frames=8,
                      sampled_frames=3, image_size=(32, 32), patch_size=16, num_classes=4, **TINY)
    model = ViViT(cfg)
    assert cfg.grid == (3, 2, 2)
    assert model(torch.randn(2, 3, 8, 32, 32)).shape == (2, 4)


def test_frame_sampling_takes_the_reference_frames():
    # round(i * T / (n + 1)) for i = 1..n: the reference's interior points.
    assert uniform_frame_indices(8, 4) == [2, 3, 5, 6]
    assert uniform_frame_indices(32, 8) == [4, 7, 11, 14, 18, 21, 25, 28]
    assert uniform_frame_indices(4, 4) == [0, 1, 2, 3]


def test_two_heads_split_logits():
    model = tubelet.create_model("vivit_s16x2_fe", num_frames=4, image_size=32, num_classes=(97, 300), **TINY)
    logits = model(torch.randn(2, 3, 4, 32, 32))
    verb, noun = model.split_logits(logits)
    assert logits.shape == (2, 397) and verb.shape == (2, 97) and noun.shape == (2, 300)


def test_gelu_and_layer_norm_options_reach_the_modules():
    model = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, gelu="exact",
                                 layer_norm_eps=1e-12, **TINY)
    block = model.encoder.blocks[0]
    assert block.mlp.act.approximate == "none"
    assert block.norm1.eps == 1e-12
    default = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, **TINY)
    assert default.encoder.blocks[0].mlp.act.approximate == "tanh"
    assert default.encoder.norm.eps == 1e-6


def test_wrong_input_shape_names_the_expected_shape():
    model = tubelet.create_model("vivit_s16x2", num_frames=4, image_size=32, **TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 32, 32\)"):
        model(torch.randn(1, 3, 8, 32, 32))


def test_reset_head_gives_a_fresh_zero_head():
    model = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, num_classes=5, **TINY)
    model.reset_head((3, 4))
    assert model.head.out_features == 7 and model.head.weight.abs().sum() == 0
    assert model.config.class_splits == (3, 4)
