"""Pure sampling math: logits -> the distribution sampled from, inverse-CDF sampling, and the
verification step of speculative sampling (Algorithm 2 of Chen et al. 2023).

Everything here is a function of tensors, batched over a leading dimension, with the randomness
passed in as uniforms: the same uniforms give the same tokens, which is what makes a row's
result independent of the other rows of a batch, and what lets the tests replay a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    """How logits become the distribution a token is drawn from.

    ``temperature == 0`` is greedy: a one-hot distribution on the arg-max. ``top_k = 0`` and
    ``top_p = 1`` switch those filters off. ``repetition_penalty`` r (1 = off; the CTRL rule,
    as transformers applies it) divides the positive logits of every token already in the context
    (prompt included) by r and multiplies the negative ones by r, before everything else. The same
    settings apply to draft and target; the penalty depends on the context of each position, which
    for the target's K+1 verified positions includes the drafts before it (:func:`seen_after`).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0

    @property
    def argmax(self) -> bool:
        """Greedy without a penalty: the token is the first arg-max of the logits as they are
        (no distribution needs building, :func:`verify_greedy`)."""
        return self.greedy and not self.penalised


def seen_after(seen: Tensor, tokens: Tensor) -> Tensor:
    """The tokens in the context of each of n+1 positions: seen (B, V) before them, tokens (B, n)
    appended one per position -> (B, n+1, V), position j having seen ``tokens[:, :j]`` too."""
    appended = torch.nn.functional.one_hot(tokens, seen.shape[-1]).cumsum(1) > 0  # (B, n, V)
    return torch.cat([seen[:, None], seen[:, None] | appended], dim=1)


