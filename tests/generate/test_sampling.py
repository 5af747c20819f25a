"""The pure functions: filtering, inverse-CDF sampling, and the verification step alone."""

from __future__ import annotations

import pytest
import torch

from tubelet.generate import Sampling, probabilities, sample, verify
from tubelet.generate.sampling import verify_greedy, verify_tree

pytestmark = pytest.mark.usefixtures("one_thread")


def test_greedy_is_one_hot_on_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    p = probabilities(logits, Sampling(temperature=0))
    assert torch.equal(p, torch.tensor([[0.0, 1, 0, 0], [1.0, 0, 0, 0]]))


def test_temperature_top_k_top_p():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    assert torch.allclose(probabilities(logits, Sampling(0.5)), (logits / 0.5).softmax(-1))
    p = probabilities(logits, Sampling(1.0, top_k=2))
    assert torch.allclose(p, torch.cat([torch.tensor([3.0, 2.0]).softmax(-1), torch.zeros(3)]))
    full = logits.softmax(-1)  # 0.636, 0.234, 0.086, 0.032, 0.012
    p = probabilities(logits, Sampling(1.0, top_p=0.8))  # 0.636 < 0.8 <= 0.870: two tokens
    assert (p > 0).tolist() == [True, True, False, False, False]
    assert torch.allclose(p[:2], full[:2] / full[:2].sum())
    p = probabilities(logits, Sampling(1.0, top_p=0.5))  # the top token alone reaches 0.5
    assert (p > 0).tolist() == [True, False, False, False, False]
    both = probabilities(logits, Sampling(2.0, top_k=3, top_p=0.7))
    assert (both > 0).sum() <= 3 and torch.allclose(both.sum(), torch.tensor(1.0))


def test_filters_are_batched_and_order_free():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, 11, generator=g)
    s = Sampling(0.7, top_k=5, top_p=0.8)
    batched = probabilities(logits, s)
    for i in range(7):
        for j in range(3):
            assert torch.allclose(batched[i, j], probabilities(logits[i, j], s))
    perm = torch.randperm(11, generator=g)
    assert torch.allclose(probabilities(logits[..., perm], s), batched[..., perm])


def test_bad_settings_are_refused():
    for kw in ({"temperature": -1}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            Sampling(**kw)


def test_sample_is_the_inverse_cdf_and_skips_zero_weights():
    w = torch.tensor([0.0, 2.0, 0.0, 1.0, 1.0, 0.0])  # unnormalised
    u = torch.linspace(0, 1, 4001)[:-1]
    x = sample(w.expand(len(u), -1), u)
    counts = torch.bincount(x, minlength=6).double() / len(u)
    assert torch.allclose(counts, w.double() / 4, atol=1e-3)
    assert sample(w, torch.tensor(0.9999999)).item() == 4
    assert sample(torch.zeros(6), torch.tensor(0.5)).item() == 5  # nothing to draw: the last token, not past it


def _grid(n: int, dims: int) -> torch.Tensor:
    """A stratified grid of [0,1)^dims: (n**dims, dims) cell centres."""
    axes = [(torch.arange(n, dtype=torch.float64) + 0.5) / n] * dims
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dims)


@pytest.mark.parametrize("case", ["random", "draft_misses_a_token", "target_forbids_a_token"])
def test_verify_output_is_the_target_distribution(case):
    """K=1 integrated over a fine grid of (draft uniform, acceptance uniform, final uniform):
    the first token's distribution is q, with no sampling noise."""
    g = torch.Generator().manual_seed(3)
    V = 5
    p, q = torch.rand(V, generator=g).double(), torch.rand(V, generator=g).double()
    if case == "draft_misses_a_token":
        p[2] = 0.0
    if case == "target_forbids_a_token":
        q[1] = 0.0
    p, q = p / p.sum(), q / q.sum()
    u = _grid(80, 3)
    n_rows = len(u)
    drafted = sample(p.expand(n_rows, V), u[:, 0])[:, None]  # (N, 1)
    P = p.expand(n_rows, 1, V)
    Q = torch.stack([q, q]).expand(n_rows, 2, V)  # the bonus distribution is q too
    n, nxt = verify(drafted, P, Q, u[:, 1:2], u[:, 2])
    first = torch.where(n > 0, drafted[:, 0], nxt)
    freq = torch.bincount(first, minlength=V).double() / n_rows
    assert torch.allclose(freq, q, atol=0.02), (freq, q)
    # the acceptance rate is sum_x min(p, q) (Leviathan et al. 2023, eq. 1)
    assert abs(float(n.double().mean()) - float(torch.minimum(p, q).sum())) < 0.02


