"""Speculative sampling (Algorithm 2 of Chen et al. 2023) for a batch of prompts.

One step, for every row at once:
1. the draft (:mod:`~tubelet.generate.drafts`) proposes up to K tokens per row, with the
   distributions it drew them from (a model samples them one call at a time; prompt lookup
   copies them from the context, one-hot);
2. the target scores the pending token and the proposed ones in one call (up to K+1
   distributions), its cache masked bottom-right per row (see
   :class:`~tubelet.models.attention.KVCache`);
3. :func:`~tubelet.generate.sampling.verify` accepts a prefix of n drafts and draws the next
   token (a residual or a bonus token); greedy decoding needs only the target's arg-max tokens
   (:func:`~tubelet.generate.sampling.verify_greedy`, the same result without a distribution);
4. the target's cache is cropped to the accepted sequence minus its last token, which the next
   step feeds, and the draft drops what it computed past it: nothing before it is recomputed.
Rows accept different numbers of tokens; each keeps its own length, and its own random stream.

With ``alternatives`` (tree verification, as in SpecInfer) the draft also gives other candidates
for its first positions; the target reads them in the same call as a tree (each sees the chain
before its position), :func:`~tubelet.generate.sampling.verify_tree` tries them in turn where the
chain is rejected, and an accepted one's keys and values move to where the sequence goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..models.decoder import TokenTree
from .drafts import Draft, Proposal, as_draft
from .models import CausalLM, TreeLM, extend_last
from .rows import EOS, Rows, row_generators, uniforms
from .sampling import Sampling, probabilities, seen_after, verify, verify_greedy, verify_tree
from .stats import Generation, Stats


def speculative_generate(target: CausalLM, draft: Draft | CausalLM, prompts: Sequence[Sequence[int]],
                         max_new_tokens: int, *, k: int = 4, sampling: Sampling = Sampling(),
                         seed: int | Sequence[int] = 0, eos_token_id: EOS = None,
                         on_step: Callable[[Rows], None] | None = None,
                         stop: Callable[[Rows], Tensor] | None = None,
                         alternatives: Sequence[int] = ()) -> Generation:
    """Sample up to ``max_new_tokens`` after each prompt from the target, with draft proposals.

    ``draft`` is a :class:`~tubelet.generate.drafts.Draft` or a bare CausalLM (used as a
    :class:`~tubelet.generate.drafts.ModelDraft`). The output has the target's distribution
    (after ``sampling``'s temperature / top-k / top-p) whatever the draft; greedy (temperature
    0) gives exactly the target's greedy tokens. Row b has its own random stream (from
    ``(seed, b)``, or ``seed[b]`` when given a list; see
    :func:`~tubelet.generate.rows.row_generators`) and draws 2K+1 uniforms per step.
    ``eos_token_id``: a token or a list of tokens, any of which ends a row; ``stop(rows)``
    (e.g. :class:`~tubelet.generate.stopping.StopStrings`) gives (B,) True for rows to end.
    ``on_step(rows)`` is called after each step: the target's cache then holds every token of
    each row but the last; a model draft's holds at most that many (one fewer after a step
    that accepted all its drafts: it never fed its own last proposal).

    ``alternatives`` (tree verification, a target with ``trees``, e.g. a tubelet decoder):
    ``alternatives[t]`` more candidates for draft position t, from the draft's distribution
    there (greedy: its next most likely tokens), verified in the same target call as the chain;
    where the chain is rejected they are tried in turn (:func:`~tubelet.generate.sampling.verify_tree`),
    and an accepted one brings the target's next token with it. A step then draws
    2K + 1 + 2M uniforms, M the number of alternatives.
    """
    if k < 1:
        raise ValueError(f"k (draft tokens per step) must be >= 1, got {k}")
    alternatives = tuple(int(a) for a in alternatives)[:k]
    if any(a < 0 for a in alternatives):
        raise ValueError(f"alternatives must be counts >= 0, got {list(alternatives)}")
    if sum(alternatives) and not getattr(target, "trees", False):
        raise ValueError(f"alternatives need a target that verifies a tree of tokens in one call (a tubelet "
                         f"decoder, e.g. NAME,bf16); {type(target).__name__} does not")
    M = sum(alternatives)
    draft = as_draft(draft)
    if target.vocab_size != draft.vocab_size:
        raise ValueError(f"target and draft vocabularies differ: {target.vocab_size} vs "
                         f"{draft.vocab_size} tokens; the draft must share the target's tokenizer")
    rows = Rows(prompts, getattr(target, "device", "cpu"))
    B = rows.batch_size
    target.reset(B)
    draft.reset(B)
    generators = row_generators(seed, B)
    stats = Stats(k=k, rows=B, accepted_histogram=[0] * (k + 1), drafted_histogram=[0] * (k + 1))
    done = rows.finished(max_new_tokens, eos_token_id)
    while not done.all():
        u = uniforms(generators, 2 * k + 1 + 2 * M, rows.device)  # draft | acceptance | final | alternatives
        # 1. up to K proposals per row: (B, K') tokens, (B, K', V) distributions, K' <= K
        drafting = u[:, :k] if not M else torch.cat([u[:, :k], u[:, 2 * k + 1:2 * k + 1 + M]], 1)
        # a Draft written before trees was called without ``alternatives``; it still is when none are asked
        proposal = draft.propose(rows, k, sampling, drafting, alternatives) if M else \
            draft.propose(rows, k, sampling, drafting)
        d = proposal.num_drafted.to(rows.device)
        kk = proposal.tokens.shape[1]
        if proposal.alternatives.shape[1]:
            num_accepted, chosen, next_token = _verify_tree(target, rows, proposal, sampling, u, k, M)
        else:
            chosen = None
            # 2. target: the pending token(s) and the proposals in one call -> (B, K'+1, V)
            rows.put(proposal.tokens)
            tokens, num_valid = rows.pending(target.lengths, extra=d)
            if kk:
                logits = target.extend(tokens, num_valid)
                # position of the last pending token, then the proposals; a row that proposed fewer
                # than K' reads padding past its own, which verify never uses
                positions = (num_valid - d - 1)[:, None] + torch.arange(kk + 1, device=rows.device)
                positions = positions.clamp_(max=logits.shape[1] - 1)
            else:  # nothing proposed (a feature draft's first step, no n-gram match): the last token's
                logits = extend_last(target, tokens, num_valid)[:, None]
                positions = torch.zeros(B, 1, dtype=torch.long, device=rows.device)
            if sampling.argmax:  # 3. greedy: the target's tokens say it all
                num_accepted, _, next_token = verify_greedy(
                    proposal.tokens, logits[rows.arange[:, None], positions].float().argmax(-1), d,
                    _drawn_weight(proposal.p, proposal.tokens))
            else:
                # a repetition penalty at proposal j counts the proposals before it
                seen = seen_after(rows.seen(target.vocab_size), proposal.tokens) if sampling.penalised else None
                q = probabilities(logits[rows.arange[:, None], positions], sampling, seen)
                # 3. accept a prefix and draw the next token
                num_accepted, next_token = verify(proposal.tokens, proposal.p.to(q.device), q,
                                                  u[:, k:k + kk], u[:, 2 * k], d)
            rows.append(num_accepted, next_token)
        # 4. the target keeps the accepted sequence minus its last token; the draft drops the rest
        target.crop(rows.lengths - 1)
        draft.commit(rows)
        active = ~done
        n, d_active = num_accepted[active], d[active]
        stats.target_calls += 1
        stats.draft_calls += proposal.calls
        stats.row_steps += int(active.sum())
        stats.drafted += int(d_active.sum())
        stats.accepted += int(n.sum())
        stats.tested += int((n + (n < d_active).long()).sum())
        stats.generated += int((n + 1).sum())
        if chosen is not None:
            stats.alternatives += proposal.alternatives.shape[1] * int(active.sum())
            stats.alternatives_accepted += int((chosen[active] >= 0).sum())
            stats.generated += int((chosen[active] >= 0).sum())
        for c, drafted in zip(*torch.stack([n, d_active]).tolist()):  # one device read
            stats.accepted_histogram[c] += 1
            stats.drafted_histogram[drafted] += 1
        done = done | rows.finished(max_new_tokens, eos_token_id)
        done = done | (stop(rows) if stop is not None else False)
        rows.close(done)
        if on_step is not None:
            on_step(rows)
    return Generation(rows.generated(max_new_tokens, eos_token_id), stats)


def _drawn_weight(p: Tensor, tokens: Tensor) -> Tensor:
    """(B, n): the probability p (B, n, V) gave each of the tokens (B, n) drawn from it."""
    return p.gather(-1, tokens.to(p.device).unsqueeze(-1)).squeeze(-1).to(tokens.device)


def tree_layout(pending: Tensor, num_pending: Tensor, chain: Tensor, alternatives: Tensor,
                alt_depth: Tensor) -> tuple[Tensor, TokenTree, Tensor]:
    """One target call's tokens for tree verification: row b reads its ``num_pending[b]``
    pending tokens (``pending`` right-padded), then the K' chain tokens, then the M
    alternatives, each of which stands at chain position ``alt_depth[m]``: it sees the pending
    tokens and the chain before its position, and itself. Returns tokens (B, n), the
    :class:`~tubelet.models.decoder.TokenTree` and num_valid (B,)."""
    B, P = pending.shape
    kk, m = chain.shape[1], alternatives.shape[1]
    dev = pending.device
    n = P + kk + m
    cols = torch.arange(n, device=dev)
    rel = cols[None] - num_pending[:, None]  # (B, n): index past the pending tokens
    candidates = torch.cat([chain, alternatives], 1)
    tokens = torch.where(rel < 0, pending.gather(1, cols[None].clamp(max=P - 1).expand(B, n)),
                         candidates.gather(1, rel.clamp(0, kk + m - 1)))
    # position past the pending tokens: the chain's t-th token stands at t, an alternative at its own
    level = torch.cat([torch.arange(kk, device=dev), alt_depth])[rel.clamp(0, kk + m - 1)]
    depth = torch.where(rel < 0, cols[None], num_pending[:, None] + level)
    is_alt, is_chain = rel >= kk, (rel >= 0) & (rel < kk)
    causal = cols[:, None] >= cols[None, :]
    other_alt = is_alt[:, :, None] & is_alt[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=dev)
    chain_at_or_after = is_alt[:, :, None] & is_chain[:, None, :] & (level[:, None, :] >= level[:, :, None])
    return tokens, TokenTree(depth, causal & ~other_alt & ~chain_at_or_after), num_pending + kk + m


def _verify_tree(target: TreeLM, rows: Rows, proposal: Proposal, sampling: Sampling, u: Tensor, k: int,
                 M: int) -> tuple[Tensor, Tensor, Tensor]:
    """Steps 2 and 3 with alternatives: the target reads, per row, its pending tokens, the K'
    chain tokens and the M' alternatives as one tree; :func:`verify_tree` accepts; the accepted
    alternative's keys and values move to just after the accepted chain, and the row gets the
    chain's accepted tokens, then the alternative and its bonus token, or the next token."""
    dev = rows.device
    chain, alts, depth = proposal.tokens, proposal.alternatives.to(dev), proposal.alt_depth.to(dev)
    kk, m = chain.shape[1], alts.shape[1]
    d = proposal.num_drafted.to(dev)
    pending, num_pending = rows.pending(target.lengths)
    tokens, tree, num_valid = tree_layout(pending, num_pending, chain, alts, depth)
    start = target.lengths.clone()
    logits = target.extend(tokens, num_valid, tree=tree)
    # the chain: the last pending token, then the K' chain tokens; then the alternatives
    positions = (num_pending - 1)[:, None] + torch.arange(kk + 1, device=dev)
    alt_positions = (num_pending + kk)[:, None] + torch.arange(m, device=dev)
    if sampling.argmax:
        num_accepted, chosen, next_token = verify_greedy(
            chain, logits[rows.arange[:, None], positions].float().argmax(-1), d, _drawn_weight(proposal.p, chain),
            alts, depth, logits[rows.arange[:, None], alt_positions].float().argmax(-1),
            _drawn_weight(proposal.alt_p, alts))
    else:
        seen = rows.seen(target.vocab_size) if sampling.penalised else None
        q = probabilities(logits[rows.arange[:, None], positions], sampling,
                          None if seen is None else seen_after(seen, chain))
        alt_seen = None
        if seen is not None:  # each alternative's context: the chain before its position, and itself
            before = seen_after(seen, chain)[:, depth]  # (B, m, V)
            alt_seen = before | torch.nn.functional.one_hot(alts, target.vocab_size).bool()
        alt_q = probabilities(logits[rows.arange[:, None], alt_positions], sampling, alt_seen)
        alt_r = u[:, 2 * k + 1 + M:2 * k + 1 + M + m]
        num_accepted, chosen, next_token = verify_tree(chain, proposal.p.to(q.device), q, u[:, k:k + kk],
                                                       u[:, 2 * k], d, alts, depth, proposal.alt_p.to(q.device),
                                                       alt_q, alt_r)
    picked = chosen >= 0
    if picked.any():
        to = start + num_pending + num_accepted
        target.move(torch.where(picked, start + num_pending + kk + chosen.clamp(min=0), to), to)
    rows.put(chain)
    first = torch.where(picked, alts.gather(1, chosen.clamp(min=0)[:, None]).squeeze(1), next_token)
    rows.append(num_accepted, first, torch.where(picked, next_token, -1))
    return num_accepted, chosen, next_token
