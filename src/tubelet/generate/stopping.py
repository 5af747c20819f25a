"""Stop strings: end a row when its decoded new text contains one of them.

Token boundaries do not follow text: a stop string may end in the middle of a token, or span
several. :class:`StopStrings` therefore looks at the decoded text of each row's new tokens
after every step, and :meth:`StopStrings.cut` gives the shortest prefix of tokens whose text
contains a stop string, and the text up to (not including) it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .rows import Rows


class StopStrings:
    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str]) -> None:
        if any(not s for s in stops):
            raise ValueError("a stop string cannot be empty")
        self.decode = decode
        self.stops = tuple(stops)

    def first(self, text: str) -> int | None:
        """Index in ``text`` where the earliest stop string starts, or None."""
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def __call__(self, rows: Rows) -> Tensor:
        """(B,) True for the rows whose new text contains a stop string."""
        return torch.tensor([self.first(self.decode(rows.new_tokens(b))) is not None
                             for b in range(rows.batch_size)], device=rows.device)

    def cut(self, tokens: list[int]) -> tuple[list[int], str]:
        """(the shortest prefix of ``tokens`` whose text contains a stop string, the text
        before that stop string); (tokens, their text) when none occurs."""
        text = self.decode(tokens)
        if self.first(text) is None:
            return tokens, text
        n = next(n for n in range(1, len(tokens) + 1) if self.first(self.decode(tokens[:n])) is not None)
        text = self.decode(tokens[:n])
        return tokens[:n], text[:self.first(text)]
