"""Tree verification: alternatives tried where the draft's chain is rejected, read by the target
in the same call as the chain. Each candidate reads its own path, the accepted one's keys and
values move to where the sequence goes on, greedy output is the target's, and sampling stays the
target's distribution (with wrong variants that the same tests catch). A feature draft with a
tree: tests/generate/test_feature_draft.py."""

from __future__ import annotations

import pytest
import torch

import tubelet.generate.speculative as speculative
from tubelet.errors import UsageError
from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.drafts import ModelDraft, others
from tubelet.generate.lossless import TARGET_TABLE, WRONG_TREE, ToyLM, first_tokens, joint_test, marginal_tests
from tubelet.generate.models import TubeletLM
from tubelet.generate.rows import Rows
from tubelet.generate.speculative import tree_layout
from tubelet.models.decoder import Decoder

from .test_commands import parse, tiny
from .test_feature_draft import PROMPTS, target_and_draft
from .test_lossless import N_BATCH, P_MAX_WRONG, P_MIN, greedy_path

pytestmark = pytest.mark.usefixtures("one_thread")


def a_draft_for(target: Decoder, noise: float = 0.6) -> Decoder:
    """A draft that agrees with ``target`` in part: its weights with noise."""
    torch.manual_seed(5)
    draft = Decoder(target.cfg).eval()
    with torch.no_grad():
        for mine, theirs in zip(draft.parameters(), target.parameters()):
            mine.copy_(theirs + noise * theirs.std() * torch.randn_like(theirs))
    return draft


def test_each_candidate_of_a_tree_reads_its_own_path():
    target, _ = target_and_draft()
    cache = target.new_cache(2)
    with torch.no_grad():  # row 0 has 4 tokens cached and 1 pending, row 1 none cached and 2 pending
        target(torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]]), cache, torch.tensor([4, 0]))
    pending, num_pending = torch.tensor([[9, 0], [5, 6]]), torch.tensor([1, 2])
    chain = torch.tensor([[11, 12, 13], [21, 22, 23]])
    alternatives, depth = torch.tensor([[14, 15, 16], [24, 25, 26]]), torch.tensor([0, 0, 2])
    tokens, tree, num_valid = tree_layout(pending, num_pending, chain, alternatives, depth)
    with torch.no_grad():
        logits = target(tokens, cache, num_valid, tree=tree)
    cached = [[1, 2, 3, 4], []]
    for b in range(2):
        before = cached[b] + pending[b, :int(num_pending[b])].tolist()
        paths = [before[:len(cached[b]) + i + 1] for i in range(int(num_pending[b]))]
        paths += [before + chain[b, :t + 1].tolist() for t in range(3)]
        paths += [before + chain[b, :int(d)].tolist() + [int(x)] for x, d in zip(alternatives[b], depth)]
        assert len(paths) == int(num_valid[b])
        for i, path in enumerate(paths):
            with torch.no_grad():
                expected = target(torch.tensor([path]))[0, -1]
            torch.testing.assert_close(logits[b, i], expected, atol=1e-4, rtol=1e-4)
    # the wrong variant of the distribution tests (the causal mask) reads other paths
    wrong = WRONG_TREE["TokenTree"]["causal_mask"](tree.depth, tree.visible)
    cache.crop(torch.tensor([4, 0]))
    with torch.no_grad():
        assert not torch.allclose(target(tokens, cache, num_valid, tree=wrong), logits, atol=1e-3)


def target_cache_check(target: Decoder, lm: TubeletLM, worst: list[float]):
    def check(rows: Rows) -> None:
        for r in range(rows.batch_size):
            n = int(lm.lengths[r])
            assert n == int(rows.lengths[r]) - 1
            fresh = target.new_cache(1)
            with torch.no_grad():
                target(rows.buffer[r:r + 1, :n], fresh)
            for layer in (0, len(target.blocks) - 1):
                mine, theirs = lm.cached(r)[layer], fresh.rows(layer)[0]
                worst.append(max(float((m - t).abs().max()) for m, t in zip(mine, theirs)))
    return check


@pytest.mark.parametrize("sampling", [Sampling(1.0), Sampling(0.0)], ids=["T1", "greedy"])
def test_the_target_keeps_the_accepted_path_and_greedy_is_its_own(sampling):
    target, _ = target_and_draft()
    lm, worst = TubeletLM(target), []
    draft = ModelDraft(TubeletLM(a_draft_for(target)))
    out = speculative_generate(lm, draft, PROMPTS, 30, k=3, sampling=sampling, seed=2, alternatives=(2, 1),
                               on_step=target_cache_check(target, lm, worst))
    assert out.stats.alternatives_accepted > 0 and out.stats.alternatives > 0
    assert max(worst) < 1e-4
    if sampling.greedy:
        plain = autoregressive_generate(TubeletLM(target), PROMPTS, 30, sampling=sampling).tokens
        assert out.tokens == plain


