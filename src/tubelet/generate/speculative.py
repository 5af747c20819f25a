"""Speculative sampling (Algorithm 2 of Chen et al. 2023) for a batch of prompts.

One step, for every row at once:
1. the draft samples K tokens autoregressively (K calls of one token each, the first one also
   feeding whatever the draft has not seen yet), keeping the distributions it sampled from;
2. the target scores the pending token and the K draft tokens in one call (K+1 distributions),
   its cache masked bottom-right per row (see :class:`~tubelet.models.attention.KVCache`);
3. :func:`~tubelet.generate.sampling.verify` accepts a prefix of n drafts and draws the next
   token (a residual or a bonus token);
4. both caches are cropped to the accepted sequence minus its last token, which the next step
   feeds: nothing before it is recomputed.
Rows accept different numbers of tokens; each keeps its own length, and its own random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .models import CausalLM
from .rows import Rows, row_generators, uniforms
from .sampling import Sampling, probabilities, sample, verify
from .stats import Generation, Stats


def speculative_generate(target: CausalLM, draft: CausalLM, prompts: Sequence[Sequence[int]],
                         max_new_tokens: int, *, k: int = 4, sampling: Sampling = Sampling(),
                         seed: int | Sequence[int] = 0, eos_token_id: int | None = None,
                         on_step: Callable[[Rows], None] | None = None) -> Generation:
    """Sample up to ``max_new_tokens`` after each prompt from the target, with draft proposals.

    The output has the target's distribution (after ``sampling``'s temperature / top-k / top-p)
    whatever the draft; greedy (temperature 0) gives exactly the target's greedy tokens. Row b
    has its own random stream (from ``(seed, b)``, or ``seed[b]`` when given a list; see
    :func:`~tubelet.generate.rows.row_generators`) and draws 2K+1 uniforms per step.
    ``on_step(rows)`` is called after each step, when both caches hold all but the last token.
    """
    if k < 1:
        raise ValueError(f"k (draft tokens per step) must be >= 1, got {k}")
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
    ones = torch.ones(B, dtype=torch.long, device=rows.device)
    while not done.all():
        u = uniforms(generators, 2 * k + 1, rows.device)  # draft | acceptance | final token
        # 1. draft K tokens: (B, K) tokens and the (B, K, V) distributions they came from
        tokens, num_valid = rows.pending(draft.lengths)
        drafted, p = [], []
        for t in range(k):
            logits = draft.extend(tokens, num_valid)
            p_t = probabilities(logits[rows.arange, num_valid - 1], sampling)  # (B, V)
            x_t = sample(p_t, u[:, t])
            drafted.append(x_t)
            p.append(p_t)
            tokens, num_valid = x_t[:, None], ones
        drafted_t, p_t = torch.stack(drafted, 1), torch.stack(p, 1)
        # 2. target: the pending token(s) and the K drafts in one call -> (B, K+1, V)
        rows.put(drafted_t)
        tokens, num_valid = rows.pending(target.lengths, extra=k)
        logits = target.extend(tokens, num_valid)
        positions = (num_valid - k - 1)[:, None] + torch.arange(k + 1, device=rows.device)
        q = probabilities(logits[rows.arange[:, None], positions], sampling)
        # 3. accept a prefix and draw the next token
        num_accepted, next_token = verify(drafted_t, p_t.to(q.device), q, u[:, k:2 * k], u[:, 2 * k])
        rows.append(num_accepted, next_token)
        # 4. crop both caches to the accepted sequence minus its last token
        target.crop(rows.lengths - 1)
        draft.crop(rows.lengths - 1)
        active = ~done
        n = num_accepted[active]
        stats.target_calls += 1
        stats.draft_calls += k
        stats.row_steps += int(active.sum())
        stats.accepted += int(n.sum())
        stats.tested += int((n + (n < k).long()).sum())
        stats.generated += int((n + 1).sum())
        for c in n.tolist():
            stats.accepted_histogram[c] += 1
        done = done | rows.finished(max_new_tokens, eos_token_id)
        if on_step is not None:
            on_step(rows)
    return Generation(rows.generated(max_new_tokens, eos_token_id), stats)
