"""transformers causal LMs behind the same protocol: a tiny random Llama, no download."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is optional: pip install '.[hf]'")

from tubelet.generate import (HFCausalLM, Sampling, TubeletLM, autoregressive_generate,  # noqa: E402
                              speculative_generate)
from tubelet.models.decoder import config_from_llama, from_llama_state_dict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = [[5, 9, 2], [7], [1, 2, 3, 4, 5, 6, 7, 8], [11, 12]]


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96,
                                   num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                                   rope_theta=10000.0, tie_word_embeddings=False, rms_norm_eps=1e-5)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)  # peakier, so a truncated draft agrees often
    return model


def test_llama_weights_load_into_the_tubelet_decoder(llama):
    ours = from_llama_state_dict(llama.state_dict(), config_from_llama(llama.config)).eval()
    x = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        assert torch.allclose(ours(x), llama(x).logits, atol=1e-4)


def test_adapter_batches_rows_of_different_lengths(llama):
    lm = HFCausalLM(llama)
    lm.reset(2)
    seqs = [torch.randint(0, 97, (9,)) for _ in range(2)]
    padded = torch.stack([torch.cat([s[:3], torch.zeros(3, dtype=torch.long)]) if b == 0 else s[:6]
                          for b, s in enumerate(seqs)])
    lm.extend(padded, torch.tensor([3, 6]))
    lm.crop(torch.tensor([2, 5]))  # a hole in row 0's slots, none in row 1's... then more tokens
    more = torch.stack([seqs[0][2:5], seqs[1][5:8]])
    out = lm.extend(more, torch.tensor([3, 3]))
    with torch.no_grad():
        for b, start in enumerate((2, 5)):
            alone = llama(seqs[b][None, :start + 3]).logits[0, start:]
            assert torch.allclose(out[b], alone, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculative_with_a_transformers_target(llama, k):
    draft = from_llama_state_dict(llama.state_dict(), config_from_llama(llama.config, num_layers=1))
    greedy = Sampling(temperature=0)
    ar = autoregressive_generate(HFCausalLM(llama), PROMPTS, 16, sampling=greedy)
    sp = speculative_generate(HFCausalLM(llama), TubeletLM(draft), PROMPTS, 16, k=k, sampling=greedy)
    assert sp.tokens == ar.tokens
    hf = llama.generate(torch.tensor([PROMPTS[0]]), max_new_tokens=16, do_sample=False)
    assert sp.tokens[0] == hf[0, len(PROMPTS[0]):].tolist()


def test_transformers_cache_equals_a_fresh_prefill_after_every_step(llama):
    draft = from_llama_state_dict(llama.state_dict(), config_from_llama(llama.config, num_layers=1))
    T = HFCausalLM(llama)
    steps = []

    def check(rows):
        for b in range(rows.batch_size):
            accepted = rows.tokens(b)[:-1]
            fresh = HFCausalLM(llama)
            fresh.extend(torch.tensor([accepted]), torch.tensor([len(accepted)]))
            assert int(T.lengths[b]) == len(accepted)
            for (k, v), (k0, v0) in zip(T.cached(b), fresh.cached(0)):
                assert torch.allclose(k, k0, atol=1e-4) and torch.allclose(v, v0, atol=1e-4)
        steps.append(1)

    out = speculative_generate(T, TubeletLM(draft), PROMPTS, 16, k=3, sampling=Sampling(1.0),
                               seed=1, on_step=check)
    assert len(steps) >= 4 and sum(1 for c in out.stats.accepted_histogram if c) > 1


def test_adapter_passes_the_cache_under_the_current_name(llama):
    """transformers 5.x takes the cache as ``cache``; ``past_key_values`` warns that it is
    removed in 5.40. The adapter uses the name the installed forward declares, silently."""
    import inspect
    import warnings

    lm = HFCausalLM(llama)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        lm.extend(torch.tensor([[1, 2, 3]]), torch.tensor([3]))
        out = lm.extend(torch.tensor([[4]]), torch.tensor([1]))
    with torch.no_grad():
        assert torch.allclose(out[0, 0], llama(torch.tensor([[1, 2, 3, 4]])).logits[0, -1], atol=1e-4)
    assert lm.cache_argument in inspect.signature(llama.forward).parameters


def test_a_feature_draft_reads_a_transformers_targets_features(llama):
    from tubelet.generate.drafts import FeatureDraft
    from tubelet.generate.models import FeatureLM
    from tubelet.models.decoder import FeatureDraftModel
    whole = from_llama_state_dict(llama.state_dict(), config_from_llama(llama.config)).eval()
    draft = FeatureDraftModel.from_target(whole, 1).eval()
    lm = HFCausalLM(llama)
    feature_lm = FeatureLM(draft, lm)
    greedy = Sampling(0.0)
    out = speculative_generate(lm, FeatureDraft(feature_lm), PROMPTS, 12, k=3, sampling=greedy)
    assert out.tokens == autoregressive_generate(HFCausalLM(llama), PROMPTS, 12, sampling=greedy).tokens
    # the features it read are the transformers model's, as the tubelet copy computes them
    row = PROMPTS[2] + out.tokens[2]
    with torch.no_grad():
        f = whole.features(torch.tensor([row]))[0]
    n = int(feature_lm.known[2])
    assert n >= len(PROMPTS[2])
    torch.testing.assert_close(feature_lm.features[2, :n], f[:n], atol=1e-4, rtol=1e-4)
