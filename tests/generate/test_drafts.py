"""Drafts behind the one Draft interface: prompt lookup (n-gram) and model drafts with a
dynamic length. Each must leave the output exactly the target's distribution: the statistical
tests of test_lossless, on the same toy target, with a wrong variant each that they catch."""

from __future__ import annotations

import pytest
import torch

from tubelet.generate import Sampling, speculative_generate
from tubelet.generate.drafts import ModelDraft, NGramDraft, Proposal, prompt_lookup
from tubelet.generate.rows import Rows

from tubelet.generate.lossless import (DRAFT_TABLE, FIRST, TARGET_TABLE, TOY_VOCAB, V, ReducedToyLM, ToyLM,
                                      joint_test, marginal_tests)

from .test_lossless import N_BATCH, P_MAX_WRONG, P_MIN, greedy_path

pytestmark = pytest.mark.usefixtures("one_thread")

# a prompt whose last two tokens occurred before: prompt lookup proposes from the first step
REPEATING = [1, 2, 0, 1, 2, 3, 1, 2]


def test_prompt_lookup_takes_the_latest_longest_match_and_stops_at_the_end():
    buffer = torch.tensor([
        [1, 2, 3, 4, 9, 2, 3, 7, 1, 2, 3, 0],  # "2 3" last seen at 5 -> 7 1 2 3; "1 2 3" at 0 -> 4 9 2
        [5, 6, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0],  # length 4: "5 6" at 0 -> 5 6 (the row's end)
        [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0],  # length 4: no earlier 4, "3 4", "2 3 4"
        [7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # "7 7" at 0 -> one token (the match overlaps the end)
    ])
    lengths = torch.tensor([11, 4, 4, 3])
    tokens, n = prompt_lookup(buffer, lengths, max_ngram=3, k=4)
    assert n.tolist() == [4, 2, 0, 1]
    assert tokens[0].tolist() == [4, 9, 2, 3]
    assert tokens[1, :2].tolist() == [5, 6] and tokens[3, :1].tolist() == [7]
    tokens, n = prompt_lookup(buffer, lengths, max_ngram=2, k=3)  # "2 3" now: latest at 5
    assert n[0] == 3 and tokens[0].tolist() == [7, 1, 2]


def test_prompt_lookup_prefers_a_match_followed_by_k_tokens_over_the_latest():
    """The latest match of a repeating pattern sits just behind the row's end; an earlier one
    followed by K tokens proposes K (a match that ends at the row's end is never one)."""
    buffer = torch.tensor([
        [4, 5, 8, 9, 1, 4, 5, 4, 5],  # "4 5" at 5 is followed by 2 tokens, at 0 by 3 or more
        [4, 5, 6, 4, 5, 4, 5, 0, 0],  # K = 6: no match followed by 6; the earliest is followed by most
    ])
    tokens, n = prompt_lookup(buffer, torch.tensor([9, 7]), max_ngram=2, k=3)
    assert n[0] == 3 and tokens[0].tolist() == [8, 9, 1]
    tokens, n = prompt_lookup(buffer, torch.tensor([9, 7]), max_ngram=2, k=6)
    assert n[1] == 5 and tokens[1, :5].tolist() == [6, 4, 5, 4, 5]


class SmoothedNGramDraft(NGramDraft):
    """Wrong: proposes the n-gram continuation deterministically but reports a smoothed p
    (half on the proposal, half spread), so tokens are accepted with min(1, 2 q(x))."""

    def propose(self, rows, k, sampling, u):
        out = super().propose(rows, k, sampling, u)
        return Proposal(out.tokens, 0.5 * out.p + 0.5 / self.vocab_size, out.num_drafted, out.calls)


class ShiftedThresholdDraft(ModelDraft):
    """Wrong: a dynamic-length draft that reports, for each token after the first, the
    distribution of the step before (p is then not what the token was drawn from)."""

    def propose(self, rows, k, sampling, u):
        out = super().propose(rows, k, sampling, u)
        p = out.p.clone()
        p[:, 1:] = p[:, :-1].clone()
        return Proposal(out.tokens, p, out.num_drafted, out.calls)


class UnnormalisedReducedDraft(ModelDraft):
    """Wrong: a reduced-vocabulary draft that samples from its softmax over V' but reports the
    full-vocabulary distribution restricted to V' (unnormalised: it sums to less than 1)."""

    def propose(self, rows, k, sampling, u):
        self.lm.full.clear()
        out = super().propose(rows, k, sampling, u)
        full = torch.stack(self.lm.full, 1)[:, :out.p.shape[1]].float()  # (B, K', V), temperature 1
        return Proposal(out.tokens, full * (out.p > 0), out.num_drafted, out.calls)


class UnfilteredReducedDraft(ModelDraft):
    """Wrong: a reduced-vocabulary draft that samples from the filtered distribution (temperature,
    top-k, top-p) but reports the unfiltered one (its plain softmax over V')."""

    def propose(self, rows, k, sampling, u):
        self.lm.full.clear()
        out = super().propose(rows, k, sampling, u)
        full = torch.stack(self.lm.full, 1)[:, :out.p.shape[1]].float()
        kept = full.index_fill(-1, self.vocab, 0.0) == 0  # V' (a token outside it has weight 0 here)
        reduced = torch.where(kept, full, 0.0)
        return Proposal(out.tokens, reduced / reduced.sum(-1, keepdim=True), out.num_drafted, out.calls)


class UntemperedReportDraft(ModelDraft):
    """Wrong: samples with its draft temperature but reports the distribution at temperature 1."""

    def propose(self, rows, k, sampling, u):
        out = super().propose(rows, k, sampling, u)
        p = out.p.double() ** self.temperature  # softmax(z / t) ** t is proportional to softmax(z)
        return Proposal(out.tokens, (p / p.sum(-1, keepdim=True)).float(), out.num_drafted, out.calls)


def reduced_draft(cls=ModelDraft):
    return cls(ReducedToyLM(DRAFT_TABLE, TOY_VOCAB), threshold=0.55, vocab=torch.tensor(TOY_VOCAB))


def generate(make_draft, k: int, sampling: Sampling, n: int, prompt: list[int], seed: int) -> tuple:
    gen = speculative_generate(ToyLM(TARGET_TABLE), make_draft(), [prompt] * n, max(FIRST, k + 2), k=k,
                               sampling=sampling, seed=seed)
    return torch.tensor(gen.tokens), gen.stats


DRAFTS = {
    "ngram2": lambda: NGramDraft(2, V),
    "model_threshold": lambda: ModelDraft(ToyLM(DRAFT_TABLE), threshold=0.55),
    "reduced_vocab": reduced_draft,
    "tempered": lambda: ModelDraft(ToyLM(DRAFT_TABLE), threshold=0.55, temperature=0.5),
}
WRONG = {
    "ngram2": lambda: SmoothedNGramDraft(2, V),
    "model_threshold": lambda: ShiftedThresholdDraft(ToyLM(DRAFT_TABLE), threshold=0.55),
    "reduced_vocab": lambda: reduced_draft(UnnormalisedReducedDraft),
    "tempered": lambda: UntemperedReportDraft(ToyLM(DRAFT_TABLE), threshold=0.55, temperature=0.5),
}
FILTERED = Sampling(temperature=0.8, top_k=4, top_p=0.9)


@pytest.mark.parametrize("sampling,k", [(Sampling(1.0), 2), (Sampling(1.0), 4), (FILTERED, 3)],
                         ids=["T1-K2", "T1-K4", "T0.8-top4-p0.9-K3"])
@pytest.mark.parametrize("draft", sorted(DRAFTS))
def test_drafts_sample_from_the_target(draft, sampling, k):
    tokens, stats = generate(DRAFTS[draft], k, sampling, N_BATCH, REPEATING, seed=11 * k)
    r = joint_test(tokens, sampling, REPEATING)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r
    marginals = marginal_tests(tokens, sampling, REPEATING)
    assert min(marginals) > P_MIN / len(marginals), marginals
    # the drafts did propose, and not always K tokens (no match / low confidence)
    assert 0 < stats.drafted < k * stats.row_steps and stats.accepted > 0


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("draft", sorted(WRONG))
def test_wrong_drafts_fail(draft, k):
    tokens, _ = generate(WRONG[draft], k, Sampling(1.0), N_BATCH, REPEATING, seed=11 * k)
    r = joint_test(tokens, Sampling(1.0), REPEATING)
    assert r["p"] < P_MAX_WRONG and r["tv"] > r["tv_max"], r


def test_reduced_draft_with_top_k_passes_and_its_unfiltered_report_fails():
    top2 = Sampling(temperature=0.7, top_k=2)  # top-k cuts one of the draft's 3 tokens
    tokens, _ = generate(reduced_draft, 3, top2, N_BATCH, REPEATING, seed=33)
    r = joint_test(tokens, top2, REPEATING)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r
    tokens, _ = generate(lambda: reduced_draft(UnfilteredReducedDraft), 3, top2, N_BATCH, REPEATING, seed=33)
    r = joint_test(tokens, top2, REPEATING)
    assert r["p"] < P_MAX_WRONG and r["tv"] > r["tv_max"], r


def test_threshold_proposes_the_uncertain_token_and_stops_after_it():
    """A draft call whose token falls under the threshold is paid for: its token is proposed, and
    only the calls after it are saved. A threshold of 1 (no toy distribution is one-hot) drafts
    exactly one token per row, in one call, from the distribution the plain draft gives."""
    rows = Rows([REPEATING] * 8)
    u = torch.rand(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain, stopped = ModelDraft(ToyLM(DRAFT_TABLE)), ModelDraft(ToyLM(DRAFT_TABLE), threshold=1.0)
    for draft in plain, stopped:
        draft.reset(8)
    full = plain.propose(rows, 4, Sampling(1.0), u)
    one = stopped.propose(rows, 4, Sampling(1.0), u)
    assert one.calls == 1 and one.num_drafted.tolist() == [1] * 8
    assert (one.tokens[:, 0] == full.tokens[:, 0]).all() and torch.equal(one.p[:, 0], full.p[:, 0])
    # rows stop at their own positions: a threshold the toy draft passes at some steps only
    some = ModelDraft(ToyLM(DRAFT_TABLE), threshold=0.55)
    some.reset(8)
    out = some.propose(rows, 4, Sampling(1.0), u)
    assert (out.num_drafted >= 1).all() and out.calls == int(out.num_drafted.max())


def test_threshold_reads_the_product_of_the_top_probabilities():
    """Every distribution of this draft has its top at 0.8: no single one falls under 0.6, but
    0.8^3 = 0.512 does, so each row proposes 3 tokens in 3 calls (K = 6)."""
    table = torch.full((V, 2, V), 0.05, dtype=torch.float64)
    table[..., 0] = 0.8
    draft = ModelDraft(ToyLM(table), threshold=0.6)
    draft.reset(4)
    u = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = draft.propose(Rows([REPEATING] * 4), 6, Sampling(1.0), u)
    assert out.calls == 3 and out.num_drafted.tolist() == [3] * 4


def test_expected_tokens_per_step_counts_the_lengths_the_steps_drafted():
    """With a dynamic length a step drafts 1..K tokens: the formula's expectation is averaged over
    the lengths drafted, not taken at K (which would promise more than any run could give)."""
    from tubelet.generate import expected_tokens_per_step
    from tubelet.generate.commands import acceptance_line
    _, stats = generate(DRAFTS["model_threshold"], 4, Sampling(1.0), 500, REPEATING, seed=3)
    h = stats.drafted_histogram
    assert sum(h) == stats.row_steps and sum(d * n for d, n in enumerate(h)) == stats.drafted and h[4] < sum(h)
    a = stats.acceptance_rate
    expected = sum(n * expected_tokens_per_step(a, d) for d, n in enumerate(h)) / sum(h)
    assert stats.expected_tokens_per_step == pytest.approx(expected) and expected < expected_tokens_per_step(a, 4)
    assert stats.summary()["expected_tokens_per_step"] == pytest.approx(expected)
    assert f"expected {expected:.2f} for a={a:.2f}, {stats.drafted / stats.row_steps:.2f} drafted" \
        in acceptance_line(stats)


def test_reduced_draft_never_proposes_outside_its_vocabulary():
    tokens, stats = generate(reduced_draft, 4, Sampling(1.0), 2000, REPEATING, seed=5)
    draft = ModelDraft(ReducedToyLM(DRAFT_TABLE, TOY_VOCAB), vocab=torch.tensor(TOY_VOCAB))
    draft.reset(64)
    proposal = draft.propose(Rows([REPEATING] * 64), 4, Sampling(1.0), torch.rand(64, 4, dtype=torch.float64))
    assert proposal.p.shape[-1] == V and torch.allclose(proposal.p.sum(-1)[proposal.num_drafted > 0][:, 0],
                                                        torch.tensor(1.0))
    assert (proposal.p[..., [2, 4]] == 0).all() and set(proposal.tokens.flatten().tolist()) <= set(TOY_VOCAB)
    assert {2, 4} <= set(tokens.flatten().tolist())  # the residual still gives the target's tokens 2 and 4


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("draft", sorted(DRAFTS))
def test_greedy_drafts_give_the_target_greedy_path(draft, k):
    from .test_lossless import PROMPT
    tokens, stats = generate(DRAFTS[draft], k, Sampling(0), 16, PROMPT, seed=0)
    assert (tokens == torch.tensor(greedy_path(k + 2))).all()
    if draft == "model_threshold" and k > 1:  # greedy p is one-hot: the threshold reads the plain softmax
        assert stats.drafted < k * stats.row_steps  # (the first token is always proposed)


def test_ngram_greedy_accepts_a_repeated_text():
    """Greedy target that loops: prompt lookup proposes the loop and gets it accepted."""
    table = torch.full((V, 2, V), 0.01, dtype=torch.float64)
    for last in range(V):
        table[last, :, (last + 1) % V] = 1.0  # 0 1 2 3 4 0 1 ...
    table = table / table.sum(-1, keepdim=True)
    out = speculative_generate(ToyLM(table), NGramDraft(3, V), [[0, 1, 2, 3, 4, 0, 1]], 30, k=4,
                               sampling=Sampling(0))
    assert out.tokens[0] == [(2 + i) % V for i in range(30)]
    assert out.stats.acceptance_rate == 1.0 and out.stats.target_calls <= 30 // 5 + 1
