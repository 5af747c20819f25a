"""The captioner: a ViViT encoder's tokens as the prefix of a GQA decoder with a key/value cache.

Decoding with the cache (the prefix filled once) must give what the decoder computes over the
whole sequence; speculative decoding with a draft captioner must give exactly the greedy words;
the rows of a batch must not affect each other; a saved captioner must caption as before.
"""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.errors import CheckpointError
from tubelet.models.captioner import BOS, EOS, PAD, Captioner, CaptionerConfig, VideoPrefixLM, WordVocab
from tubelet.models.decoder import DecoderConfig

CAPTIONS = ["A bright digit moves to the left.", "a dark photo of a cat grows", "the rocket fades out, then in"]


def encoder(kind: str = "spatiotemporal", layers: int = 2, seed: int = 0) -> tubelet.ViViT:
    torch.manual_seed(seed)
    return tubelet.create_model("vivit_micro", kind=kind, num_frames=4, image_size=16, num_classes=1,
                                hidden_size=32, num_layers=layers, num_heads=2, mlp_dim=32, temporal_layers=1,
                                classifier="gap" if kind in ("factorised_self_attention", "factorised_dot_product")
                                else "token")


def captioner(kind: str = "spatiotemporal", layers: int = 2, kv_heads: int = 1, seed: int = 0) -> Captioner:
    vocab = WordVocab.build(CAPTIONS)
    cfg = CaptionerConfig(decoder=DecoderConfig(vocab_size=0, dim=32, num_layers=layers, num_heads=4,
                                                num_kv_heads=kv_heads, mlp_dim=64), max_length=12)
    model = Captioner(encoder(kind, seed=seed), vocab, cfg)
    with torch.no_grad():  # random weights large enough that the words differ between videos
        for p in model.decoder.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def clips(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 4, 16, 16, generator=torch.Generator().manual_seed(5))


def test_the_vocabulary_round_trips_and_pads():
    vocab = WordVocab.build(CAPTIONS)
    ids = vocab.encode("A bright digit moves to the left.")
    assert ids[0] == BOS and ids[-1] == EOS and vocab.decode(ids[1:]) == "a bright digit moves to the left"
    assert vocab.decode([vocab.ids["cat"], EOS, vocab.ids["grows"]]) == "cat"  # nothing after <eos>
    assert vocab.encode("a zebra")[2] == 3  # <unk>
    batch = vocab.batch(["a cat", "a dark photo of a cat grows"], max_length=5)
    assert batch.shape == (2, 5) and batch[0, 4] == PAD and batch[1, -1] == EOS


@pytest.mark.parametrize("kind", ["spatiotemporal", "factorised_encoder", "factorised_self_attention",
                                  "factorised_dot_product", "average_pool"])
def test_cached_decoding_equals_the_whole_sequence(kind):
    """Every greedy word is the arg-max of the decoder run over prefix + all words so far."""
    model = captioner(kind)
    x = clips()
    texts, out = model.caption(x, max_new_tokens=8)
    assert any(texts), texts
    with torch.no_grad():
        for b, words in enumerate(out.tokens):
            ids = torch.tensor([[BOS] + words[:-1]])
            logits = model(x[b:b + 1], ids)[0]
            logits[:, [PAD, BOS]] = float("-inf")
            assert logits.argmax(-1).tolist() == words


def test_prefix_tokens_keep_the_order_of_frames():
    """The prefix is the pooled token and one token per token frame: reversing the frames of a
    Model 1 clip reverses what the decoder reads (up to the encoder's own mixing)."""
    model = captioner()
    x = clips(1)
    prefix = model.encoder.time_tokens(x)
    assert prefix.shape == (1, 1 + model.encoder.config.grid[0], 32)
    assert not torch.allclose(prefix, model.encoder.time_tokens(x.flip(2)))


def test_rows_of_a_batch_are_independent():
    model = captioner()
    x = clips(3)
    together, _ = model.caption(x, max_new_tokens=10)
    alone = [model.caption(x[b:b + 1], max_new_tokens=10)[0][0] for b in range(3)]
    assert together == alone


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_speculative_captions_follow_the_target(temperature):
    """Greedy: exactly the target's words whatever the draft. Both: a draft identical to the target
    has every proposal accepted (its distribution is the target's, including the excluded specials)."""
    from tubelet.generate import Sampling
    model, other = captioner(seed=0), captioner(layers=1, seed=3)
    x = clips(3)
    sampling = Sampling(temperature=temperature)
    plain, _ = model.caption(x, max_new_tokens=10, sampling=sampling)
    if temperature == 0:
        fast, out = model.caption(x, max_new_tokens=10, sampling=sampling, draft=other, k=3)
        assert fast == plain and out.stats.target_calls < 10 * 3
    _, out = model.caption(x, max_new_tokens=10, sampling=sampling, draft=model, k=3)
    assert out.stats.tested > 0 and out.stats.accepted == out.stats.tested


