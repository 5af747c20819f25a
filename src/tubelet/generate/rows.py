"""A batch of sequences of different lengths, each with its own random stream.

:class:`Rows` holds every row's tokens (prompt and generated) in one right-padded buffer with
per-row lengths; a model's cache holds a prefix of each row, and :meth:`Rows.pending` gives the
tokens it has not seen yet. :func:`uniforms` draws each row's uniforms from that row's own
generator, the same number every step, so a row's tokens do not depend on the other rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

EOS = int | Sequence[int] | None  # one end-of-sequence token, several (any of them ends a row), or none


def eos_ids(eos_token_id: EOS) -> tuple[int, ...]:
    """The end-of-sequence tokens as a tuple: ``2`` -> (2,), ``[2, 3]`` -> (2, 3), None -> ()."""
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, (list, tuple, set, frozenset)):
        return tuple(int(t) for t in eos_token_id)
    return (int(eos_token_id),)


class Rows:
    def __init__(self, prompts: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> None:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token (e.g. the tokenizer's BOS)")
        self.device = torch.device(device)
        self.prompt_lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        self.lengths = self.prompt_lengths.clone()
        self.buffer = torch.zeros(len(prompts), int(self.lengths.max()) + 16, dtype=torch.long,
                                  device=self.device)
        for b, p in enumerate(prompts):
            self.buffer[b, :len(p)] = torch.as_tensor(list(p), dtype=torch.long)
        self.arange = torch.arange(len(prompts), device=self.device)
        self.ends = torch.full_like(self.lengths, -1)  # a row's length when it finished, -1 before
        self.agreed = self.lengths.clone()  # the leading tokens the last append kept as put

    def close(self, done: Tensor) -> None:
        """Freeze the output of the rows that are ``done`` (B,) at their current length: a
        batch goes on until every row is done, and a row's later tokens are not its output."""
        self.ends = torch.where(done & (self.ends < 0), self.lengths, self.ends)

    @property
    def batch_size(self) -> int:
        return self.buffer.shape[0]

    def _reserve(self, length: int) -> None:
        if length > self.buffer.shape[1]:
            grow = max(length, 2 * self.buffer.shape[1]) - self.buffer.shape[1]
            self.buffer = torch.cat([self.buffer, self.buffer.new_zeros(self.batch_size, grow)], 1)

    def put(self, tokens: Tensor) -> None:
        """Write tokens (B, m) after each row's end without counting them (draft proposals)."""
        m = tokens.shape[1]
        self._reserve(int(self.lengths.max()) + m)
        slots = self.lengths[:, None] + torch.arange(m, device=self.device)
        self.buffer.scatter_(1, slots, tokens)

    def append(self, num_kept: Tensor, token: Tensor, then: Tensor | None = None) -> None:
        """Keep ``num_kept[b]`` of the tokens put after row b's end, then add ``token[b]``, and
        ``then[b]`` after it where that is >= 0. ``agreed`` becomes the length of what was kept."""
        self._reserve(int((self.lengths + num_kept).max()) + 2)
        self.agreed = self.lengths + num_kept
        self.buffer[self.arange, self.agreed] = token
        self.lengths = self.agreed + 1
        if then is not None:
            more = then >= 0
            self.buffer[self.arange, self.lengths] = torch.where(more, then, self.buffer[self.arange, self.lengths])
            self.lengths = self.lengths + more.long()

    def pending(self, cached: Tensor, extra: int | Tensor = 0) -> tuple[Tensor, Tensor]:
        """Tokens of each row past ``cached[b]`` (plus ``extra`` (or ``extra[b]``) put ones),
        right-padded.

        Returns tokens (B, n) and num_valid (B,) with n = max(num_valid)."""
        stop = self.lengths + extra
        num_valid = stop - cached
        n = int(num_valid.max())
        index = (cached[:, None] + torch.arange(n, device=self.device)).clamp_(max=self.buffer.shape[1] - 1)
        return self.buffer.gather(1, index), num_valid

    def generated(self, max_new_tokens: int, eos_token_id: EOS = None) -> list[list[int]]:
        """Each row's new tokens: at most ``max_new_tokens``, ending at the first EOS if any."""
        eos = set(eos_ids(eos_token_id))
        out = []
        for b in range(self.batch_size):
            start = int(self.prompt_lengths[b])
            length = int(self.ends[b]) if self.ends[b] >= 0 else int(self.lengths[b])
            stop = min(length, start + max_new_tokens)
            toks = self.buffer[b, start:stop].tolist()
            first_eos = next((i for i, t in enumerate(toks) if t in eos), None)
            out.append(toks if first_eos is None else toks[:first_eos + 1])
        return out

    def finished(self, max_new_tokens: int, eos_token_id: EOS = None) -> Tensor:
        """(B,) True for rows with ``max_new_tokens`` new tokens or an EOS among them."""
        done = self.lengths - self.prompt_lengths >= max_new_tokens
        eos = eos_ids(eos_token_id)
        if eos:
            cols = torch.arange(self.buffer.shape[1], device=self.device)
            new = (cols >= self.prompt_lengths[:, None]) & (cols < self.lengths[:, None])
            is_eos = torch.isin(self.buffer, torch.tensor(eos, device=self.device))
            done |= (is_eos & new).any(1)
        return done

    def seen(self, vocab_size: int) -> Tensor:
        """(B, V) True for the tokens that occur in each row (prompt and generated; not the
        proposals put after its end): the context of a repetition penalty."""
        cols = torch.arange(self.buffer.shape[1], device=self.device)
        inside = (cols < self.lengths[:, None]).long()
        counts = torch.zeros(self.batch_size, vocab_size, dtype=torch.long, device=self.device)
        return counts.scatter_add_(1, self.buffer, inside) > 0

    def tokens(self, row: int) -> list[int]:
        return self.buffer[row, :int(self.lengths[row])].tolist()

    def new_tokens(self, row: int) -> list[int]:
        """Row ``row``'s tokens after its prompt."""
        return self.buffer[row, int(self.prompt_lengths[row]):int(self.lengths[row])].tolist()


def row_generators(seed: int | Sequence[int], batch_size: int) -> list[torch.Generator]:
    """One CPU generator per row, from numpy's SeedSequence: entropy ``(seed, b)`` for row b of
    an int seed (independent streams, also across nearby seeds), or ``seed[b]`` from a list, so
    a row can be replayed alone with ``seed=[seed[b]]``."""
    import numpy as np
    entropy = [[seed, b] for b in range(batch_size)] if isinstance(seed, int) else list(seed)
    if len(entropy) != batch_size:
        raise ValueError(f"got {len(entropy)} seeds for {batch_size} prompts")
    states = [int(np.random.SeedSequence(e).generate_state(1, np.uint64)[0] >> np.uint64(1))
              for e in entropy]
    return [torch.Generator().manual_seed(s) for s in states]


def uniforms(generators: list[torch.Generator], n: int, device: torch.device | str = "cpu") -> Tensor:
    """(B, n) uniforms in [0, 1), row b from generator b."""
    return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in generators]).to(device)
