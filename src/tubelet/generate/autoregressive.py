"""Autoregressive sampling (Algorithm 1): one model call per token, the baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .models import CausalLM, extend_last
from .rows import EOS, Rows, row_generators, uniforms
from .sampling import Sampling, probabilities, sample
from .stats import Generation, Stats


def autoregressive_generate(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                            sampling: Sampling = Sampling(), seed: int | Sequence[int] = 0,
                            eos_token_id: EOS = None,
                            on_step: Callable[[Rows], None] | None = None,
                            stop: Callable[[Rows], Tensor] | None = None) -> Generation:
    """Sample up to ``max_new_tokens`` after each prompt, one token per row per model call.
    ``eos_token_id``: a token or a list of tokens, any of which ends a row; ``stop(rows)``
    (e.g. :class:`~tubelet.generate.stopping.StopStrings`) gives (B,) True for rows to end."""
    rows = Rows(prompts, getattr(model, "device", "cpu"))
    B = rows.batch_size
    model.reset(B)
    generators = row_generators(seed, B)
    stats = Stats(k=0, rows=B)
    done = rows.finished(max_new_tokens, eos_token_id)
    while not done.all():
        u = uniforms(generators, 1, rows.device)
        tokens, num_valid = rows.pending(model.lengths)
        last = extend_last(model, tokens, num_valid)  # (B, V)
        if sampling.argmax:  # the one-hot's token, without the one-hot
            x = last.float().argmax(-1)
        else:
            seen = rows.seen(last.shape[-1]) if sampling.penalised else None
            x = sample(probabilities(last, sampling, seen), u[:, 0])
        rows.append(torch.zeros_like(x), x)
        active = int((~done).sum())
        stats.target_calls += 1
        stats.row_steps += active
        stats.generated += active
        done = rows.finished(max_new_tokens, eos_token_id) | (stop(rows) if stop is not None else False)
        rows.close(done)
        if on_step is not None:
            on_step(rows)
    return Generation(rows.generated(max_new_tokens, eos_token_id), stats)
