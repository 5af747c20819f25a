"""Speculative sampling (Algorithm 2 of Chen et al. 2023) for a batch of prompts.

One step, for every row at once:
1. the draft (:mod:`~tubelet.generate.drafts`) proposes up to K tokens per row, with the
   distributions it drew them from (a model samples them one call at a time; prompt lookup
   copies them from the context, one-hot);
2. the target scores the pending token and the proposed ones in one call (up to K+1
   distributions), its cache masked bottom-right per row (see
   :class:`~tubelet.models.attention.KVCache`);
3. :func:`~tubelet.generate.sampling.verify` accepts a prefix of n drafts and draws the next
   token (a residual or a bonus token);
4. the target's cache is cropped to the accepted sequence minus its last token, which the next
   step feeds, and the draft drops what it computed past it: nothing before it is recomputed.
Rows accept different numbers of tokens; each keeps its own length, and its own random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .drafts import Draft, as_draft
from .models import CausalLM
from .rows import EOS, Rows, row_generators, uniforms
from .sampling import Sampling, probabilities, seen_after, verify
from .stats import Generation, Stats


def speculative_generate(target: CausalLM, draft: Draft | CausalLM, prompts: Sequence[Sequence[int]],
                         max_new_tokens: int, *, k: int = 4, sampling: Sampling = Sampling(),
                         seed: int | Sequence[int] = 0, eos_token_id: EOS = None,
                         on_step: Callable[[Rows], None] | None = None,
                         stop: Callable[[Rows], Tensor] | None = None) -> Generation:
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
    """
    if k < 1:
        raise ValueError(f"k (draft tokens per step) must be >= 1, got {k}")
    draft = as_draft(draft)
    if target.vocab_size != draft.vocab_size:
        raise ValueError(f"target and draft vocabularies differ: {target.vocab_size} vs "
                         f"{draft.vocab_size} tokens; the draft must share the target's tokenizer")
    rows = Rows(prompts, getattr(target, "device", "cpu"))
    B = rows.batch_size
    target.reset(B)
    draft.reset(B)
    generators = row_generators(seed, B)
    stats = Stats(k=k, rows=B, accepted_histogram=[0] * (k + 1))
    done = rows.finished(max_new_tokens, eos_token_id)
    while not done.all():
        u = uniforms(generators, 2 * k + 1, rows.device)  # draft | acceptance | final token
        # 1. up to K proposals per row: (B, K') tokens, (B, K', V) distributions, K' <= K
        proposal = draft.propose(rows, k, sampling, u[:, :k])
        d = proposal.num_drafted.to(rows.device)
        kk = proposal.tokens.shape[1]
        # 2. target: the pending token(s) and the proposals in one call -> (B, K'+1, V)
        rows.put(proposal.tokens)
        tokens, num_valid = rows.pending(target.lengths, extra=d)
        logits = target.extend(tokens, num_valid)
        # position of the last pending token, then the proposals; a row that proposed fewer
        # than K' reads padding past its own, which verify never uses
        positions = (num_valid - d - 1)[:, None] + torch.arange(kk + 1, device=rows.device)
        positions = positions.clamp_(max=logits.shape[1] - 1)
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
        for c in n.tolist():
            stats.accepted_histogram[c] += 1
        done = done | rows.finished(max_new_tokens, eos_token_id)
        done = done | (stop(rows) if stop is not None else False)
        rows.close(done)
        if on_step is not None:
            on_step(rows)
    return Generation(rows.generated(max_new_tokens, eos_token_id), stats)
