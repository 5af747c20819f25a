"""Speculative sampling samples from the target: statistical tests on toy Markov models.

The target and draft are :class:`toy.ToyLM`s with known distributions over 5 tokens, including
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
from tubelet.generate import Sampling, sample, speculative_generate

from tubelet.generate.lossless import (ToyLM, chi_square, exact_joint, exact_marginals, total_variation,
                                      tv_threshold)

V = 5
PROMPT = [1, 2]
FIRST = 3  # the joint distribution of the first FIRST new tokens is tested
P_MIN = 1e-4  # chi-square p-value the true sampler must exceed
P_MAX_WRONG = 1e-9  # and a wrong variant must fall below


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    q = -torch.rand(V, 2, V, generator=g, dtype=torch.float64).log()  # Exp(1) -> Dirichlet(1)
    p = -torch.rand(V, 2, V, generator=g, dtype=torch.float64).log()
    q = q ** 2  # peakier than Dirichlet(1)
    p[..., 4] = 0.0  # the draft never proposes token 4, which the target allows
    q[:, 1, 3] = 0.0  # the target forbids token 3 after an odd sum; the draft proposes it
    return q / q.sum(-1, keepdim=True), p / p.sum(-1, keepdim=True)


TARGET_TABLE, DRAFT_TABLE = _tables()


# ---- negative controls: wrong verification steps -----------------------------------------
def verify_deterministic(draft_tokens, p, q, r, u, num_drafted=None):
    """Wrong: accept whenever q(x) >= p(x), with no randomness."""
    B, K = draft_tokens.shape
    idx = draft_tokens.unsqueeze(-1)
    ok = p.gather(-1, idx).squeeze(-1) <= q[:, :K].gather(-1, idx).squeeze(-1)
    n = ok.long().cumprod(-1).sum(-1)
    rows = torch.arange(B)
    p_n = torch.cat([p, torch.zeros_like(p[:, :1])], 1)[rows, n]
    res = (q[rows, n] - p_n).clamp(min=0)
    res = torch.where(res.sum(-1, keepdim=True) <= 0, q[rows, n], res)
    return n, sample(res, u)


def verify_residual_from_q(draft_tokens, p, q, r, u, num_drafted=None):
    """Wrong: on rejection, sample from q instead of max(0, q - p)."""
    n, _ = speculative.__dict__["_true_verify"](draft_tokens, p, q, r, u, num_drafted)
    return n, sample(q[torch.arange(q.shape[0]), n], u)


def verify_shifted(draft_tokens, p, q, r, u, num_drafted=None):
    """Wrong: the target's distributions off by one position (a misaligned mask or offset)."""
    shifted = torch.cat([q[:, 1:], q[:, -1:]], dim=1)
    return speculative.__dict__["_true_verify"](draft_tokens, p, shifted, r, u, num_drafted)


pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = {"deterministic": verify_deterministic, "residual_from_q": verify_residual_from_q,
            "shifted": verify_shifted}


def generate(k: int, sampling: Sampling, n: int, batch: int, seed: int = 0) -> torch.Tensor:
    """(n, K+2) first new tokens of n independent generations, ``batch`` rows per call."""
    out = []
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        gen = speculative_generate(ToyLM(TARGET_TABLE), ToyLM(DRAFT_TABLE), [PROMPT] * rows,
                                   max(FIRST, k + 2), k=k, sampling=sampling, seed=seed + start)
        out.append(torch.tensor(gen.tokens))
    return torch.cat(out)


def joint_test(tokens: torch.Tensor, sampling: Sampling, prompt: list[int] = PROMPT) -> dict:
    exact = exact_joint(ToyLM(TARGET_TABLE), prompt, FIRST, sampling)
    probs = torch.tensor(list(exact.values()), dtype=torch.float64)
    index = {seq: i for i, seq in enumerate(exact)}
    counts = torch.zeros(len(exact), dtype=torch.float64)
    for seq in map(tuple, tokens[:, :FIRST].tolist()):
        counts[index[seq]] += 1
    stat, df, p = chi_square(counts, probs)
    tv = total_variation(counts, probs)
    impossible = int(counts[probs == 0].sum())
    return {"chi2": stat, "df": df, "p": p, "tv": tv, "tv_max": tv_threshold(probs, len(tokens)),
            "impossible": impossible}


def marginal_tests(tokens: torch.Tensor, sampling: Sampling, prompt: list[int] = PROMPT) -> list[float]:
    """Chi-square p-value of each position's marginal (covers the bonus and the next step)."""
    m = tokens.shape[1]
    exact = exact_marginals(ToyLM(TARGET_TABLE), prompt, m, sampling)
    return [chi_square(torch.bincount(tokens[:, j], minlength=V), exact[j])[2] for j in range(m)]


@pytest.fixture
def wrong(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setitem(speculative.__dict__, "_true_verify", speculative.verify)
        monkeypatch.setattr(speculative, "verify", VARIANTS[name])
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
def test_greedy_wrong_variant_fails(k, wrong):
    wrong("shifted")
    tokens = generate(k, Sampling(temperature=0), 64, batch=64)
    assert not (tokens == torch.tensor(greedy_path(k + 2))).all()
