"""The speculative loop on real decoders: caches, rows of a batch, greedy equality, statistics."""

from __future__ import annotations

import math

import pytest
import torch

from tubelet.generate import (Sampling, TubeletLM, autoregressive_generate, expected_tokens_per_step,
                              speculative_generate)
from tubelet.models.decoder import Decoder, DecoderConfig

from tubelet.generate.lossless import ToyLM

pytestmark = pytest.mark.usefixtures("one_thread")

V = 97


def decoders() -> tuple[Decoder, Decoder]:
    """A target and a smaller draft that agree often (the draft is the target's first layer)."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=V, dim=48, num_layers=3, num_heads=6, num_kv_heads=2, mlp_dim=96,
                        rope_theta=10000.0, tie_embeddings=False)
    target = Decoder(cfg).eval()
    with torch.no_grad():
        target.head.weight.mul_(8.0)  # peakier distributions, so acceptance is not tiny
    draft = Decoder(DecoderConfig(**{**cfg.__dict__, "num_layers": 1})).eval()
    state = {k: v for k, v in target.state_dict().items() if not k.startswith(("blocks.1", "blocks.2"))}
    draft.load_state_dict(state)
    return target, draft


PROMPTS = [[5, 9, 2], [7], [1, 2, 3, 4, 5, 6, 7, 8], [11, 12]]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_greedy_speculative_equals_greedy_autoregressive(k):
    target, draft = decoders()
    greedy = Sampling(temperature=0)
    ar = autoregressive_generate(TubeletLM(target), PROMPTS, 20, sampling=greedy)
    sp = speculative_generate(TubeletLM(target), TubeletLM(draft), PROMPTS, 20, k=k, sampling=greedy)
    assert sp.tokens == ar.tokens
    assert sp.stats.target_calls < ar.stats.target_calls


@pytest.mark.parametrize("sampling", [Sampling(1.0), Sampling(0.0), Sampling(0.7, top_k=20, top_p=0.9)])
def test_caches_equal_a_fresh_prefill_after_every_step(sampling):
    target, draft = decoders()
    T, D = TubeletLM(target), TubeletLM(draft)
    checked = []

    def check(rows):
        for b in range(rows.batch_size):
            accepted = rows.tokens(b)[:-1]  # the last token is fed by the next step
            for lm, model in ((T, target), (D, draft)):
                fresh = TubeletLM(model)
                fresh.reset(1)
                fresh.extend(torch.tensor([accepted]), torch.tensor([len(accepted)]))
                assert int(lm.lengths[b]) <= len(accepted)
                n = int(lm.lengths[b])
                for (k, v), (k0, v0) in zip(lm.cached(b), fresh.cached(0)):
                    assert torch.allclose(k, k0[:, :n], atol=1e-5)
                    assert torch.allclose(v, v0[:, :n], atol=1e-5)
            assert int(T.lengths[b]) == len(accepted)  # the target never lags
        checked.append(1)

    speculative_generate(T, D, PROMPTS, 16, k=3, sampling=sampling, seed=4, on_step=check)
    assert len(checked) >= 4


@pytest.mark.parametrize("sampling", [Sampling(1.0), Sampling(0.8, top_k=30, top_p=0.95)])
def test_a_row_does_not_depend_on_the_other_rows(sampling):
    target, draft = decoders()
    seeds = [10, 20, 30, 40]
    batch = speculative_generate(TubeletLM(target), TubeletLM(draft), PROMPTS, 24, k=4,
                                 sampling=sampling, seed=seeds)
    for prompt, seed, tokens in zip(PROMPTS, seeds, batch.tokens):
        alone = speculative_generate(TubeletLM(target), TubeletLM(draft), [prompt], 24, k=4,
                                     sampling=sampling, seed=[seed])
        assert alone.tokens[0] == tokens
    hist = batch.stats.accepted_histogram
    assert sum(1 for c in hist if c) > 1  # rows did accept different numbers of tokens


def test_eos_ends_a_row():
    target, draft = decoders()
    ar = autoregressive_generate(TubeletLM(target), PROMPTS, 12, sampling=Sampling(0))
    eos = ar.tokens[0][3]
    sp = speculative_generate(TubeletLM(target), TubeletLM(draft), PROMPTS, 12, k=3,
                              sampling=Sampling(0), eos_token_id=eos)
    assert sp.tokens[0] == ar.tokens[0][:ar.tokens[0].index(eos) + 1]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_tokens_per_step_match_the_formula_for_the_measured_acceptance(k):
    """With context-free draft and target each draft token is accepted independently with
    probability sum_x min(p, q), so tokens per step = (1 - a^(K+1)) / (1 - a)."""
    g = torch.Generator().manual_seed(5)
    q = torch.rand(6, generator=g, dtype=torch.float64) ** 2
    p = torch.rand(6, generator=g, dtype=torch.float64) ** 2
    q, p = q / q.sum(), p / p.sum()
    target, draft = ToyLM(q.expand(6, 2, 6).clone()), ToyLM(p.expand(6, 2, 6).clone())
    out = speculative_generate(target, draft, [[0]] * 4000, 30, k=k, seed=k)
    s = out.stats
    a = s.acceptance_rate
    assert abs(a - float(torch.minimum(p, q).sum())) < 0.01
    counts = torch.tensor(s.accepted_histogram, dtype=torch.float64)
    per_step = torch.arange(1, k + 2, dtype=torch.float64)
    mean = float((counts * per_step).sum() / counts.sum())
    sd = math.sqrt(float((counts * (per_step - mean) ** 2).sum() / counts.sum()))
    assert abs(mean - s.tokens_per_step) < 1e-9
    assert abs(s.tokens_per_step - expected_tokens_per_step(a, k)) < 4 * sd / math.sqrt(counts.sum())
    assert abs(s.target_calls_per_token - s.target_calls * 4000 / s.generated) < 1e-12


def test_mismatched_vocabularies_are_refused():
    target, _ = decoders()
    other = Decoder(DecoderConfig(vocab_size=V + 1, dim=16, num_layers=1, num_heads=2, num_kv_heads=1,
                                  mlp_dim=16))
    with pytest.raises(ValueError, match="vocabularies differ"):
        speculative_generate(TubeletLM(target), TubeletLM(other), [[1]], 4)


# ---- the crop contract: a CausalLM that implements crop literally ---------------------------
class LiteralToyLM(ToyLM):
    """Implements the protocol literally: crop keeps exactly ``lengths[b]`` tokens (no minimum
    with what the row holds), as a plug-in written from the protocol's docstring would."""

    def crop(self, lengths: torch.Tensor) -> None:
        self.lengths = lengths.clone()


