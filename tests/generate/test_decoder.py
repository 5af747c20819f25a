"""The causal decoder on the shared attention module: cache, masks, rotary positions."""

from __future__ import annotations

import pytest
import torch

from tubelet.models.attention import Attention, KVCache, apply_rotary, rotary_embedding, sdpa
from tubelet.models.decoder import Decoder, DecoderConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = DecoderConfig(vocab_size=61, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                    rope_theta=10000.0)


def model(seed: int = 0, cfg: DecoderConfig = CFG) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(cfg).eval()


@torch.no_grad()
def test_cached_chunks_equal_one_full_pass():
    m = model()
    x = torch.randint(0, CFG.vocab_size, (2, 12))
    full = m(x)
    cache = m.new_cache(2)
    parts = [m(x[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 9), (9, 12)]]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    assert cache.lengths.tolist() == [12, 12]


@torch.no_grad()
def test_right_padded_rows_of_different_lengths_equal_each_row_alone():
    m = model(1)
    seqs = [torch.randint(0, CFG.vocab_size, (n,)) for n in (3, 7, 5)]
    prompts = [s[:n] for s, n in zip(seqs, (2, 6, 1))]
    padded = torch.zeros(3, 6, dtype=torch.long)
    for b, p in enumerate(prompts):
        padded[b, :len(p)] = p
    num_valid = torch.tensor([len(p) for p in prompts])
    cache = m.new_cache(3)
    first = m(padded, cache, num_valid)
    rest = torch.stack([s[len(p):len(p) + 1] for s, p in zip(seqs, prompts)])  # one more each
    second = m(rest, cache, torch.ones(3, dtype=torch.long))
    for b, (s, p) in enumerate(zip(seqs, prompts)):
        alone = m(s[None, :len(p) + 1])[0]
        assert torch.allclose(first[b, :len(p)], alone[:len(p)], atol=1e-5)
        assert torch.allclose(second[b, 0], alone[len(p)], atol=1e-5)


@torch.no_grad()
def test_crop_then_extend_equals_a_fresh_prefill():
    m = model(2)
    x = torch.randint(0, CFG.vocab_size, (2, 10))
    cache = m.new_cache(2)
    m(x, cache)
    cache.crop(torch.tensor([4, 7]))
    y = torch.randint(0, CFG.vocab_size, (2, 3))
    out = m(y, cache)
    for b, n in enumerate((4, 7)):
        fresh = m(torch.cat([x[b, :n], y[b]])[None])[0, n:]
        assert torch.allclose(out[b], fresh, atol=1e-5)
        fresh_cache = m.new_cache(1)
        m(torch.cat([x[b, :n], y[b]])[None], fresh_cache)
        for layer in range(CFG.num_layers):
            k, v = cache.rows(layer)[b]
            k0, v0 = fresh_cache.rows(layer)[0]
            assert torch.allclose(k, k0, atol=1e-5) and torch.allclose(v, v0, atol=1e-5)


def test_mask_is_bottom_right_aligned_per_row_and_is_causal_is_not():
    cache = KVCache(1, 2)
    cache.lengths = torch.tensor([5, 2])
    cache.begin(3)
    mask = cache.causal_mask()[:, 0]  # (B, 3, L=8)
    assert mask.shape == (2, 3, 8)
    assert mask[0].sum(-1).tolist() == [6, 7, 8]  # query i sees slots <= 5 + i
    assert mask[1].sum(-1).tolist() == [3, 4, 5]
    # SDPA's is_causal=True with 3 queries and 8 keys is top-left aligned: query 0 sees 1 key
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 8, generator=g) for n in (3, 8, 8))
    right = sdpa(q, k, v, attn_mask=KVCacheMask(5, 3))
    top_left = sdpa(q, k, v, is_causal=True)
    assert not torch.allclose(right, top_left, atol=1e-3)
    assert torch.allclose(right[:, :, -1], sdpa(q[:, :, -1:], k, v)[:, :, 0], atol=1e-6)


def KVCacheMask(cached: int, n: int) -> torch.Tensor:  # noqa: N802 - a tiny helper
    c = KVCache(1, 1)
    c.lengths = torch.tensor([cached])
    c.begin(n)
    return c.causal_mask()


