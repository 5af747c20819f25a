"""Packed bf16 weights for CPU decoding: the products of nn.Linear, each row independent of the
others in its call, and a packed model that is still the model (ties, state dict, training)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.loading import load_draft, load_model
from tubelet.generate.packed import PackedLinear, can_pack, pack_linears
from tubelet.models.decoder import Decoder, DecoderConfig

from .test_commands import tiny

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not can_pack(torch.device("cpu")), reason="this torch has no oneDNN")]


@pytest.mark.parametrize("bias", [False, True])
def test_a_packed_linear_multiplies_as_the_linear_does_and_each_row_alone(bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 200, bias=bias).to(torch.bfloat16)
    packed = PackedLinear(linear)
    x = torch.randn(2, 9, 96, dtype=torch.bfloat16)
    exact = F.linear(x.double(), linear.weight.double(), None if linear.bias is None else linear.bias.double())
    with torch.no_grad():
        y = packed(x)
        assert y.shape == (2, 9, 200) and y.dtype == torch.bfloat16
        torch.testing.assert_close(y.double(), exact, rtol=1e-2, atol=1e-2)  # bf16 rounding of the output
        # a verification call of 9 tokens gives what 9 one-token calls give: greedy speculative
        # decoding depends on it (its tokens must be plain greedy decoding's)
        rows = torch.stack([torch.stack([packed(x[b, j:j + 1])[0] for j in range(9)]) for b in range(2)])
        assert torch.equal(y, rows)


def test_a_packed_model_keeps_its_ties_its_state_and_trains_through_its_plain_weights():
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  mlp_dim=48)).to(torch.bfloat16)
    keys = set(model.state_dict())
    tokens = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        before = model(tokens)
    pack_linears(model)
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 2 * 5 + 1  # per block: qkv, proj, gate, up, down; and the head
    assert model.head.weight is model.embed.weight  # still tied
    assert set(model.state_dict()) == keys  # the packed copies are not saved
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).float(), before.float(), rtol=2e-2, atol=2e-2)
    model(tokens).float().sum().backward()  # with gradients: the plain weights, which receive them
    assert model.blocks[0].mlp.up.weight.grad is not None
    fp32 = Decoder(model.cfg)  # only bf16 layers are packed
    assert not any(isinstance(m, PackedLinear) for m in pack_linears(fp32).modules())


def test_a_bf16_target_is_packed_and_speculative_greedy_is_its_plain_greedy(tmp_path):
    target = load_model(f"{tiny(tmp_path, layers=3)},bf16")
    assert isinstance(target.model.blocks[0].attn.qkv, PackedLinear)
    draft = load_draft("truncated:1,bf16", target)
    assert isinstance(draft.lm.model.head, PackedLinear)
    prompts = [[5, 17, 3, 99, 42], [7, 7, 7]]
    plain = autoregressive_generate(target.lm, prompts, 24, sampling=Sampling(0))
    for k in (2, 5):
        out = speculative_generate(target.lm, draft, prompts, 24, k=k, sampling=Sampling(0))
        assert out.tokens == plain.tokens
