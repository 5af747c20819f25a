"""The shared attention module: MHA, GQA and MQA, and Model 4's factorised neighbourhoods."""

import math

import pytest
import torch

from tubelet.models import Attention, factorised_dot_product_attention
from tubelet.models.attention import apply_rotary, sdpa


def reference_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v written out, with kv heads repeated explicitly (float64)."""
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)  # kv head j // rep serves query head j
    v = v.repeat_interleave(rep, dim=1)
    scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.double()).float()


@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (8, 4), (8, 2), (8, 1), (6, 3)])
def test_grouped_query_attention_equals_repeated_kv_heads(heads, kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, heads, 11, 16)
    k, v = torch.randn(2, 2, kv_heads, 11, 16).unbind(0)
    assert torch.allclose(sdpa(q, k, v), reference_attention(q, k, v), atol=1e-6)


def test_module_gqa_groups_are_contiguous():
    """Query head j reads kv head j // (H/G): copy each group's kv into an MHA module and compare."""
    torch.manual_seed(0)
    dim, H, G, d = 32, 4, 2, 8
    gqa = Attention(dim, H, G)
    mha = Attention(dim, H, H)
    wq, wk, wv = gqa.qkv.weight.split([H * d, G * d, G * d])
    bq, bk, bv = gqa.qkv.bias.split([H * d, G * d, G * d])
    rep = lambda w: w.unflatten(0, (G, d)).repeat_interleave(H // G, dim=0).flatten(0, 1)
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.qkv.bias.copy_(torch.cat([bq, rep(bk), rep(bv)]))
        mha.proj.load_state_dict(gqa.proj.state_dict())
    x = torch.randn(3, 7, dim)
    assert torch.allclose(gqa(x), mha(x), atol=1e-6)


def test_multi_head_attention_is_plain_attention():
    torch.manual_seed(0)
    attn = Attention(24, 3).eval()
    x = torch.randn(2, 5, 24)
    q, k, v = attn.project(x)
    expected = attn.proj(reference_attention(q, k, v).transpose(1, 2).flatten(2))
    assert torch.allclose(attn(x), expected, atol=1e-6)
    assert attn.qkv.out_features == 3 * 24


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_factorised_dot_product_equals_masked_attention(kv_heads):
    """Model 4 = full attention with a mask: time heads see their location, space heads their frame."""
    torch.manual_seed(0)
    B, H, T, S, d = 2, 4, 3, 5, 8
    q = torch.randn(B, H, T * S, d)
    k, v = torch.randn(2, B, kv_heads, T * S, d).unbind(0)
    t = torch.arange(T * S) // S
    s = torch.arange(T * S) % S
    same_location = s[:, None] == s[None, :]
    same_frame = t[:, None] == t[None, :]
    out = factorised_dot_product_attention(q, k, v, (T, S))
    half = H // 2
    rep = H // kv_heads
    kf, vf = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    time = reference_attention(q[:, :half], kf[:, :half], vf[:, :half], same_location)
    space = reference_attention(q[:, half:], kf[:, half:], vf[:, half:], same_frame)
    assert torch.allclose(out, torch.cat([time, space], dim=1), atol=1e-5)


def test_bad_head_counts_are_refused():
    with pytest.raises(ValueError, match="not divisible by num_kv_heads"):
        Attention(32, 4, 3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("queries", [1, 3])
def test_half_precision_decoding_on_a_cpu_computes_in_float32(dtype, queries):
    """A call with fewer queries than keys (decoding with a cache) runs the float32 kernel on the
    half-precision inputs: the CPU's half-precision kernel is several times slower there. The
    result is float32 attention rounded once, within that rounding of the exact one."""
    torch.manual_seed(0)
    keys = 40
    q = torch.randn(2, 6, queries, 16).to(dtype)
    k, v = torch.randn(2, 2, 2, keys, 16).to(dtype).unbind(0)
    mask = torch.arange(keys) <= keys - queries + torch.arange(queries)[:, None]  # bottom-right causal
    out = sdpa(q, k, v, attn_mask=mask)
    assert out.dtype == dtype
    in_float32 = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                                                  enable_gqa=True)
    assert torch.equal(out, in_float32.to(dtype))
    exact = reference_attention(q.float(), k.float(), v.float(), mask)
    assert (out.float() - exact).abs().max() <= exact.abs().max() * torch.finfo(dtype).eps


def test_half_precision_over_a_whole_sequence_stays_in_half_precision():
    """A prompt or a clip (as many queries as keys) keeps the half-precision kernel, which is the
    faster one there."""
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 4, 12, 16).to(torch.bfloat16).unbind(0)
    assert torch.equal(sdpa(q, k, v, is_causal=True),
                       torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_cache_on_a_cpu_keeps_float32_and_attends_as_the_half_one_did(dtype):
    """On a CPU a bf16 / fp16 model's cache holds its keys and values in float32 (rounded to the
    model's precision first), so a decoding call does not cast the whole cache again in every
    layer; the prompt's call, as many queries as keys, still runs in half precision."""
    from tubelet.models import KVCache
    from tubelet.models.attention import rotary_embedding
    torch.manual_seed(0)
    attn = Attention(48, 6, 2, qkv_bias=False, proj_bias=False).to(dtype)
    x = torch.randn(1, 9, 48).to(dtype)
    cache = KVCache(1, 1)
    outs = []
    with torch.no_grad():
        for start, stop in ((0, 6), (6, 9)):  # a prompt of 6 tokens, then 3 more
            positions = cache.begin(stop - start)
            rope = rotary_embedding(positions, 8, 10000.0, dtype)
            outs.append(attn(x[:, start:stop], rope=rope, cache=cache))
            cache.advance()
        assert cache.keys[0].dtype == torch.float32 and cache.values[0].dtype == torch.float32
        assert torch.equal(cache.keys[0][:, :, :9], cache.keys[0][:, :, :9].to(dtype).float())  # rounded first
        # the same calls, the heads rotated one at a time and the cache in half precision, as before
        q, k, v = (t.transpose(1, 2) for t in attn.qkv(x).unflatten(-1, (10, 8)).split([6, 2, 2], dim=2))
        cos, sin = rotary_embedding(torch.arange(9)[None], 8, 10000.0, dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask = torch.arange(9) <= torch.arange(9)[:, None]
        first = sdpa(q[:, :, :6], k[:, :, :6], v[:, :, :6], is_causal=True)
        rest = sdpa(q[:, :, 6:], k, v, attn_mask=mask[6:])
        expected = attn.output(torch.cat([first, rest], dim=2))
    assert torch.equal(torch.cat(outs, dim=1), expected)


def test_grouped_attention_and_rotary_positions_trace_as_one_graph_under_torch_compile():
    """A decoding step compiled whole (dynamic shapes, ``fullgraph``): the GQA flag was a symbolic
    bool that ``scaled_dot_product_attention`` refused, and the rotary table's lookup read the
    largest position (a graph break). Both now trace, and give the eager values."""
    from tubelet.models.attention import rotary_embedding

    def step(q, k, v, positions):
        cos, sin = rotary_embedding(positions, q.shape[-1], 10000.0)
        return sdpa(q * cos, k, v), cos

    compiled = torch.compile(step, backend="eager", dynamic=True, fullgraph=True)
    torch.manual_seed(0)
    for n in (3, 5):  # two sizes: the second call runs the dynamic graph
        q, k, v = torch.randn(1, 4, n, 8), torch.randn(1, 2, n + 2, 8), torch.randn(1, 2, n + 2, 8)
        positions = torch.arange(2, 2 + n)[None]
        (o, cos), (o_ref, cos_ref) = compiled(q, k, v, positions), step(q, k, v, positions)
        assert torch.equal(cos, cos_ref) and torch.allclose(o, o_ref, atol=1e-6)
