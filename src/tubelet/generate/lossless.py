"""Is speculative sampling lossless? Toy causal LMs whose distributions are known exactly, the real
sampling loop run on them, and goodness-of-fit tests of what it drew.

The toy target and draft (:func:`toy_pair`) are :class:`ToyLM`s over 5 tokens whose next-token
distribution depends on the last token and on the parity of the sum of all tokens so far (so a
wrongly cropped cache changes it); the draft never proposes token 4, which the target allows, and
the target forbids token 3 in half of the states, which the draft proposes. The first new tokens
that :func:`~tubelet.generate.speculative_generate` draws are compared with the exact distribution
by Pearson's chi-square test and a total-variation bound. :data:`WRONG_VERIFY` holds deliberately
wrong verification steps (negative controls) that the same tests must reject.

Used by ``benchmarks/lossless.py`` (the table of the tests in ``tests/generate/test_lossless.py``).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from ..models.decoder import TokenTree
from .sampling import Sampling, probabilities, sample, verify, verify_greedy, verify_tree
from .speculative import speculative_generate

V = 5
PROMPT = [1, 2]
FIRST = 3  # the joint distribution of the first FIRST new tokens is tested


class ToyLM:
    """A causal LM behind the :class:`~tubelet.generate.CausalLM` protocol whose next token has
    the known distribution table[last token, parity of the sum of all tokens]; table: (V, 2, V).
    The "cache" is the row's tokens themselves."""

    def __init__(self, table: Tensor) -> None:
        self.table = table.double()
        self.logits_table = self.table.log()  # zeros -> -inf: tokens the model never emits
        self.vocab_size = table.shape[-1]
        self.device = torch.device("cpu")
        self.calls = 0
        self.trees = True  # a tree's token sums the cached tokens and the new ones it sees
        self.reset(1)

    def reset(self, batch_size: int) -> None:
        self.buffer = torch.zeros(batch_size, 64, dtype=torch.long)
        self.lengths = torch.zeros(batch_size, dtype=torch.long)

    def extend(self, tokens: Tensor, num_valid: Tensor, tree=None) -> Tensor:
        self.calls += 1
        B, n = tokens.shape
        slots = self.lengths[:, None] + torch.arange(n)
        while int(slots.max()) >= self.buffer.shape[1]:
            self.buffer = torch.cat([self.buffer, torch.zeros_like(self.buffer)], 1)
        cached = torch.where(torch.arange(self.buffer.shape[1]) < self.lengths[:, None], self.buffer, 0).sum(1)
        self.buffer.scatter_(1, slots, tokens)
        if tree is None:
            parity = self.buffer.cumsum(1).gather(1, slots) % 2
        else:  # what token i sees: the cached tokens and the new ones visible to it
            parity = (cached[:, None] + (tree.visible.long() * tokens[:, None, :]).sum(-1)) % 2
        self.lengths = self.lengths + num_valid
        return self.logits_table[tokens, parity]  # (B, n, V)

    def move(self, source: Tensor, to: Tensor) -> None:
        rows = torch.arange(len(source))
        self.buffer[rows, to] = self.buffer[rows, source]

    def crop(self, lengths: Tensor) -> None:
        self.lengths = torch.minimum(self.lengths, lengths)

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        toks = self.buffer[row, :int(self.lengths[row])].double()[None, :, None]
        return [(toks, toks)]

    def next_distribution(self, history: list[int], sampling: Sampling) -> Tensor:
        """The filtered (and penalised) distribution of the token after ``history``."""
        seen = torch.zeros(self.vocab_size, dtype=torch.bool)
        seen[history] = True
        return probabilities(self.logits_table[history[-1], sum(history) % 2], sampling, seen).double()


class ReducedToyLM(ToyLM):
    """A :class:`ToyLM` whose output layer keeps only the tokens ``vocab`` (a reduced draft
    vocabulary): logits (B, n, V'), column i being token ``vocab[i]``. ``full`` holds, for each
    call, the unreduced distribution at each row's last valid position (for the negative
    controls that report it)."""

    def __init__(self, table: Tensor, vocab: list[int]) -> None:
        super().__init__(table)
        self.vocab = torch.tensor(vocab)
        self.full: list[Tensor] = []

    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        logits = super().extend(tokens, num_valid)  # (B, n, V)
        last = logits[torch.arange(len(tokens)), (num_valid - 1).clamp(min=0)]
        self.full.append(last.softmax(-1))
        return logits[..., self.vocab]  # (B, n, V')