def test_verify_cases_by_hand():
    V = 4
    p = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])  # (1, K=2, V)
    q = torch.tensor([[[0.25, 0.25, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    d = torch.tensor([[0, 1]])
    # q/p = 0.5 for the first draft: accepted iff r < 0.5
    n, x = verify(d, p, q, torch.tensor([[0.49, 0.0]]), torch.tensor([0.0]))
    assert (n.item(), x.item()) == (2, 3)  # both accepted -> bonus from q_3 = one-hot on 3
    n, x = verify(d, p, q, torch.tensor([[0.51, 0.0]]), torch.tensor([0.0]))
    # rejected: residual max(0, q - p) = [0, 0, 0.5, 0] -> token 2 whatever u
    assert (n.item(), x.item()) == (0, 2)
    n, x = verify(d, p, q, torch.tensor([[0.51, 0.0]]), torch.tensor([0.999]))
    assert (n.item(), x.item()) == (0, 2)
    assert V == p.shape[-1]


def test_greedy_verification_accepts_exactly_the_matching_prefix():
    V, K = 6, 4
    target_argmax = torch.tensor([[1, 2, 3, 4, 5]])
    drafted = torch.tensor([[1, 2, 0, 4]])
    q = torch.nn.functional.one_hot(target_argmax, V).float()
    p = torch.nn.functional.one_hot(drafted, V).float()
    n, x = verify(drafted, p, q, torch.rand(1, K), torch.rand(1))
    assert (n.item(), x.item()) == (2, 3)


# ---- u close to 1: inverse-CDF sampling never runs past the last token of positive weight --
NEAR_ONE = [1 - 2.0 ** -26, 1 - 2.0 ** -40, 1 - 2.0 ** -53,
            float(torch.tensor(1.0).nextafter(torch.tensor(0.0)))]  # the largest float32 below 1


@pytest.mark.parametrize("u", NEAR_ONE)
def test_sample_near_one_never_returns_a_zero_weight_token(u):
    """A float32 comparison rounds u >= 1 - 2^-25 to 1.0: searchsorted then ran past the end and
    the clamp returned token V-1, whatever its weight."""
    w = torch.tensor([0.3, 0.0, 0.5, 0.2, 0.0, 0.0])  # float32, zero-weight last tokens
    assert sample(w, torch.tensor(u, dtype=torch.float64)).item() == 3
    assert sample(w, torch.tensor(u).float()).item() == 3
    big = torch.rand(49152, generator=torch.Generator().manual_seed(0))
    big[-100:] = 0.0
    assert sample(big, torch.tensor(u, dtype=torch.float64)).item() == 49151 - 100


@pytest.mark.parametrize("sampling", [Sampling(0), Sampling(1.0, top_k=5), Sampling(1.0, top_p=0.5),
                                      Sampling(0.7, top_k=50, top_p=0.9)],
                         ids=["greedy", "top5", "top-p0.5", "T0.7-top50-p0.9"])
def test_filtered_tokens_are_unreachable_near_one(sampling):
    logits = torch.randn(8, 49152, generator=torch.Generator().manual_seed(1))
    logits[:, -1] = -5.0  # the last token is never among the kept ones
    p = probabilities(logits, sampling)
    for u in NEAR_ONE:
        x = sample(p, torch.full((8,), u, dtype=torch.float64))
        assert (p.gather(-1, x[:, None]) > 0).all(), (u, x)


def test_a_token_the_target_forbids_is_not_drawn_from_the_residual_near_one():
    V = 6
    p = torch.tensor([[[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]])  # the draft proposes token 1
    q = torch.tensor([[[0.4, 0.1, 0.5, 0.0, 0.0, 0.0], [1.0 / V] * V]])  # the target forbids 3..5
    for u in NEAR_ONE:
        n, x = verify(torch.tensor([[1]]), p, q, torch.tensor([[0.999]]), torch.tensor([u]))
        assert n.item() == 0 and x.item() == 2


def test_verify_with_fewer_drafts_in_some_rows():
    """num_drafted[b] < K: the columns past it are never accepted, and the token after the
    last draft comes from q at that position (a bonus), not from a residual."""
    V = 4
    drafted = torch.tensor([[1, 2], [1, 2], [1, 2]])
    p = torch.nn.functional.one_hot(drafted, V).float()
    q = torch.nn.functional.one_hot(torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]]), V).float()
    n, x = verify(drafted, p, q, torch.zeros(3, 2), torch.zeros(3), torch.tensor([2, 1, 0]))
    assert n.tolist() == [2, 1, 0]
    assert x.tolist() == [3, 2, 1]  # q at the position after the drafts


def test_repetition_penalty_and_the_context_it_reads():
    from tubelet.generate.rows import Rows
    from tubelet.generate.sampling import seen_after
    rows = Rows([[1, 2], [3]])
    rows.put(torch.tensor([[4], [4]]))  # proposals past the end are not context
    seen = rows.seen(6)
    assert seen.tolist() == [[False, True, True, False, False, False], [False, False, False, True, False, False]]
    after = seen_after(seen, torch.tensor([[5, 0], [3, 5]]))  # (B, 3, V): position j has seen tokens[:j]
    assert after.shape == (2, 3, 6) and not after[0, 0, 5] and after[0, 1, 5] and after[0, 2, 0]
    assert after[1, 2].nonzero().flatten().tolist() == [3, 5]
    logits = torch.tensor([2.0, -1.0, 0.5])
    p = probabilities(logits, Sampling(repetition_penalty=2.0), torch.tensor([True, True, False]))
    assert torch.allclose(p, torch.tensor([1.0, -2.0, 0.5]).softmax(-1))
    with pytest.raises(ValueError, match="seen"):
        probabilities(logits, Sampling(repetition_penalty=2.0))
    with pytest.raises(ValueError, match="repetition_penalty"):
        Sampling(repetition_penalty=0.0)


@pytest.mark.parametrize("alternatives", [0, 3])
def test_greedy_verification_from_the_arg_max_equals_verify_tree_on_one_hot_distributions(alternatives):
    """verify_greedy reads the target's arg-max tokens only; verify_tree, given the one-hot
    distributions that greedy decoding makes, must return the same for every row."""
    g = torch.Generator().manual_seed(7)
    B, K, V = 4000, 4, 5  # a small vocabulary: drafts often match the target
    draft = torch.randint(0, V, (B, K), generator=g)
    best = torch.randint(0, V, (B, K + 1), generator=g)
    num_drafted = torch.randint(0, K + 1, (B,), generator=g)
    one_hot = lambda t: torch.nn.functional.one_hot(t, V).float()  # noqa: E731
    p = one_hot(draft)
    p[torch.rand(B, K, generator=g) < 0.05] = 0.0  # now and then a token its draft gave no weight
    alts = torch.randint(0, V, (B, alternatives), generator=g)
    depth = torch.arange(alternatives) % 2  # two at position 0, one at 1
    alt_best = torch.randint(0, V, (B, alternatives), generator=g)
    alt_p = one_hot(alts)
    r, u = torch.rand(B, K, generator=g), torch.rand(B, generator=g)
    expected = verify_tree(draft, p, one_hot(best), r, u, num_drafted, alts, depth, alt_p, one_hot(alt_best),
                           torch.rand(B, alternatives, generator=g))
    got = verify_greedy(draft, best, num_drafted, p.gather(-1, draft[..., None])[..., 0], alts, depth, alt_best,
                        alt_p.gather(-1, alts[..., None])[..., 0])
    for e, o in zip(expected, got):
        assert torch.equal(e, o)
    assert 0 < int((got[0] > 0).sum()) < B and (not alternatives or (got[1] >= 0).any())
