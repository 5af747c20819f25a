"""Toy causal LMs with known next-token distributions, behind the real CausalLM protocol.

The next-token distribution depends on the last token and on the parity of the sum of *all*
tokens so far, so a cache that is cropped wrongly changes the distribution. The "cache" is the
row's tokens themselves.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from tubelet.generate import Sampling, probabilities


class ToyLM:
    """table: (V, 2, V) probabilities of the next token given (last token, sum parity)."""

    def __init__(self, table: Tensor) -> None:
        self.table = table.double()
        self.logits_table = self.table.log()  # zeros -> -inf: tokens the model never emits
        self.vocab_size = table.shape[-1]
        self.device = torch.device("cpu")
        self.calls = 0
        self.reset(1)

    def reset(self, batch_size: int) -> None:
        self.buffer = torch.zeros(batch_size, 64, dtype=torch.long)
        self.lengths = torch.zeros(batch_size, dtype=torch.long)

    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        self.calls += 1
        B, n = tokens.shape
        slots = self.lengths[:, None] + torch.arange(n)
        if int(slots.max()) >= self.buffer.shape[1]:
            self.buffer = torch.cat([self.buffer, torch.zeros_like(self.buffer)], 1)
        self.buffer.scatter_(1, slots, tokens)
        parity = self.buffer.cumsum(1).gather(1, slots) % 2
        self.lengths = self.lengths + num_valid
        return self.logits_table[tokens, parity]  # (B, n, V)

    def crop(self, lengths: Tensor) -> None:
        self.lengths = torch.minimum(self.lengths, lengths)

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        toks = self.buffer[row, :int(self.lengths[row])].double()[None, :, None]
        return [(toks, toks)]

    def next_distribution(self, history: list[int], sampling: Sampling) -> Tensor:
        """The filtered distribution of the token after ``history``."""
        return probabilities(self.logits_table[history[-1], sum(history) % 2], sampling).double()


def exact_joint(model: ToyLM, prompt: list[int], m: int, sampling: Sampling) -> dict[tuple, float]:
    """Probability of every sequence of the first m new tokens."""
    out = {}
    V = model.vocab_size
    for seq in itertools.product(range(V), repeat=m):
        prob, hist = 1.0, list(prompt)
        for x in seq:
            prob *= float(model.next_distribution(hist, sampling)[x])
            if prob == 0.0:
                break
            hist.append(x)
        out[seq] = prob
    return out


def exact_marginals(model: ToyLM, prompt: list[int], m: int, sampling: Sampling) -> Tensor:
    """(m, V): distribution of each of the first m new tokens, through the (last, parity) chain."""
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