# The toy draft's reduced vocabulary: drops token 2, which target and draft both give weight
# (the residual must supply it), and token 4, which the draft never proposes anyway.
TOY_VOCAB = [0, 1, 3]


def exact_joint(model: ToyLM, prompt: list[int], m: int, sampling: Sampling) -> dict[tuple, float]:
    """Probability of every sequence of the first m new tokens."""
    out = {}
    for seq in itertools.product(range(model.vocab_size), repeat=m):
        prob, hist = 1.0, list(prompt)
        for x in seq:
            prob *= float(model.next_distribution(hist, sampling)[x])
            if prob == 0.0:
                break
            hist.append(x)
        out[seq] = prob
    return out


def exact_marginals(model: ToyLM, prompt: list[int], m: int, sampling: Sampling) -> Tensor:
    """(m, V): distribution of each of the first m new tokens, through the (last, parity) chain
    (not with a repetition penalty: the state is then the whole set of tokens seen)."""
    if sampling.penalised:
        raise ValueError("exact_marginals: a repetition penalty breaks the (last, parity) chain; use exact_joint")
    V = model.vocab_size
    trans = probabilities(model.logits_table, sampling).double()  # (V, 2, V)
    state = torch.zeros(V, 2, dtype=torch.float64)  # P(last token, parity of the sum)
    state[prompt[-1], sum(prompt) % 2] = 1.0
    out = []
    for _ in range(m):
        out.append(torch.einsum("lp,lpx->x", state, trans))
        new = torch.zeros_like(state)
        for par in range(2):
            for x in range(V):
                new[x, (par + x) % 2] += (state[:, par] * trans[:, par, x]).sum()
        state = new
    return torch.stack(out)


# --------------------------------------------------------------------------- goodness of fit
def chi_square(counts: Tensor, probs: Tensor) -> tuple[float, int, float]:
    """Pearson's test of observed counts against probabilities, pooling cells whose expected
    count is below 5 into one. Returns (statistic, degrees of freedom, p-value)."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    if (obs[~keep] > 0).any():  # something the distribution gives probability 0
        return math.inf, int(keep.sum()) - 1, 0.0
    obs, exp = obs[keep], exp[keep]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = int(obs.numel()) - 1
    if df == 0:  # a single possible outcome
        return stat, 0, 1.0 if stat == 0 else 0.0
    p = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                      torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, df, p


def total_variation(counts: Tensor, probs: Tensor) -> float:
    counts, probs = counts.double().flatten(), probs.double().flatten()
    return 0.5 * float((counts / counts.sum() - probs).abs().sum())


def tv_threshold(probs: Tensor, n: int, failure: float = 1e-6) -> float:
    """A TV that n exact samples exceed with probability below ``failure``.

    E[TV] <= 1/2 sum sqrt(p(1-p)/n) (Jensen), and TV moves by at most 1/n per sample, so by
    McDiarmid P(TV > E[TV] + t) <= exp(-2 n t^2)."""
    probs = probs.double().flatten()
    mean_bound = 0.5 * float((probs * (1 - probs) / n).sqrt().sum())
    return mean_bound + math.sqrt(math.log(1 / failure) / (2 * n))


# --------------------------------------------------------------------------- the toy pair
def toy_tables() -> tuple[Tensor, Tensor]:
    """(target, draft) next-token tables, (V, 2, V) each, from a fixed seed."""
    g = torch.Generator().manual_seed(1234)
    q = -torch.rand(V, 2, V, generator=g, dtype=torch.float64).log()  # Exp(1) -> Dirichlet(1)
    p = -torch.rand(V, 2, V, generator=g, dtype=torch.float64).log()
    q = q ** 2  # peakier than Dirichlet(1)
    p[..., 4] = 0.0  # the draft never proposes token 4, which the target allows
    q[:, 1, 3] = 0.0  # the target forbids token 3 after an odd sum; the draft proposes it
    return q / q.sum(-1, keepdim=True), p / p.sum(-1, keepdim=True)


TARGET_TABLE, DRAFT_TABLE = toy_tables()


def first_tokens(k: int, sampling: Sampling, n: int, batch: int, seed: int = 0,
                 alternatives: tuple[int, ...] = ()) -> Tensor:
    """(n, K+2) first new tokens of n independent speculative generations on the toy pair,
    ``batch`` rows per call (at least the first :data:`FIRST`), with ``alternatives``."""
    out = []
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        gen = speculative_generate(ToyLM(TARGET_TABLE), ToyLM(DRAFT_TABLE), [PROMPT] * rows,
                                   max(FIRST, k + 2), k=k, sampling=sampling, seed=seed + start,
                                   alternatives=alternatives)
        out.append(torch.tensor(gen.tokens))
    return torch.cat(out)


def joint_test(tokens: Tensor, sampling: Sampling, prompt: list[int] = PROMPT) -> dict:
    """Chi-square and total variation of the first :data:`FIRST` tokens against the target's exact
    joint distribution; ``impossible`` counts drawn sequences of target probability 0."""
    exact = exact_joint(ToyLM(TARGET_TABLE), prompt, FIRST, sampling)
    probs = torch.tensor(list(exact.values()), dtype=torch.float64)
    index = {seq: i for i, seq in enumerate(exact)}
    counts = torch.zeros(len(exact), dtype=torch.float64)
    for seq in map(tuple, tokens[:, :FIRST].tolist()):
        counts[index[seq]] += 1
    stat, df, p = chi_square(counts, probs)
    return {"chi2": stat, "df": df, "p": p, "tv": total_variation(counts, probs),
            "tv_max": tv_threshold(probs, len(tokens)), "impossible": int(counts[probs == 0].sum())}


def marginal_tests(tokens: Tensor, sampling: Sampling, prompt: list[int] = PROMPT) -> list[float]:
    """Chi-square p-value of each position's marginal (covers the bonus and the next step)."""
    m = tokens.shape[1]
    exact = exact_marginals(ToyLM(TARGET_TABLE), prompt, m, sampling)
    return [chi_square(torch.bincount(tokens[:, j], minlength=V), exact[j])[2] for j in range(m)]


