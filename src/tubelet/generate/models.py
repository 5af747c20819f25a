"""The one thing decoding needs from a model: a causal LM that keeps a key/value cache.

:class:`CausalLM` is the protocol; :class:`TubeletLM` wraps tubelet's
:class:`~tubelet.models.decoder.Decoder`, :class:`HFCausalLM` any causal LM of transformers
(imported lazily; transformers is an optional dependency). Each row of a batch is a sequence of
its own length. ``extend`` appends right-padded new tokens to every row, ``crop`` cuts rows back
to given lengths without recomputing anything.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..models.decoder import Decoder


class CausalLM(Protocol):
    """A causal LM with a cache. ``lengths[b]`` tokens of row b are in the cache: the first
    ``lengths[b]`` tokens of the row, in order, and nothing else."""

    vocab_size: int
    lengths: Tensor  # (B,) tokens held in the cache per row

    def reset(self, batch_size: int) -> None:
        """Empty the cache for ``batch_size`` rows."""

    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        """Append ``tokens[b, :num_valid[b]]`` to row ``b``; tokens (B, n) -> logits (B, n, V).

        Logits at position ``i < num_valid[b]`` are those of the next token after it; the rest
        (right padding) are meaningless."""

    def crop(self, lengths: Tensor) -> None:
        """Keep exactly the first ``lengths[b]`` tokens of each row's cache.

        Callers never ask for more than a row holds (``lengths[b] <= self.lengths[b]``): a crop
        only forgets. Speculative sampling crops the target to every token of a row but the
        last, and the draft to the smaller of that and what the draft holds (after a step that
        accepted all K drafts, the draft never saw its own last proposal)."""

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        """Each layer's (keys, values) (G, lengths[row], d) of one row: for checks and tests."""


class TubeletLM:
    """A tubelet Decoder with its KVCache (rows left-aligned, per-row lengths and positions)."""

    def __init__(self, model: Decoder) -> None:
        self.model = model.eval()
        self.vocab_size = model.cfg.vocab_size
        self.device = model.embed.weight.device
        self.cache = model.new_cache(1)
        self.calls = 0

    @property
    def lengths(self) -> Tensor:
        return self.cache.lengths

    def reset(self, batch_size: int) -> None:
        self.cache = self.model.new_cache(batch_size)

    @torch.no_grad()
    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        self.calls += 1
        return self.model(tokens, self.cache, num_valid)

    def crop(self, lengths: Tensor) -> None:
        self.cache.crop(lengths)

    def reorder(self, rows: Tensor) -> None:
        self.cache.select(rows)

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        return [self.cache.rows(i)[row] for i in range(len(self.model.blocks))]


class HFCausalLM:
    """A transformers causal LM (LlamaForCausalLM, ...) with a DynamicCache.

    The cache's slots are shared by all rows; a boolean ``valid`` (B, S) marks which hold a
    row's tokens. Cropping a row that accepted fewer tokens than another leaves a hole, masked
    out through the attention mask, and explicit ``position_ids`` keep its positions contiguous;
    the slots past the longest row are dropped with ``DynamicCache.crop``. For one row this is
    exactly the usual crop.
    """

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.cache_argument = cache_argument(model)
        self.vocab_size = model.config.vocab_size
        self.device = next(model.parameters()).device
        self.calls = 0
        self.reset(1)

    def reset(self, batch_size: int) -> None:
        from transformers import DynamicCache
        try:
            self.cache = DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56
            self.cache = DynamicCache()
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=self.device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        self.calls += 1
        B, n = tokens.shape
        steps = torch.arange(n, device=self.device)
        positions = self.lengths[:, None] + steps
        self.valid = torch.cat([self.valid, steps < num_valid[:, None]], dim=1)
        out = self.model(input_ids=tokens, attention_mask=self.valid.long(), position_ids=positions,
                         use_cache=True, **{self.cache_argument: self.cache})
        self.lengths = self.lengths + num_valid
        return out.logits

    def crop(self, lengths: Tensor) -> None:
        lengths = torch.minimum(self.lengths, lengths.to(self.lengths))
        self.valid = self.valid & (self.valid.cumsum(1) <= lengths[:, None])
        slots = torch.arange(self.valid.shape[1], device=self.device)
        keep = int(torch.where(self.valid, slots + 1, 0).max()) if self.valid.numel() else 0
        remove = self.valid.shape[1] - keep
        if remove:
            self.cache.crop(-remove)  # a negative count removes that many slots (old and new API)
        self.valid = self.valid[:, :keep]
        self.lengths = lengths

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        valid = self.valid[row]
        if hasattr(self.cache, "layers"):
            kv = [(layer.keys, layer.values) for layer in self.cache.layers]
        else:  # transformers < 4.56
            kv = list(zip(self.cache.key_cache, self.cache.value_cache))
        return [(k[row][:, valid], v[row][:, valid]) for k, v in kv]


def cache_argument(model) -> str:
    """The name under which ``model.forward`` takes its cache in the installed transformers:
    ``cache`` since 5.x (``past_key_values`` is deprecated there and removed in 5.40), and
    ``past_key_values`` before."""
    import inspect
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
