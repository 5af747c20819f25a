"""Stop strings: end a row when its decoded new text contains one of them.

Token boundaries do not follow text: a stop string may end in the middle of a token, or span
several. :class:`StopStrings` therefore looks at the decoded text of each row's new tokens
after every step, and :meth:`StopStrings.cut` gives the shortest prefix of tokens whose text
contains a stop string, and the text up to (not including) it. :class:`TextStream` writes a
row's text as it grows (``tubelet generate --stream``), never past a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .rows import EOS, Rows


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


class TextStream:
    """Row 0's text written as its tokens are accepted (``on_step`` of either generator).

    What is written is always a prefix of the final text: the new tokens up to ``max_new_tokens``
    and the first end-of-sequence token, decoded, cut before a stop string, and holding back a tail
    that could be the start of a stop string, or an incomplete character (U+FFFD, a multi-byte
    character split between tokens). :meth:`finish` writes the rest of the final text.
    """

    def __init__(self, stops: StopStrings, write: Callable[[str], None], max_new_tokens: int,
                 eos_token_id: EOS = None) -> None:
        self.stops, self.write = stops, write
        self.max_new_tokens, self.eos = max_new_tokens, eos_token_id
        self.hold = max((len(s) for s in stops.stops), default=1) - 1
        self.written = 0

    def __call__(self, rows: Rows) -> None:
        text = self.stops.decode(rows.generated(self.max_new_tokens, self.eos)[0])
        stop = self.stops.first(text)
        end = stop if stop is not None else len(text) - self.hold
        while end > self.written and text[end - 1] == "\ufffd":
            end -= 1
        if end > self.written:
            self.write(text[self.written:end])
            self.written = end

    def finish(self, text: str) -> None:
        """Write what is left of the final ``text`` (as :meth:`StopStrings.cut` gives it)."""
        self.write(text[self.written:])
        self.written = len(text)