class StrictLM(TubeletLM):
    """Refuses a crop to more tokens than a row holds."""

    def crop(self, lengths: torch.Tensor) -> None:
        assert (lengths <= self.lengths).all(), (lengths.tolist(), self.lengths.tolist())
        super().crop(lengths)


@pytest.mark.parametrize("k", [1, 4])
def test_a_literal_crop_keeps_acceptance_one_with_a_draft_identical_to_the_target(k):
    """Asking the draft to crop to a length it does not hold (all K accepted) made a literal
    crop count a token it never saw: acceptance 1.000 -> about 0.92."""
    g = torch.Generator().manual_seed(2)
    table = torch.rand(6, 2, 6, generator=g, dtype=torch.float64) ** 3
    table = table / table.sum(-1, keepdim=True)
    out = speculative_generate(ToyLM(table), LiteralToyLM(table.clone()), [[0, 1]] * 500, 24, k=k, seed=3)
    assert out.stats.acceptance_rate == 1.0
    assert out.stats.accepted_histogram[k] == sum(out.stats.accepted_histogram)


def test_the_draft_is_never_asked_to_crop_past_what_it_holds():
    target, draft = decoders()
    out = speculative_generate(StrictLM(target), StrictLM(target), PROMPTS, 16, k=3, sampling=Sampling(0))
    assert out.stats.accepted_histogram[3] > 0  # steps that accepted every draft happened


# ---- several end-of-sequence tokens ---------------------------------------------------------
@pytest.mark.parametrize("speculative", [False, True])
def test_a_list_of_eos_tokens_stops_on_either(speculative):
    target, draft = decoders()
    ar = autoregressive_generate(TubeletLM(target), PROMPTS, 12, sampling=Sampling(0))
    row = ar.tokens[2]
    first, later = row[3], row[6]
    never = next(t for t in range(V) if t not in row)
    expected = row[:row.index(first) + 1]

    def run(eos):
        if speculative:
            return speculative_generate(TubeletLM(target), TubeletLM(draft), PROMPTS, 12, k=3,
                                        sampling=Sampling(0), eos_token_id=eos).tokens[2]
        return autoregressive_generate(TubeletLM(target), PROMPTS, 12, sampling=Sampling(0),
                                       eos_token_id=eos).tokens[2]

    assert run([never, first]) == expected
    assert run([later, first]) == expected  # the first to occur ends the row, whatever its order
    assert run((first,)) == run(first) == expected
