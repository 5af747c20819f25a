"""Speculative sampling samples from the target: statistical tests on toy Markov models.

The target and draft are :class:`tubelet.generate.lossless.ToyLM`s with known distributions over 5 tokens, including
a token the draft never proposes but the target allows (4) and one the draft proposes but the
target forbids in half of the states (3). The real loop (:func:`speculative_generate`) runs on
them; the empirical distribution of the first three new tokens (125 cells) and of each of the
first K+2 tokens is compared with the exact one by a chi-square test and a total-variation
bound. Deliberately wrong variants of the verification step (negative controls) must fail the
same tests. Everything is seeded: the outcome is deterministic, and the thresholds are such
that the true sampler passes with overwhelming probability for any seed.
"""

from __future__ import annotations

import pytest
import torch

import tubelet.generate.speculative as speculative
from tubelet.generate import Sampling
from tubelet.generate.lossless import DRAFT_TABLE, PROMPT, TARGET_TABLE, ToyLM, joint_test, marginal_tests
from tubelet.generate.lossless import WRONG_VERIFY as VARIANTS
from tubelet.generate.lossless import WRONG_VERIFY_GREEDY
from tubelet.generate.lossless import first_tokens as generate

P_MIN = 1e-4  # chi-square p-value the true sampler must exceed
P_MAX_WRONG = 1e-9  # and a wrong variant must fall below

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def wrong(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setattr(speculative, "verify", VARIANTS[name])
    return use


@pytest.fixture
def wrong_greedy(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setattr(speculative, "verify_greedy", WRONG_VERIFY_GREEDY[name])
    return use


SAMPLED = Sampling(temperature=1.0)
FILTERED = Sampling(temperature=0.8, top_k=4, top_p=0.9)
N_BATCH = 20000


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("sampling", [SAMPLED, FILTERED], ids=["T1", "T0.8-top4-p0.9"])
def test_speculative_sampling_matches_target_batched(k, sampling):
    tokens = generate(k, sampling, N_BATCH, batch=N_BATCH, seed=100 * k)
    r = joint_test(tokens, sampling)
    assert r["impossible"] == 0, r
    assert r["p"] > P_MIN, r
    assert r["tv"] < r["tv_max"], r
    marginals = marginal_tests(tokens, sampling)
    assert min(marginals) > P_MIN / len(marginals), marginals


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wrong_variants_fail(k, variant, wrong):
    wrong(variant)
    tokens = generate(k, SAMPLED, N_BATCH, batch=N_BATCH, seed=100 * k)
    r = joint_test(tokens, SAMPLED)
    assert r["p"] < P_MAX_WRONG and r["tv"] > r["tv_max"], r


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_speculative_sampling_matches_target_batch_of_one(k):
    n = 1500
    tokens = generate(k, SAMPLED, n, batch=1, seed=7 * k)
    r = joint_test(tokens, SAMPLED)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r


@pytest.mark.parametrize("k", [1, 5])
def test_wrong_variant_fails_batch_of_one(k, wrong):
    wrong("residual_from_q")
    tokens = generate(k, SAMPLED, 1500, batch=1, seed=7 * k)
    r = joint_test(tokens, SAMPLED)
    assert r["p"] < P_MAX_WRONG, r


def greedy_path(m: int) -> list[int]:
    model, hist = ToyLM(TARGET_TABLE), list(PROMPT)
    for _ in range(m):
        hist.append(int(model.next_distribution(hist, Sampling(temperature=0)).argmax()))
    return hist[len(PROMPT):]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("batch", [1, 64])
def test_greedy_is_the_target_greedy_path(k, batch):
    tokens = generate(k, Sampling(temperature=0), 64, batch=batch)
    assert (tokens == torch.tensor(greedy_path(k + 2))).all()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_greedy_wrong_variant_fails(k, wrong_greedy):
    wrong_greedy("shifted")
    tokens = generate(k, Sampling(temperature=0), 64, batch=64)
    assert not (tokens == torch.tensor(greedy_path(k + 2))).all()


PENALISED = Sampling(temperature=1.0, repetition_penalty=1.8)


def test_repetition_penalty_keeps_speculative_sampling_exact(monkeypatch):
    """The target penalises each verified position with the drafts before it in its context; a
    target that penalises all K+1 positions with the row's context alone (a plausible bug) fails."""
    import tubelet.generate.autoregressive as autoregressive
    tokens = generate(3, PENALISED, N_BATCH, batch=N_BATCH, seed=300)
    r = joint_test(tokens, PENALISED)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r
    assert joint_test(tokens, SAMPLED)["p"] < P_MAX_WRONG  # the penalty does change the distribution
    plain = autoregressive.autoregressive_generate(ToyLM(TARGET_TABLE), [PROMPT] * 5000, 3, sampling=PENALISED)
    r = joint_test(torch.tensor(plain.tokens), PENALISED)
    assert r["p"] > P_MIN and r["tv"] < r["tv_max"], r
    monkeypatch.setattr(speculative, "seen_after", lambda seen, tokens: seen[:, None].expand(-1, tokens.shape[1] + 1, -1))
    tokens = generate(3, PENALISED, N_BATCH, batch=N_BATCH, seed=300)
    r = joint_test(tokens, PENALISED)
    assert r["p"] < P_MAX_WRONG and r["tv"] > r["tv_max"], r


@pytest.mark.parametrize("k", [1, 4])
def test_greedy_with_a_repetition_penalty_is_the_penalised_greedy_path(k):
    from tubelet.generate import autoregressive_generate
    greedy = Sampling(temperature=0, repetition_penalty=10.0)
    plain = autoregressive_generate(ToyLM(TARGET_TABLE), [PROMPT], 12, sampling=greedy).tokens
    assert plain != [greedy_path(12)]  # the penalty changes the greedy path
    out = speculative.speculative_generate(ToyLM(TARGET_TABLE), ToyLM(DRAFT_TABLE), [PROMPT] * 3, 12, k=k,
                                           sampling=greedy)
    assert out.tokens == plain * 3
