"""Caption vocabularies: what a :class:`~tubelet.models.captioner.Captioner` needs of its words.

A captioner reads and writes ids through a :class:`CaptionVocab`; two implement it:

- :class:`WordVocab`: whole words of the training captions (the COCO caption tokenisation of
  :func:`tubelet.captions.tokenize`) and four specials, for tubelet's own decoder trained from
  scratch; saved in the checkpoint as its list of words;
- :class:`TokenizerVocab`: the tokenizer of a pretrained language model (SmolLM2's byte-level
  BPE), saved as its name only and rebuilt from the installed package.

Every caption is ``prompt`` + its ids + ``eos_id``: the prompt is the ids the decoder reads
before the first word (``[<bos>]`` for a word vocabulary). ``lead`` are ids that come before
the video in the decoder's prefix (none for a word vocabulary). A language model tuned on chat
turns reads the video as a user's turn and writes the caption as the assistant's::

    <|im_start|>user\\n  [video tokens]  <|im_end|>\\n<|im_start|>assistant\\n  caption <|im_end|>
    '----- lead -----'                   '--------------- prompt ----------------'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import ConfigError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(len(SPECIALS))


class CaptionVocab(Protocol):
    """Captions <-> ids, as a captioner trains on them and writes them."""

    pad_id: int  # right padding of a batch; never a target, never written
    bos_id: int  # begins a caption; never written
    eos_id: int  # ends a caption
    prompt: list[int]  # every caption's first ids, before its words (ends with bos_id's role)
    lead: list[int]  # ids before the video in the decoder's prefix

    def __len__(self) -> int: ...

    def encode(self, caption: str, max_length: int | None = None) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def batch(self, captions: Sequence[str], max_length: int) -> Tensor: ...

    def to_json(self) -> Any: ...


def tokenize(text: str) -> list[str]:
    from ..captions.metrics import tokenize as coco_tokenize  # the metrics' tokenisation
    return coco_tokenize(text)


def fit(ids: list[int], max_length: int | None, eos_id: int) -> list[int]:
    """``ids`` cut to ``max_length``, still ending with ``eos_id``."""
    return ids if max_length is None or len(ids) <= max_length else ids[:max_length - 1] + [eos_id]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """(B, L) ids, right-padded with ``pad_id`` to the longest row."""
    out = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, :len(r)] = torch.tensor(r)
    return out


class WordVocab:
    """Words <-> ids: the four specials, then the words of the training captions (sorted)."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS
    prompt = [BOS]
    lead: list[int] = []

    def __init__(self, words: Iterable[str]) -> None:
        words = [w for w in words if w not in SPECIALS]
        self.words: list[str] = list(SPECIALS) + words
        self.ids = {w: i for i, w in enumerate(self.words)}
        if len(self.ids) != len(self.words):
            raise ConfigError("a caption vocabulary lists a word twice")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> WordVocab:
        counts = Counter(w for c in captions for w in tokenize(c))
        return cls(sorted(w for w, n in counts.items() if n >= min_count))

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordVocab) and other.words == self.words

    __hash__ = None  # mutable, compared by its words

    def to_json(self) -> list[str]:
        return self.words

    def encode(self, caption: str, max_length: int | None = None) -> list[int]:
        """<bos> words <eos> as ids (unknown words -> <unk>), cut to ``max_length`` ids."""
        return fit([BOS] + [self.ids.get(w, UNK) for w in tokenize(caption)] + [EOS], max_length, EOS)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> the words up to the first <eos>, specials dropped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS) and i < len(self.words):
                out.append(self.words[i])
        return " ".join(out)

    def batch(self, captions: Sequence[str], max_length: int) -> Tensor:
        """(B, L) ids, right-padded with <pad> to the longest (at most ``max_length``)."""
        return pad_batch([self.encode(c, max_length) for c in captions], PAD)


class TokenizerVocab:
    """A pretrained language model's tokenizer as a caption vocabulary.

    ``tokenizer``: a transformers tokenizer (``encode``, ``decode``, ``convert_tokens_to_ids``,
    ``len``); ``name``: the language model it belongs to, which is all a checkpoint records;
    ``pad``, ``bos``, ``eos``: special tokens of the tokenizer; ``lead`` and ``prompt``: texts
    (special tokens written out) before and after the video.
    """

    def __init__(self, tokenizer, name: str, *, pad: str, bos: str, eos: str, lead: str = "",
                 prompt: str = "") -> None:
        self.tokenizer, self.name = tokenizer, name
        self.pad_id, self.bos_id, self.eos_id = (self._special(t) for t in (pad, bos, eos))
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ConfigError(f"{name}: <pad>, <bos> and <eos> must be three different tokens "
                              f"(a padded <eos> would not be learnt), got {pad!r}, {bos!r}, {eos!r}")
        self.lead = self._ids(lead)
        self.prompt = self._ids(prompt) or [self.bos_id]

    def _special(self, token: str) -> int:
        i = self.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(i, int) or i < 0 or self.tokenizer.convert_ids_to_tokens(i) != token:
            raise ConfigError(f"{self.name}: the tokenizer has no token {token!r}")
        return i

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenizerVocab) and other.to_json() == self.to_json() and len(other) == len(self)

    __hash__ = None

    def to_json(self) -> dict[str, str]:
        return {"tokenizer": self.name}

    def encode(self, caption: str, max_length: int | None = None) -> list[int]:
        """prompt + the caption's tokens + <eos>, cut to ``max_length`` ids (the prompt included)."""
        return fit(self.prompt + self._ids(caption.strip()) + [self.eos_id], max_length, self.eos_id)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (written ones, or a whole :meth:`encode`) -> the text up to the first <eos>."""
        ids = list(ids)
        if ids[:len(self.prompt)] == self.prompt:
            ids = ids[len(self.prompt):]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def batch(self, captions: Sequence[str], max_length: int) -> Tensor:
        """(B, L) ids, right-padded with the pad token to the longest (at most ``max_length``)."""
        return pad_batch([self.encode(c, max_length) for c in captions], self.pad_id)


def smollm2_vocab(tokenizer) -> TokenizerVocab:
    """SmolLM2-Instruct's chat turns: the video is the user's turn, the caption the assistant's.

    <|endoftext|> pads (never in a caption, so padding is not confused with the end);
    <|im_start|> is never written; <|im_end|> ends a caption as it ends a turn.
    """
    return TokenizerVocab(tokenizer, "smollm2", pad="<|endoftext|>", bos="<|im_start|>", eos="<|im_end|>",
                          lead="<|im_start|>user\n", prompt="<|im_end|>\n<|im_start|>assistant\n")


__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "CaptionVocab", "TokenizerVocab", "WordVocab",
           "smollm2_vocab", "tokenize"]
