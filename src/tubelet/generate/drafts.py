"""Drafts: what proposes the tokens that speculative sampling tests against the target.

A :class:`Draft` proposes up to K tokens per row, with the distributions it drew them from:

- :class:`ModelDraft`: any :class:`~tubelet.generate.models.CausalLM` (a distilled decoder, the
  target's first layers ``truncated:L``), sampling K tokens one call at a time; with a
  ``threshold`` it ends a row's drafting with the token after which the product of its
  softmax's top probabilities (temperature 1, unfiltered: under greedy decoding p itself is
  one-hot) is below it (dynamic draft length); with ``vocab`` (V' token ids) the LM's output layer has only those
  rows (a reduced draft vocabulary, :mod:`~tubelet.generate.vocab`);
- :class:`FeatureDraft`: a model that reads the target's features (EAGLE): each token enters
  with the target's final hidden state at the token before it, so the draft starts each step
  from what the target knows; between verifications it feeds its own predicted features;
- :class:`NGramDraft`: prompt lookup, no model: an earlier occurrence of the row's last n tokens
  in its own context (the latest one followed by K tokens) proposes the tokens that followed it. The proposal is
  deterministic, so the distribution it was "sampled" from is one-hot: with p one-hot the
  acceptance test keeps token x with probability q(x), and the residual is q without x, which
  keeps the output exactly the target's distribution under sampling too.

Rows may propose fewer than K tokens (none at all when the n-gram finds no match): the target
then verifies only what was proposed, and the step ends with a token from the target.
Whether to stop drafting may depend on anything the draft knows (its own distributions and
the context), never on the target: that keeps the verification exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from ..fileio import dumps_json, write_text_atomic
from .models import CausalLM, FeatureLM, extend_last
from .rows import Rows
from .sampling import Sampling, probabilities, sample


@dataclass
class Proposal:
    tokens: Tensor  # (B, K) proposed tokens; columns past num_drafted[b] are padding
    p: Tensor  # (B, K, V) the distribution each token was drawn from
    num_drafted: Tensor  # (B,) tokens row b proposes, 0..K
    calls: int = 0  # draft model calls this step (batched)
    # candidates tried where the chain is rejected (tree verification): alternatives[:, m] stands
    # at chain position alt_depth[m], drawn from alt_p[:, m] (given the candidates before it there)
    alternatives: Tensor | None = None  # (B, M)
    alt_depth: Tensor | None = None  # (M,) non-decreasing
    alt_p: Tensor | None = None  # (B, M, V)

    def __post_init__(self) -> None:
        if self.alternatives is None:
            B, V = self.tokens.shape[0], self.p.shape[-1]
            self.alternatives = self.tokens.new_zeros(B, 0)
            self.alt_depth = self.tokens.new_zeros(0)
            self.alt_p = self.p.new_zeros(B, 0, V)


class Draft(Protocol):
    vocab_size: int

    def reset(self, batch_size: int) -> None:
        """Forget everything, for a new batch of ``batch_size`` rows."""

    def propose(self, rows: Rows, k: int, sampling: Sampling, u: Tensor,
                alternatives: tuple[int, ...] = ()) -> Proposal:
        """Up to ``k`` tokens after each row's end, drawn with the (B, k) uniforms ``u``
        (row b uses only ``u[b]``, so rows stay independent) from ``sampling``'s filtered
        distributions. ``alternatives[t]``: how many other candidates to give for position t
        (drawn with the uniforms ``u[:, k:]``, one each); a draft may give fewer or none."""

    def commit(self, rows: Rows) -> None:
        """After verification: ``rows`` hold the accepted tokens and the target's next token;
        drop whatever was computed past them."""


class ModelDraft:
    """A causal LM as a draft: K sampled tokens, one call each (the first also feeds what the
    draft has not seen yet). ``threshold`` > 0 ends a row's drafting once the product of the top
    probabilities of its plain softmax (temperature 1, no filters) over the tokens drafted so far,
    the draft's own estimate that they all pass, is below it. The token that brought it there is
    still proposed (its call is paid, and verifying one more token costs the target little); no
    call is spent on positions that are reached too rarely to pay for it.

    ``temperature``: the draft's logits are divided by it before ``sampling`` applies (greedy
    decoding is unchanged). Any proposal distribution keeps sampling exact, since verification
    tests the draft's tokens against the distributions it drew them from; a draft distilled to
    the target's distributions spreads its mass where it is unsure, and a temperature a little
    below 1 makes sum_x min(p, q), the acceptance, larger (``tubelet draft distill`` measures
    the best on held-out text and keeps it in :data:`DRAFT_SAMPLING`).

    ``vocab``: (V',) token ids when the LM's logits cover only those tokens (column i is token
    ``vocab[i]``; its input embedding still takes any token). The draft then filters and samples
    in the reduced space (softmax, top-k and top-p sort V' values, not V) and reports p over the
    full vocabulary, zero outside ``vocab``: a (B, K, V) scatter per step, the size of the
    target's own (B, K+1, V) distributions. Verifying in the reduced space instead would save
    nothing: the acceptance test reads q at the drafted tokens either way, but the residual
    max(0, q - p) of a rejection spans all V tokens (it is q itself outside ``vocab``), so the
    full-vocabulary p is what :func:`~tubelet.generate.sampling.verify` needs, unchanged.
    """

    def __init__(self, lm: CausalLM, threshold: float = 0.0, vocab: Tensor | None = None,
                 temperature: float = 1.0) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"draft threshold must be in [0, 1], got {threshold}")
        if not temperature > 0:
            raise ValueError(f"draft temperature must be > 0, got {temperature}")
        if vocab is not None and (vocab.ndim != 1 or not 0 < len(vocab) <= lm.vocab_size
                                  or int(vocab.min()) < 0 or int(vocab.max()) >= lm.vocab_size):
            raise ValueError(f"vocab must be 1 to {lm.vocab_size} token ids of the draft's "
                             f"vocabulary, got shape {tuple(vocab.shape)}")
        self.lm = lm
        self.threshold = threshold
        self.vocab = vocab
        self.temperature = temperature
        self.vocab_size = lm.vocab_size

    def reset(self, batch_size: int) -> None:
        self.lm.reset(batch_size)

    def propose(self, rows: Rows, k: int, sampling: Sampling, u: Tensor,
                alternatives: tuple[int, ...] = ()) -> Proposal:
        B = rows.batch_size
        tokens, num_valid = rows.pending(self.lm.lengths)
        alts, alt_depth, alt_p = [], [], []
        u_alt = u[:, k:]
        drafted = torch.zeros(B, k, dtype=torch.long, device=rows.device)
        p = []
        drafting = torch.ones(B, dtype=torch.bool, device=rows.device)
        reach = torch.ones(B, device=rows.device)  # the draft's estimate that its tokens so far all pass
        num_drafted = torch.zeros(B, dtype=torch.long, device=rows.device)
        vocab = None if self.vocab is None else self.vocab.to(rows.device)
        seen = rows.seen(self.vocab_size) if sampling.penalised else None  # (B, V), + each draft
        calls = 0
        for t in range(k):
            last = self._extend(tokens, num_valid, t == 0)  # (B, V) or (B, V')
            calls += 1
            seen_t = None if seen is None else seen if vocab is None else seen[:, vocab]
            tempered = last if self.temperature == 1.0 or sampling.greedy else last.float() / self.temperature
            p_t = probabilities(tempered, sampling, seen_t).to(rows.device)
            x = p_t.argmax(-1) if sampling.greedy else sample(p_t, u[:, t])  # greedy: p_t is one-hot
            drafted[:, t] = x if vocab is None else vocab[x]
            count = alternatives[t] if t < len(alternatives) else 0
            if count:
                first = len(alt_depth)
                a, a_p = others(last, p_t, x, count, sampling, u_alt[:, first:first + count])
                alts.append(a if vocab is None else vocab[a])
                alt_p.append(a_p)
                alt_depth += [t] * a.shape[1]
            if seen is not None:
                seen[rows.arange, drafted[:, t]] = True
            p.append(p_t)
            num_drafted += drafting.long()
            if self.threshold > 0 and t + 1 < k:  # confidence: the top of the plain softmax (greedy's p is one-hot)
                reach = reach * last.float().softmax(-1).max(-1).values.to(rows.device)
                drafting &= reach >= self.threshold
                if not drafting.any():
                    break
            tokens, num_valid = drafted[:, t:t + 1], drafting.long()  # a stopped row feeds nothing
        V = self.vocab_size if vocab is None else len(vocab)
        p_all = torch.stack(p, 1) if p else torch.zeros(B, 0, V, device=rows.device)
        if vocab is not None:  # (B, K', V') -> (B, K', V), zeros outside the reduced vocabulary
            p_all = p_all.new_zeros(B, p_all.shape[1], self.vocab_size).index_copy_(-1, vocab, p_all)
        if not alts:
            return Proposal(drafted[:, :p_all.shape[1]], p_all, num_drafted, calls)
        a_p = torch.cat(alt_p, 1)
        if vocab is not None:
            a_p = a_p.new_zeros(B, a_p.shape[1], self.vocab_size).index_copy_(-1, vocab, a_p)
        return Proposal(drafted[:, :p_all.shape[1]], p_all, num_drafted, calls, torch.cat(alts, 1),
                        torch.tensor(alt_depth, device=rows.device), a_p)

    def _extend(self, tokens: Tensor, num_valid: Tensor, first: bool) -> Tensor:
        """One drafting call: the logits after each row's last new token. ``first``: the step's
        first call, which feeds what the LM lacks; the others feed one proposal per row."""
        return extend_last(self.lm, tokens, num_valid)

    def commit(self, rows: Rows) -> None:
        # what the step left unchanged: an accepted alternative replaces the draft's own token
        self.lm.crop(torch.minimum(self.lm.lengths, torch.minimum(rows.lengths - 1, rows.agreed)))


DRAFT_SAMPLING = "sampling.json"  # in a distilled draft's folder: the draft temperature to decode with


def save_draft_sampling(folder: str | Path, temperature: float, by_temperature: dict[float, float]) -> None:
    """Write the draft temperature a draft decodes with (:data:`DRAFT_SAMPLING`), and the held-out
    acceptance at each temperature tried."""
    write_text_atomic(Path(folder) / DRAFT_SAMPLING, dumps_json({
        "draft_temperature": temperature,
        "acceptance_t1_by_draft_temperature": {f"{t:g}": a for t, a in sorted(by_temperature.items())},
        "about": "the draft's logits are divided by draft_temperature before sampling (greedy decoding "
                 "is unchanged); it is the one of most held-out acceptance at T = 1"}, indent=1) + "\n")


def load_draft_temperature(folder: str | Path) -> float:
    """The draft temperature saved in a draft's folder; 1.0 when there is none (a draft from
    elsewhere, or distilled before tubelet measured it)."""
    path = Path(folder) / DRAFT_SAMPLING
    if not path.is_file():
        return 1.0
    try:
        value = float(json.loads(path.read_text())["draft_temperature"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the draft temperature in {path} ({e}); delete the file to decode at "
                         "the draft's own temperature, or give temp:T in the draft spec") from None
    if not value > 0:
        raise ValueError(f"{path}: draft_temperature must be > 0, got {value}")
    return value


def others(logits: Tensor, p: Tensor, x: Tensor, count: int, sampling: Sampling,
           u: Tensor) -> tuple[Tensor, Tensor]:
    """``count`` candidates for a position besides the drafted token x (B,), and the distribution
    each was drawn from: (B, count) tokens, (B, count, V).

    Sampling: drawn from p without replacement (each from p without x and the ones before it,
    renormalised; zeros once nothing is left, and such a candidate is never accepted). Greedy:
    the next most likely tokens of the logits, one-hot (a deterministic choice is exact too)."""
    B, V = p.shape
    rows = torch.arange(B, device=p.device)
    if sampling.greedy:
        ranked = logits.float().clone()
        ranked[rows, x] = float("-inf")
        tokens = ranked.topk(min(count, V - 1), dim=-1).indices
        return tokens, torch.nn.functional.one_hot(tokens, V).to(p.dtype)
    weights = p.clone()
    weights[rows, x] = 0.0
    tokens, dists = [], []
    for i in range(count):
        total = weights.sum(-1, keepdim=True)
        dists.append(torch.where(total > 0, weights / total.clamp(min=1e-30), 0.0))
        token = sample(weights, u[:, i])
        tokens.append(token)
        weights[rows, token] = 0.0
    return torch.stack(tokens, 1), torch.stack(dists, 1)


class FeatureDraft(ModelDraft):
    """A :class:`ModelDraft` over a :class:`~tubelet.generate.models.FeatureLM`: it reads the
    target's features after each verification, and proposes nothing until the target has run
    over the prompt (the first step of a generation is the target's alone)."""

    lm: FeatureLM

    def propose(self, rows: Rows, k: int, sampling: Sampling, u: Tensor,
                alternatives: tuple[int, ...] = ()) -> Proposal:
        if (self.lm.known < rows.lengths - 1).any():  # the target has not read the prompt yet
            B = rows.batch_size
            return Proposal(torch.zeros(B, 0, dtype=torch.long, device=rows.device),
                            torch.zeros(B, 0, self.vocab_size, device=rows.device),
                            torch.zeros(B, dtype=torch.long, device=rows.device))
        return super().propose(rows, k, sampling, u, alternatives)

    def _extend(self, tokens: Tensor, num_valid: Tensor, first: bool) -> Tensor:
        # after the first call, each row's token follows the draft's own last prediction
        return super()._extend(tokens, num_valid, first) if first else self.lm.extend_own(tokens, num_valid)

    def commit(self, rows: Rows) -> None:
        self.lm.observe(self.lm.target.lengths)
        super().commit(rows)


def prompt_lookup(buffer: Tensor, lengths: Tensor, max_ngram: int, k: int) -> tuple[Tensor, Tensor]:
    """Prompt-lookup proposals for right-padded rows: buffer (B, L), lengths (B,).

    For n = max_ngram, ..., 1 (the longest match wins), find the earlier occurrences of the
    row's last n tokens that are followed by at least one token, and propose up to k tokens that
    followed one of them (never past the row's end): the latest occurrence followed by k tokens,
    or, where none is, the one followed by the most (the earliest). The latest match alone is
    often just behind the row's end (a repeating pattern), with a continuation of a token or two.
    Returns tokens (B, k) and num_drafted (B,): 0 where nothing matches.
    """
    B, L = buffer.shape
    continuation = torch.zeros(B, dtype=torch.long, device=buffer.device)
    found = torch.zeros(B, dtype=torch.bool, device=buffer.device)
    for n in range(max_ngram, 0, -1):
        if L < n + 1:
            continue
        suffix = buffer.gather(1, (lengths[:, None] - n + torch.arange(n, device=buffer.device)).clamp(min=0))
        windows = buffer.unfold(1, n, 1)  # (B, L-n+1, n): window i = tokens i .. i+n-1
        starts = torch.arange(windows.shape[1], device=buffer.device)
        # a match ending before the last token: it is not the suffix itself, and a token follows
        match = (windows == suffix[:, None, :]).all(-1) & (starts[None] + n < lengths[:, None])
        full = match & (starts[None] + n + k <= lengths[:, None])
        latest_full = torch.where(full, starts[None], -1).max(-1).values
        earliest = torch.where(match, starts[None], L).min(-1).values
        chosen = torch.where(latest_full >= 0, latest_full, earliest)
        new = ~found & match.any(-1)
        continuation = torch.where(new, chosen + n, continuation)
        found |= new
    index = (continuation[:, None] + torch.arange(k, device=buffer.device)).clamp(max=L - 1)
    num_drafted = torch.where(found, (lengths - continuation).clamp(max=k), 0)
    return buffer.gather(1, index), num_drafted


class NGramDraft:
    """Prompt lookup (``ngram:N``): continuations of a match of the row's last N..1 tokens in its
    own context (:func:`prompt_lookup` says which), proposed with a one-hot distribution."""

    def __init__(self, max_ngram: int, vocab_size: int) -> None:
        if max_ngram < 1:
            raise ValueError(f"ngram:N needs N >= 1 tokens to match, got {max_ngram}")
        self.max_ngram = max_ngram
        self.vocab_size = vocab_size

    def reset(self, batch_size: int) -> None:
        pass  # the context is the rows themselves: nothing to keep

    def propose(self, rows: Rows, k: int, sampling: Sampling, u: Tensor,
                alternatives: tuple[int, ...] = ()) -> Proposal:
        tokens, num_drafted = prompt_lookup(rows.buffer, rows.lengths, self.max_ngram, k)
        # (B, k, V) one-hot, written in float: one_hot's int64 tensor was a fifth of the lookup's time
        p = torch.zeros(*tokens.shape, self.vocab_size, device=tokens.device).scatter_(-1, tokens[..., None], 1.0)
        return Proposal(tokens, p, num_drafted)

    def commit(self, rows: Rows) -> None:
        pass


def as_draft(draft: Draft | CausalLM) -> Draft:
    """A Draft as is; a bare CausalLM as a :class:`ModelDraft`."""
    return draft if hasattr(draft, "propose") else ModelDraft(draft)
