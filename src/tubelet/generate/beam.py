"""Beam search: the likeliest continuations under the model, found ``beams`` at a time.

Each row keeps its ``beams`` best unfinished hypotheses by the sum of their token log-probs. A
step extends all of them by one token in one model call (rows x beams cache rows), scores every
(hypothesis, token) pair, and keeps the best ``beams`` that do not end; a candidate that ends
(an end-of-sequence token) is set aside as a finished hypothesis, scored by its log-prob over
its length to the power ``length_penalty`` (0: the plain log-prob, which favours short
sequences; 1: the mean per token). The cache follows the hypotheses it keeps through
:meth:`Reorderable.reorder`: a row of the cache may be copied to several new ones.

A row stops once it has ``beams`` finished hypotheses and no unfinished one can still beat the
worst of them (exact for ``length_penalty=0``, where a longer hypothesis only loses log-prob;
for positive penalties the check scores the best unfinished one at its current length, as transformers'
beam search does by default). At ``max_new_tokens`` the unfinished hypotheses count as finished.
With ``beams=1`` this is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .models import CausalLM, extend_last
from .rows import EOS, eos_ids
from .stats import Generation, Stats


class Reorderable(CausalLM, Protocol):
    def reorder(self, rows: Tensor) -> None:
        """Make row ``i`` of the cache a copy of the current row ``rows[i]`` (the batch becomes
        ``len(rows)`` rows; a row may be copied several times or dropped)."""


@dataclass
class Hypothesis:
    tokens: list[int]
    logprob: float
    score: float  # logprob / len(tokens) ** length_penalty


def _score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / max(length, 1) ** length_penalty


@torch.no_grad()
def beam_search(model: Reorderable, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                beams: int = 4, eos_token_id: EOS = None, length_penalty: float = 1.0
                ) -> tuple[Generation, list[list[Hypothesis]]]:
    """The best continuation of each prompt: (Generation, every row's finished hypotheses, best
    first). ``eos_token_id``: one token or several that end a hypothesis."""
    if beams < 1:
        raise ValueError(f"beams must be at least 1, got {beams}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. the tokenizer's BOS)")
    device = getattr(model, "device", "cpu")
    B = len(prompts)
    stats = Stats(k=0, rows=B)

    # The prompts, right-padded, in one call; the first step's reorder copies each row to its beams.
    longest = max(map(len, prompts))
    tokens = torch.zeros(B, longest, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        tokens[b, :len(p)] = torch.as_tensor(list(p), dtype=torch.long)
    num_valid = torch.tensor([len(p) for p in prompts], device=device)
    model.reset(B)
    logits = extend_last(model, tokens, num_valid)
    stats.target_calls += 1
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    V = logp.shape[-1]

    ends = set(eos_ids(eos_token_id))
    alive: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in range(B)]  # (tokens, logprob)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    for step in range(max_new_tokens):
        parents: list[int] = []  # the cache row each kept hypothesis continues
        chosen: list[int] = []  # and the token it adds
        first = 0  # row b's hypotheses are cache rows first .. first + len(alive[b]) - 1
        for b in range(B):
            hyps = alive[b]
            if not hyps:
                continue
            base = torch.tensor([lp for _, lp in hyps], device=logp.device)
            block = (base[:, None] + logp[first:first + len(hyps)]).flatten()
            count = min(2 * beams, int(torch.isfinite(block).sum()))
            top = torch.topk(block, count)
            kept = []
            for value, index in zip(top.values.tolist(), top.indices.tolist()):
                h, token = divmod(index, V)
                tokens_so_far = hyps[h][0] + [token]
                if token in ends:
                    finished[b].append(Hypothesis(tokens_so_far, value,
                                                  _score(value, len(tokens_so_far), length_penalty)))
                    continue
                kept.append((tokens_so_far, value, first + h, token))
                if len(kept) == beams:
                    break
            finished[b] = sorted(finished[b], key=lambda x: -x.score)[:beams]
            hopeless = len(finished[b]) == beams and (
                not kept or _score(kept[0][1], step + 1, length_penalty) <= finished[b][-1].score)
            alive[b] = [] if hopeless else [(t, lp) for t, lp, _, _ in kept]
            if not hopeless:
                parents += [p for _, _, p, _ in kept]
                chosen += [t for _, _, _, t in kept]
            first += len(hyps)
            stats.row_steps += 1
        stats.generated += len(chosen)
        if not chosen or step == max_new_tokens - 1:
            break
        model.reorder(torch.tensor(parents, device=device))
        new = torch.tensor(chosen, dtype=torch.long, device=device)[:, None]
        logp = torch.log_softmax(model.extend(new, torch.ones_like(new[:, 0]))[:, -1].float(), dim=-1)
        stats.target_calls += 1

    for b in range(B):  # at the length limit, unfinished hypotheses compete with finished ones
        finished[b] += [Hypothesis(t, lp, _score(lp, len(t), length_penalty)) for t, lp in alive[b]]
        finished[b] = sorted(finished[b], key=lambda x: -x.score)[:beams]
    best = [row[0].tokens if row else [] for row in finished]
    return Generation(best, stats), finished


__all__ = ["Hypothesis", "Reorderable", "beam_search"]
