"""Packed bf16 weights for CPU decoding: the products of nn.Linear, each row independent of the
others in its call, and a packed model that is still the model (ties, state dict, training,
the same outputs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.loading import load_draft, load_model
from tubelet.generate.packed import PackedLinear, can_pack, pack_linears
from tubelet.models.decoder import Decoder, DecoderConfig

from .test_commands import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
packs = pytest.mark.skipif(not can_pack(torch.device("cpu")),
                           reason="this torch has no oneDNN, or this CPU not the instructions of its bf16 products")


@packs
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


@packs
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


@packs
def test_a_bf16_target_and_draft_are_packed_and_compute_what_they_did(tmp_path):
    folder = tiny(tmp_path, layers=3)
    target = load_model(f"{folder},bf16")
    assert isinstance(target.model.blocks[0].attn.qkv, PackedLinear)
    draft = load_draft("truncated:1,bf16", target)
    assert isinstance(draft.lm.model.head, PackedLinear)
    plain = Decoder.load(folder).to(torch.bfloat16).eval()  # the same model, F.linear throughout
    tokens = torch.tensor([[5, 17, 3, 99, 42, 7, 7, 7]])
    with torch.no_grad():
        torch.testing.assert_close(target.model(tokens).float(), plain(tokens).float(), rtol=2e-2, atol=2e-2)
    prompts = [[5, 17, 3, 99, 42], [7, 7, 7]]
    reference = autoregressive_generate(target.lm, prompts, 24, sampling=Sampling(0))
    out = speculative_generate(target.lm, draft, prompts, 24, k=3, sampling=Sampling(0))
    # the first token comes from the prompt's call, the same in both; after it, a bf16 target's greedy
    # tokens may part at a near-tie, since attention rounds a verification call differently
    assert [t[0] for t in out.tokens] == [t[0] for t in reference.tokens]
    assert all(len(t) == 24 for t in out.tokens) and out.stats.drafted > 0


@packs
def test_a_call_of_many_rows_multiplies_by_the_plain_weight(monkeypatch):
    """Packing is for decoding's few rows: a long prompt or a labelling batch (more than
    PACKED_ROWS rows) goes through F.linear, which is as fast or faster there."""
    from tubelet.generate import packed as packed_module
    torch.manual_seed(0)
    layer = PackedLinear(torch.nn.Linear(32, 16).to(torch.bfloat16))
    calls = []
    real = packed_module._packed_product
    monkeypatch.setattr(packed_module, "_packed_product", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        layer(torch.randn(packed_module.PACKED_ROWS, 32, dtype=torch.bfloat16))
        assert len(calls) == 1
        many = torch.randn(packed_module.PACKED_ROWS + 1, 32, dtype=torch.bfloat16)
        torch.testing.assert_close(layer(many), F.linear(many, layer.weight, layer.bias))
        assert len(calls) == 1


def test_where_onednn_has_no_bf16_products_a_bf16_target_and_draft_load_plain_and_decode(tmp_path, monkeypatch):
    """On a CPU without avx512bw, avx512vl and avx512dq or avx_ne_convert (an AVX2 CPU such as AMD's
    Zen 3) oneDNN refuses to reorder a bfloat16 weight; ``smollm2,bf16`` and a bf16 draft raised that
    RuntimeError instead of decoding with F.linear. Here that CPU is played on any CPU."""
    def refuse(*args):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or "
                           "avx512bw, avx512vl and avx512dq")
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not can_pack(torch.device("cpu"))
    folder = tiny(tmp_path, layers=3)
    target = load_model(f"{folder},bf16")
    draft = load_draft("truncated:1,bf16", target)
    assert not any(isinstance(m, PackedLinear) for m in [*target.model.modules(), *draft.lm.model.modules()])
    plain = Decoder.load(folder).to(torch.bfloat16).eval()
    tokens = torch.tensor([[5, 17, 3, 99, 42, 7, 7, 7]])
    with torch.no_grad():
        assert torch.equal(target.model(tokens), plain(tokens))  # the same products: F.linear's
    prompts = [[5, 17, 3, 99, 42], [7, 7, 7]]
    out = speculative_generate(target.lm, draft, prompts, 16, k=3, sampling=Sampling(1.0), seed=0)
    assert all(len(t) == 16 for t in out.tokens) and out.stats.drafted > 0