def test_the_prefix_is_outside_the_lengths_the_sampler_sees():
    model = captioner()
    lm = VideoPrefixLM(model, clips(2))
    lm.reset(2)
    assert lm.lengths.tolist() == [0, 0] and lm.prefix_length == 1 + model.encoder.config.grid[0]
    lm.extend(torch.tensor([[BOS, 5], [BOS, 0]]), torch.tensor([2, 1]))
    assert lm.lengths.tolist() == [2, 1]
    lm.crop(torch.tensor([1, 1]))
    assert lm.lengths.tolist() == [1, 1] and lm.cached(0)[0][0].shape[1] == 1


def test_gqa_cache_is_smaller_per_token():
    """Bytes of keys and values per cached token: 1 key/value head of 4 is a quarter of multi-head."""
    def per_token(kv_heads: int) -> int:
        lm = VideoPrefixLM(captioner(kv_heads=kv_heads), clips(1))
        lm.reset(1)
        held = int(lm.cache.lengths[0])
        return sum(k[:, :, :held].nbytes + v[:, :, :held].nbytes
                   for k, v in zip(lm.cache.keys, lm.cache.values)) // held
    assert per_token(1) * 4 == per_token(4)


def test_a_saved_captioner_captions_the_same(tmp_path):
    model = captioner()
    x = clips()
    tubelet.save_model(model, tmp_path / "cap")
    back = tubelet.load_model(tmp_path / "cap")
    assert isinstance(back, Captioner) and back.vocab.words == model.vocab.words
    assert back.caption(x)[0] == model.caption(x)[0]
    header = (tmp_path / "cap" / "config.json").read_text()
    (tmp_path / "cap" / "config.json").write_text(header.replace('"vocab"', '"vocabulary"'))
    with pytest.raises(CheckpointError, match="vocab"):
        tubelet.load_model(tmp_path / "cap")


def test_a_truncated_draft_encodes_each_video_once():
    """``truncated(1)`` keeps the first decoder block and shares the encoder: the speculative
    captions are the greedy ones, and the encoder runs once per batch for target and draft."""
    model = captioner()
    x = clips()
    plain, _ = model.caption(x, max_new_tokens=8)
    draft = model.truncated(1)
    assert draft.encoder is model.encoder and len(draft.decoder.blocks) == 1
    calls = []
    hook = model.encoder.tokeniser.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        fast, out = model.caption(x, max_new_tokens=8, draft=draft, k=3)
    finally:
        hook.remove()
    assert fast == plain and out.stats.draft_calls > 0
    assert len(calls) == 1  # the clips went through the encoder once, for target and draft
    with pytest.raises(Exception, match="1 to 2"):
        model.truncated(3)


def test_beam_search_captions_score_at_least_the_greedy_ones():
    """One beam is the greedy caption; wider beams find captions the model scores no lower, each
    row as if alone, and beams refuse a draft."""
    from tubelet.errors import ConfigError
    from tubelet.generate.beam import beam_search
    model = captioner()
    x = clips(3)
    greedy, _ = model.caption(x, max_new_tokens=8)
    assert model.caption(x, max_new_tokens=8, beams=1)[0] == greedy
    wide, _ = model.caption(x, max_new_tokens=8, beams=4, length_penalty=0.0)
    assert [model.caption(x[b:b + 1], max_new_tokens=8, beams=4, length_penalty=0.0)[0][0]
            for b in range(3)] == wide
    for b in range(3):
        scored = beam_search(VideoPrefixLM(model, x[b:b + 1]), [[BOS]], 8, beams=4, eos_token_id=EOS,
                             length_penalty=0.0)[1][0]
        one = beam_search(VideoPrefixLM(model, x[b:b + 1]), [[BOS]], 8, beams=1, eos_token_id=EOS,
                          length_penalty=0.0)[1][0]
        assert scored[0].score >= one[0].score - 1e-5
        assert model.vocab.decode(scored[0].tokens) == wide[b]
    with pytest.raises(ConfigError, match="beam"):
        model.caption(x, beams=2, draft=model)
