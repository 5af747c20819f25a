"""Beam search against an exhaustive search, greedy decoding and the cache it reorders."""

import itertools
import math

import pytest
import torch

from tubelet.generate import Sampling, TubeletLM, autoregressive_generate
from tubelet.generate.beam import beam_search
from tubelet.models.decoder import Decoder, DecoderConfig

EOS = 1


def _lm(vocab: int, seed: int) -> TubeletLM:
    torch.manual_seed(seed)
    model = Decoder(DecoderConfig(vocab_size=vocab, dim=16, num_layers=2, num_heads=4, num_kv_heads=2,
                                  mlp_dim=32))
    for p in model.parameters():  # sharper distributions than the 0.02 init, so beams disagree
        p.data.mul_(8.0)
    return TubeletLM(model.eval())


def _exhaustive(model: TubeletLM, prompt: list[int], length: int, length_penalty: float):
    """Every sequence that ends at EOS or at the length limit, scored by the full-sequence model."""
    decoder = model.model
    best = None
    for n in range(1, length + 1):
        for seq in itertools.product(range(decoder.cfg.vocab_size), repeat=n):
            if EOS in seq[:-1] or (n < length and seq[-1] != EOS):
                continue
            with torch.no_grad():
                logp = torch.log_softmax(decoder(torch.tensor([prompt + list(seq)])).float(), -1)[0]
            total = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(seq))
            score = total / n ** length_penalty
            if best is None or score > best[0]:
                best = (score, list(seq), total)
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_enough_beams_find_the_best_sequence_of_an_exhaustive_search(length_penalty):
    model = _lm(vocab=4, seed=3)
    prompts = [[0, 2], [3]]
    _, hypotheses = beam_search(model, prompts, 4, beams=64, eos_token_id=EOS, length_penalty=length_penalty)
    for prompt, row in zip(prompts, hypotheses):
        score, tokens, total = _exhaustive(model, prompt, 4, length_penalty)
        assert row[0].tokens == tokens
        assert math.isclose(row[0].logprob, total, abs_tol=1e-4)
        assert math.isclose(row[0].score, score, abs_tol=1e-4)


def test_one_beam_is_greedy_decoding_and_more_beams_never_score_lower():
    model = _lm(vocab=12, seed=5)
    prompts = [[0], [2, 3, 4], [5, 6]]
    greedy = autoregressive_generate(model, prompts, 8, sampling=Sampling(temperature=0.0), eos_token_id=EOS)
    one, _ = beam_search(model, prompts, 8, beams=1, eos_token_id=EOS, length_penalty=0.0)
    assert one.tokens == greedy.tokens
    narrow = beam_search(model, prompts, 8, beams=1, eos_token_id=EOS, length_penalty=0.0)[1]
    wide = beam_search(model, prompts, 8, beams=6, eos_token_id=EOS, length_penalty=0.0)[1]
    assert all(w[0].score >= n[0].score - 1e-5 for w, n in zip(wide, narrow))
    assert any(w[0].tokens != n[0].tokens for w, n in zip(wide, narrow))  # the search did something


def test_rows_are_searched_independently():
    model = _lm(vocab=12, seed=7)
    prompts = [[0], [2, 3, 4], [5, 6]]
    together, _ = beam_search(model, prompts, 6, beams=3, eos_token_id=EOS)
    alone = [beam_search(model, [p], 6, beams=3, eos_token_id=EOS)[0].tokens[0] for p in prompts]
    assert together.tokens == alone


def test_bad_arguments_are_refused():
    model = _lm(vocab=4, seed=0)
    with pytest.raises(ValueError, match="beams"):
        beam_search(model, [[0]], 3, beams=0)
    with pytest.raises(ValueError, match="prompt"):
        beam_search(model, [[]], 3)
