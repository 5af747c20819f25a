"""Stochastic depth as the reference does it, with the 1/(1-p) rescaling as a choice."""

import pytest
import torch

import tubelet
from tubelet.models.blocks import DropPath, drop_path_rates


def test_rates_are_linear_in_depth_from_zero_to_the_rate():
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert drop_path_rates(0.2, 1) == [0.0]
    model = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, drop_path=0.2,
                                 hidden_size=16, num_layers=5, num_heads=2, mlp_dim=16)
    assert [b.drop_path.p for b in model.encoder.blocks] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])


@pytest.mark.parametrize("scale", [False, True])
def test_drops_whole_examples_with_optional_rescaling(scale):
    torch.manual_seed(0)
    drop = DropPath(0.5, scale=scale).train()
    x = torch.ones(4000, 3, 2)
    y = drop(x)
    per_example = y.flatten(1)
    kept = per_example[:, 0]
    # every token of an example is kept or dropped together
    assert torch.equal(per_example, kept[:, None].expand_as(per_example))
    assert set(kept.unique().tolist()) == ({0.0, 2.0} if scale else {0.0, 1.0})
    assert (kept > 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(drop.eval()(x), x)  # identity at evaluation


def test_groups_of_rows_share_one_decision():
    """Model 2's spatial encoder sees B*T frames: all frames of one clip share the decision."""
    torch.manual_seed(0)
    y = DropPath(0.5).train()(torch.ones(64 * 4, 1), group=4).view(64, 4)
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert 0 < y[:, 0].sum() < 64


def test_attention_and_mlp_branches_drop_independently():
    torch.manual_seed(0)
    model = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, drop_path=0.9,
                                 hidden_size=16, num_layers=2, num_heads=2, mlp_dim=16).train()
    block = model.encoder.blocks[1]
    calls = []
    block.drop_path.register_forward_hook(lambda m, i, o: calls.append((o.flatten(1) == 0).all(1)))
    block(torch.randn(256, 5, 16))
    attn_dropped, mlp_dropped = calls
    assert (attn_dropped != mlp_dropped).any()