def probabilities(logits: Tensor, sampling: Sampling = Sampling(), seen: Tensor | None = None) -> Tensor:
    """(..., V) logits -> (..., V) probabilities after the repetition penalty, temperature, top-k
    and top-p (float32).

    ``seen`` (..., V) marks the tokens already in each position's context; it is needed only
    with a repetition penalty. Greedy gives a one-hot on the first arg-max. Top-k keeps the k
    largest logits; top-p keeps the smallest set of most probable tokens whose mass reaches p
    (the token that crosses p is kept); then the kept probabilities are renormalised.
    """
    logits = logits.float()
    if sampling.penalised:
        if seen is None:
            raise ValueError("a repetition penalty needs the tokens of the context (seen=...)")
        r = sampling.repetition_penalty
        logits = torch.where(seen, torch.where(logits > 0, logits / r, logits * r), logits)
    if sampling.greedy:  # written in place: one_hot would build it in int64 first
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = logits.topk(sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p  # mass of the strictly more probable tokens
        drop_sorted = mass_before >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(weights: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF sampling: (..., V) non-negative weights (need not sum to 1), (...) uniforms
    in [0, 1) -> (...) token ids. A token of weight 0 is never drawn, whatever u.

    The cumulative sums and ``u * total`` are computed in float64 (a float32 uniform rounds to
    1.0 for u >= 1 - 2^-25), and ``u * total`` is kept below the total (it can round to it): the
    token drawn is the first whose cumulative sum exceeds it, so its weight is positive, and
    never a token past the last of positive weight (weights all zero give the last token).
    """
    cdf = weights.cumsum(-1, dtype=torch.float64)
    total = cdf[..., -1:]
    target = torch.minimum(u.double().unsqueeze(-1) * total, total.nextafter(total.new_zeros(())))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=weights.shape[-1] - 1)


def verify(draft_tokens: Tensor, p: Tensor, q: Tensor, r: Tensor, u: Tensor,
           num_drafted: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The modified rejection sampling of speculative sampling, for a batch of rows.

    draft_tokens: (B, K) tokens the draft sampled; p: (B, K, V) the distributions it sampled
    them from; q: (B, K+1, V) the target's distributions at the same K positions and one more;
    r: (B, K) uniforms for the acceptance tests; u: (B,) a uniform for the final token;
    num_drafted: (B,) how many of the K tokens row b drafted (default: all K); the columns
    past it are padding, never accepted.

    Draft token t is accepted when ``r_t < min(1, q_t(x_t) / p_t(x_t))``, written
    ``r_t * p_t(x_t) < q_t(x_t)``; the first rejection ends the step and the next token is drawn
    from ``max(0, q_t - p_t)`` renormalised; if all drafted tokens are accepted it is a bonus
    token drawn from ``q`` at the next position. Returns (num_accepted (B,), next_token (B,)).
    """
    B, K = draft_tokens.shape
    if num_drafted is None:
        num_drafted = torch.full((B,), K, dtype=torch.long, device=draft_tokens.device)
    none = draft_tokens.new_zeros(B, 0)
    num_accepted, _, token = verify_tree(draft_tokens, p, q, r, u, num_drafted, none, none[0], q[:, :0], q[:, :0],
                                         r[:, :0])
    return num_accepted, token


def verify_tree(draft_tokens: Tensor, p: Tensor, q: Tensor, r: Tensor, u: Tensor, num_drafted: Tensor,
                alternatives: Tensor, alt_depth: Tensor, alt_p: Tensor, alt_q: Tensor,
                alt_r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`verify` over a chain of drafts with alternatives: candidates for a position that
    are tried when the chain's token there is rejected (recursive rejection sampling, as in
    SpecInfer, Miao et al. 2024).

    draft_tokens, p, q, r, num_drafted: as :func:`verify`. alternatives: (B, M) tokens;
    alt_depth: (M,) the chain position each stands at (non-decreasing); alt_p: (B, M, V) the
    distribution each was drawn from, given the candidates before it at its position (e.g. the
    draft's p without them, renormalised, or one-hot for a deterministic choice; zeros: none);
    alt_q: (B, M, V) the target's distribution after each alternative; alt_r: (B, M) uniforms.

    When the chain is rejected at position n, the target's distribution there becomes the
    residual ``max(0, q - p)``; each alternative at n is then tested against the current
    residual as a draft token is against q, and a rejection makes the residual
    ``max(0, residual - alt_p)``. Whatever the candidates, the token at n has the target's
    distribution. An accepted alternative is followed by a bonus token from its ``alt_q``;
    if all are rejected the token is drawn from the last residual.
    Returns (num_accepted (B,) chain tokens, chosen (B,) index of the accepted alternative or -1,
    next_token (B,)).
    """
    B, K = draft_tokens.shape
    M = alternatives.shape[1]
    drafted = torch.arange(K, device=p.device) < num_drafted[:, None]  # (B, K): columns past are padding
    idx = draft_tokens.unsqueeze(-1)
    p_x = p.gather(-1, idx).squeeze(-1) * drafted
    q_x = q[:, :K].gather(-1, idx).squeeze(-1)
    num_accepted = ((r * p_x < q_x) & (p_x > 0)).long().cumprod(-1).sum(-1)
    rows = torch.arange(B, device=draft_tokens.device)
    q_n = q[rows, num_accepted]
    rejected = num_accepted < num_drafted  # the chain stopped on a rejection: its alternatives count
    # the draft's distribution where the chain stopped: none (zeros) after every drafted token
    p_n = p[rows, num_accepted.clamp(max=K - 1)] * rejected[:, None] if K else torch.zeros_like(q_n)
    residual = _residual(q_n, p_n)
    chosen = torch.full_like(num_accepted, -1)
    for m in range(M):
        trying = rejected & (chosen < 0) & (alt_depth[m] == num_accepted)
        if not trying.any():
            continue
        x = alternatives[:, m:m + 1]
        a_x = alt_p[:, m].gather(-1, x).squeeze(-1)
        res_x = residual.gather(-1, x).squeeze(-1) / residual.sum(-1)
        accept = trying & (alt_r[:, m] * a_x < res_x) & (a_x > 0)
        chosen = torch.where(accept, m, chosen)
        still = trying & ~accept
        residual = torch.where(still[:, None], _residual(residual / residual.sum(-1, keepdim=True), alt_p[:, m]),
                               residual)
    final = torch.where((chosen >= 0)[:, None], alt_q[rows, chosen.clamp(min=0)], residual) if M else residual
    return num_accepted, chosen, sample(final, u)


def verify_greedy(draft_tokens: Tensor, best: Tensor, num_drafted: Tensor, p_x: Tensor | None = None,
                  alternatives: Tensor | None = None, alt_depth: Tensor | None = None,
                  alt_best: Tensor | None = None, alt_p_x: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`verify_tree` under greedy decoding, from the target's arg-max tokens alone.

    best: (B, K+1) the target's most likely token at each chain position (the first arg-max of
    its logits: :func:`probabilities`' one-hot); alt_best: (B, M) the same after each
    alternative; p_x, alt_p_x: the draft's probabilities of its own tokens (default: positive).
    With q one-hot on ``best`` the acceptance test keeps a drafted token exactly when it is the
    target's and the draft gave it weight, the residual of a rejection is one-hot on the
    target's token, and an alternative at the rejected position is kept when it is that token,
    so :func:`verify_tree` returns what this does, without a distribution over the vocabulary.
    Returns (num_accepted (B,), chosen (B,) index of the kept alternative or -1, next_token (B,)).
    """
    B, K = draft_tokens.shape
    drafted = torch.arange(K, device=best.device) < num_drafted[:, None]
    match = (draft_tokens == best[:, :K]) & drafted & (True if p_x is None else p_x > 0)
    num_accepted = match.long().cumprod(-1).sum(-1)
    rows = torch.arange(B, device=best.device)
    target_token = best[rows, num_accepted]
    chosen = torch.full_like(num_accepted, -1)
    if alternatives is not None and alternatives.shape[1]:
        rejected = num_accepted < num_drafted
        taken = rejected[:, None] & (alt_depth[None] == num_accepted[:, None]) & (alternatives == target_token[:, None])
        if alt_p_x is not None:
            taken &= alt_p_x > 0
        m = torch.arange(alternatives.shape[1], device=best.device)
        chosen = torch.where(taken, m, alternatives.shape[1]).min(-1).values  # the first one taken
        chosen = torch.where(taken.any(-1), chosen, -1)
        target_token = torch.where(chosen >= 0, alt_best[rows, chosen.clamp(min=0)], target_token)
    return num_accepted, chosen, target_token


def _residual(q: Tensor, p: Tensor) -> Tensor:
    """max(0, q - p), unnormalised; q itself where that is empty (q == p, impossible in exact
    arithmetic after a rejection, possible in floats)."""
    residual = (q - p).clamp(min=0.0)
    return torch.where(residual.sum(-1, keepdim=True) <= 0, q, residual)