def test_rotary_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(i: int, j: int) -> float:
        cq, sq = rotary_embedding(torch.tensor([[i]]), 16)
        ck, sk = rotary_embedding(torch.tensor([[j]]), 16)
        return float((apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum())

    assert abs(score(3, 1) - score(10, 8)) < 1e-4
    assert abs(score(3, 1) - score(3, 2)) > 1e-3


def test_attention_defaults_are_unchanged():
    """Without the decoding options the module is the same function as before (ViViT)."""
    torch.manual_seed(0)
    a = Attention(32, 4, 2).eval()
    x = torch.randn(2, 9, 32)
    q, k, v = a.project(x)
    assert torch.allclose(a(x), a.output(sdpa(q, k, v)), atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("tied", [True, False])
def test_a_decoder_made_for_loading_computes_what_the_loaded_one_does(tied):
    """``for_loading`` skips the random initialisation (the weights come from a state dict); its
    head stays the embedding when tied (to_empty alone gives the head a tensor of its own)."""
    cfg = DecoderConfig(**{**CFG.__dict__, "tie_embeddings": tied})
    m = model(4, cfg)
    empty = Decoder.for_loading(cfg)
    assert (empty.head.weight is empty.embed.weight) == tied
    empty.load_state_dict(m.state_dict())
    x = torch.randint(0, cfg.vocab_size, (2, 7))
    assert torch.equal(empty.eval()(x), m(x))


def test_save_and_load_round_trip(tmp_path):
    m = model(3)
    m.save(tmp_path / "draft")
    again = Decoder.load(tmp_path / "draft")
    x = torch.randint(0, CFG.vocab_size, (1, 6))
    with torch.no_grad():
        assert torch.equal(m(x), again(x))
    assert again.head.weight is again.embed.weight


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_row_decoding_takes_no_mask_and_a_slice_with_the_same_result(dtype, monkeypatch):
    """A one-row, one-token call (plain decoding) writes its keys and values to a slice and its
    attention takes no mask: its logits and cache are bit for bit those of masked calls."""
    m = model(2).to(dtype)
    x = torch.randint(0, CFG.vocab_size, (1, 9))

    def decode(cache):
        m(x[:, :5], cache)
        return torch.cat([m(x[:, t:t + 1], cache) for t in range(5, 9)], 1)

    cache, masked_cache = m.new_cache(1), m.new_cache(1)
    fast = decode(cache)
    with monkeypatch.context() as patch:  # every call masked, as before
        patch.setattr(KVCache, "attention_mask", KVCache.causal_mask)
        masked = decode(masked_cache)
    assert torch.equal(fast, masked)
    assert all(torch.equal(a, b) for r, s in zip(cache.rows(1), masked_cache.rows(1)) for a, b in zip(r, s))
    # the slice is the row's next slots, after what it holds, as the indexed write of a batch puts them
    g = torch.Generator().manual_seed(3)
    k, v = (torch.randn(1, CFG.num_kv_heads, 2, 8, generator=g, dtype=dtype) for _ in range(2))
    for b, lengths in ((1, [3]), (2, [3, 1])):
        c = KVCache(1, b)
        c.lengths = torch.tensor(lengths)
        c.begin(2)
        c.write(0, k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))
        for row, n in enumerate(lengths):
            assert torch.equal(c.keys[0][row, :, n:n + 2], k[0].float())
            assert torch.equal(c.values[0][row, :, n:n + 2], v[0].float())
            assert not c.keys[0][row, :, :n].any()
    cache.begin(1)
    assert cache.attention_mask() is None
    cache.begin(2)
    assert cache.attention_mask() is not None  # two new tokens: causal among them


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_table_gives_the_computed_values_as_it_grows(dtype):
    """On a CPU rotary_embedding looks positions up in a table it grows by doubling: the values
    are bit for bit the computed ones, for positions within, past and far past the table."""
    from tubelet.models import attention

    attention._ROTARY_TABLES.clear()
    for positions in (torch.tensor([[0, 1, 2]]), torch.tensor([[7], [255]]), torch.tensor([[256, 300]]),
                      torch.arange(40).view(2, 20) + 2000, torch.tensor([[3]])):
        table = rotary_embedding(positions, 16, 500.0, dtype)
        computed = attention._rotary(positions, 16, 500.0, dtype)
        assert all(a.shape == b.shape == (*positions.shape[:1], 1, positions.shape[1], 16) and torch.equal(a, b)
                   for a, b in zip(table, computed))
    assert attention._ROTARY_TABLES[(16, 500.0, dtype)][0].shape == (2040, 16)  # 256, 512 (doubled), then 2,040