# --------------------------------------------------------------------------- negative controls
def verify_deterministic(draft_tokens, p, q, r, u, num_drafted=None):
    """Wrong: accept whenever q(x) >= p(x), with no randomness (every row drafts all K)."""
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
    n, _ = verify(draft_tokens, p, q, r, u, num_drafted)
    return n, sample(q[torch.arange(q.shape[0]), n], u)


def verify_shifted(draft_tokens, p, q, r, u, num_drafted=None):
    """Wrong: the target's distributions off by one position (a misaligned mask or offset)."""
    shifted = torch.cat([q[:, 1:], q[:, -1:]], dim=1)
    return verify(draft_tokens, p, shifted, r, u, num_drafted)


# Put in place of tubelet.generate.speculative.verify, each must fail the tests.
WRONG_VERIFY = {"deterministic": verify_deterministic, "residual_from_q": verify_residual_from_q,
                "shifted": verify_shifted}


def verify_greedy_shifted(draft_tokens, best, num_drafted, *rest):
    """Wrong: greedy verification with the target's tokens off by one position."""
    return verify_greedy(draft_tokens, torch.cat([best[:, 1:], best[:, -1:]], dim=1), num_drafted, *rest)


# Put in place of tubelet.generate.speculative.verify_greedy (greedy decoding), it must fail.
WRONG_VERIFY_GREEDY = {"shifted": verify_greedy_shifted}


# Wrong tree verifications (alternatives): each replaces an attribute of
# tubelet.generate.speculative and must fail the same tests.
def verify_tree_unfiltered_alternatives(draft_tokens, p, q, r, u, num_drafted, alternatives, alt_depth, alt_p,
                                        alt_q, alt_r):
    """Wrong: each alternative reported as drawn from the draft's whole p at its position, though
    it was drawn without the candidates before it."""
    return verify_tree(draft_tokens, p, q, r, u, num_drafted, alternatives, alt_depth, p[:, alt_depth], alt_q,
                       alt_r)


def verify_tree_bonus_after_chain(draft_tokens, p, q, r, u, num_drafted, alternatives, alt_depth, alt_p,
                                  alt_q, alt_r):
    """Wrong: the token after an accepted alternative drawn from the target's distribution after
    the chain's token at that position (the alternative's own context ignored)."""
    return verify_tree(draft_tokens, p, q, r, u, num_drafted, alternatives, alt_depth, alt_p,
                       q[:, alt_depth + 1], alt_r)


def causal_tree(depth, visible):
    """Wrong: the tree verified under the plain causal mask (an alternative sees the chain's
    tokens and the alternatives before it)."""
    n = visible.shape[-1]
    return TokenTree(depth, torch.ones(n, n, dtype=torch.bool).tril().expand_as(visible))


WRONG_TREE = {"verify_tree": {"unfiltered_alternatives": verify_tree_unfiltered_alternatives,
                              "bonus_after_chain": verify_tree_bonus_after_chain},
              "TokenTree": {"causal_mask": causal_tree}}