class NoMove(TubeletLM):
    """Wrong: leaves the accepted alternative's keys and values where the tree put them."""

    def move(self, source, to):
        pass


def test_a_target_that_does_not_move_the_accepted_alternative_is_caught():
    target, _ = target_and_draft()
    lm, worst = NoMove(target), []
    draft = ModelDraft(TubeletLM(a_draft_for(target)))
    speculative_generate(lm, draft, PROMPTS, 30, k=3, sampling=Sampling(1.0), seed=2, alternatives=(2, 1),
                         on_step=target_cache_check(target, lm, worst))
    assert max(worst) > 1e-2


@pytest.mark.parametrize("alternatives,k,sampling", [
    ((1,), 1, Sampling(1.0)),
    ((2, 1), 3, Sampling(0.8, top_k=4, top_p=0.9)),
    ((3, 3, 3), 3, Sampling(1.0)),
], ids=["K1-alt1-T1", "K3-alt2,1-T0.8-top4-p0.9", "K3-alt3,3,3-T1"])
def test_alternatives_sample_from_the_target(alternatives, k, sampling):
    tokens = first_tokens(k, sampling, N_BATCH, batch=N_BATCH, seed=11 * k, alternatives=alternatives)
    r = joint_test(tokens, sampling)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r
    marginals = marginal_tests(tokens, sampling)
    assert min(marginals) > P_MIN / len(marginals), marginals


def test_alternatives_keep_a_repetition_penalty_exact():
    penalised = Sampling(1.0, repetition_penalty=1.8)
    tokens = first_tokens(3, penalised, N_BATCH, batch=N_BATCH, seed=5, alternatives=(2, 2))
    r = joint_test(tokens, penalised)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r


@pytest.mark.parametrize("attribute,variant", [(a, v) for a, vs in WRONG_TREE.items() for v in vs])
def test_wrong_tree_verifications_fail(attribute, variant, monkeypatch):
    monkeypatch.setattr(speculative, attribute, WRONG_TREE[attribute][variant])
    tokens = first_tokens(3, Sampling(1.0), N_BATCH, batch=N_BATCH, seed=33, alternatives=(2, 1))
    r = joint_test(tokens, Sampling(1.0))
    assert r["p"] < P_MAX_WRONG and r["tv"] > r["tv_max"], r


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_toy_path_with_alternatives(k):
    tokens = first_tokens(k, Sampling(0.0), 64, batch=64, alternatives=(2, 2, 2))
    assert (tokens == torch.tensor(greedy_path(k + 2))).all()


def test_other_candidates():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -9.0]])
    x = torch.tensor([1])
    tokens, dists = others(logits, torch.zeros(1, 5), x, 2, Sampling(0.0), torch.zeros(1, 2))
    assert tokens.tolist() == [[3, 2]] and dists[0].argmax(-1).tolist() == [3, 2]  # next most likely, one-hot
    p = torch.tensor([[0.1, 0.5, 0.4, 0.0, 0.0]])
    tokens, dists = others(logits, p, x, 3, Sampling(1.0), torch.tensor([[0.5, 0.5, 0.5]]))
    assert tokens[0, :2].tolist() == [2, 0]  # without replacement: never x, never twice
    torch.testing.assert_close(dists[0, 0], torch.tensor([0.2, 0.0, 0.8, 0.0, 0.0]))  # p without x, renormalised
    torch.testing.assert_close(dists[0, 1], torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert float(dists[0, 2].sum()) == 0.0  # nothing left: a candidate that is never accepted


def test_rows_append_an_alternative_and_its_bonus():
    rows = Rows([[1, 2], [3]])
    rows.put(torch.tensor([[7, 8], [9, 9]]))
    rows.append(torch.tensor([1, 0]), torch.tensor([5, 6]), torch.tensor([-1, 4]))
    assert rows.tokens(0) == [1, 2, 7, 5] and rows.tokens(1) == [3, 6, 4]
    assert rows.agreed.tolist() == [3, 1]


def test_alternatives_need_a_target_that_verifies_trees(tmp_path):
    flat = ToyLM(TARGET_TABLE)
    flat.trees = False
    with pytest.raises(ValueError, match="verifies a tree"):
        speculative_generate(flat, ToyLM(TARGET_TABLE), [[1, 2]], 4, k=2, alternatives=(1,))
    for bad in ("2,x", "-1"):
        args = parse(["generate", "--target", tiny(tmp_path), "--prompt", "x", "--draft", "ngram:2",
                      "--alternatives", bad])
        with pytest.raises(UsageError, match="--alternatives"):
            args.func(args)
    args = parse(["generate", "--target", tiny(tmp_path), "--prompt", "x", "--alternatives", "2"])
    with pytest.raises(UsageError, match="needs a --draft"):
        args.func(args)
    args = parse(["generate", "--target", tiny(tmp_path), "--prompt", "x", "--draft", "ngram:2", "--alternatives", "1"])
    with pytest.raises(UsageError, match="needs a model draft"):
        args.func(args)
