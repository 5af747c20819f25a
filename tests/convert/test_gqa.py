"""Multi-head -> grouped-query conversion (GQA paper 2.1): mean-pooled key/value heads."""

import pytest
import torch

import tubelet
from tubelet.convert.gqa import pool_kv_heads, to_gqa
from tubelet.models import Attention

VARIANTS = ["vivit_s16x2", "vivit_s16x2_fe", "vivit_s16x2_fsa", "vivit_s16x2_fdp", "vivit_s16x2_fe_avgpool"]
TINY = dict(num_frames=4, image_size=32, num_classes=5, hidden_size=32, num_layers=2, num_heads=4,
            mlp_dim=32, temporal_layers=1)


def test_pooling_averages_contiguous_heads():
    w = torch.arange(4 * 2, dtype=torch.float).view(8, 1)  # 4 heads of d=2
    assert pool_kv_heads(w, 4, 2).flatten().tolist() == [1.0, 2.0, 5.0, 6.0]
    assert pool_kv_heads(w, 4, 1).flatten().tolist() == [3.0, 4.0]


@pytest.mark.parametrize("name", VARIANTS)
def test_as_many_kv_heads_as_query_heads_is_the_same_model(name):
    torch.manual_seed(0)
    model = tubelet.create_model(name, **TINY).eval()
    torch.nn.init.normal_(model.head.weight)
    x = torch.randn(2, 3, 4, 32, 32)
    same = to_gqa(model, 4)
    assert torch.equal(same(x), model(x))
    assert same.config.kv_heads == 4


@pytest.mark.parametrize("name", VARIANTS)
def test_heads_identical_within_a_group_convert_exactly(name):
    torch.manual_seed(0)
    model = tubelet.create_model(name, **TINY).eval()
    torch.nn.init.normal_(model.head.weight)
    with torch.no_grad():  # make the key/value heads of each pair equal: (0, 1) and (2, 3)
        for attn in (m for m in model.modules() if isinstance(m, Attention)):
            d, H = attn.head_dim, attn.num_heads
            for t in (attn.qkv.weight, attn.qkv.bias):
                for start in (H * d, 2 * H * d):  # key rows, then value rows
                    for g in range(0, H, 2):
                        t[start + (g + 1) * d:start + (g + 2) * d] = t[start + g * d:start + (g + 1) * d]
    x = torch.randn(2, 3, 4, 32, 32)
    gqa = to_gqa(model, 2)
    assert gqa.config.num_kv_heads == 2
    assert all(m.qkv.out_features == (4 + 2 * 2) * 8 for m in gqa.modules() if isinstance(m, Attention))
    assert torch.allclose(gqa(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_multi_query_runs_for_every_variant(name):
    model = tubelet.create_model(name, **TINY)
    mqa = to_gqa(model, 1)
    out = mqa(torch.randn(2, 3, 4, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 5) and mqa.config.num_kv_heads == 1
    assert model.config.num_kv_heads is None  # the original is untouched


def test_invalid_groups_are_refused():
    model = tubelet.create_model("vivit_s16x2", **TINY)
    with pytest.raises(ValueError, match="not divisible by num_kv_heads=3"):
        to_gqa(model, 3)


def test_convert_command_writes_a_gqa_checkpoint(tmp_path):
    from tubelet.checkpoint import load_model, save_model
    from tubelet.cli import main

    model = tubelet.create_model("vivit_s16x2_fe", **TINY)
    save_model(model, tmp_path / "mha")
    assert main(["convert", "--from", "tubelet", str(tmp_path / "mha"), "--out", str(tmp_path / "gqa"),
                 "--to-gqa", "2"]) == 0
    gqa = load_model(tmp_path / "gqa")
    assert gqa.config.num_kv_heads == 2
    assert gqa.spatial.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * 8
