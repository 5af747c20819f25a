"""The one thing decoding needs from a model: a causal LM that keeps a key/value cache.

:class:`CausalLM` is the protocol; :class:`TubeletLM` wraps tubelet's
:class:`~tubelet.models.decoder.Decoder`, :class:`HFCausalLM` any causal LM of transformers
(imported lazily; transformers is an optional dependency). Each row of a batch is a sequence of
its own length. ``extend`` appends right-padded new tokens to every row, ``crop`` cuts rows back
to given lengths without recomputing anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..models.decoder import Decoder, FeatureDraftModel, TokenTree


@dataclass
class Features:
    """A target's final hidden states of its last ``extend``: ``hidden[b, j]`` is at token
    ``start[b] + j`` of row b, for ``j < num_valid[b]``."""

    start: Tensor  # (B,)
    hidden: Tensor  # (B, n, D)
    num_valid: Tensor  # (B,)


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
        accepted all K drafts, the draft never saw its own last proposal). A draft may keep
        fewer tokens than asked, and say so in ``lengths``: :class:`FeatureLM` forgets the tokens
        it read with its own predicted features, to read them again with the target's."""

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        """Each layer's (keys, values) (G, lengths[row], d) of one row: for checks and tests."""


def extend_last(lm: CausalLM, tokens: Tensor, num_valid: Tensor) -> Tensor:
    """:meth:`CausalLM.extend`, keeping only the logits after each row's last new token: (B, V)
    (meaningless for a row with ``num_valid[b] == 0``). An LM with an ``extend_last`` of its own
    runs its output layer on those B positions alone, not on all B x n: a prompt of 1,000
    tokens then costs one row of SmolLM2's 49,152 x 576 head instead of 1,000, and a draft's
    call that reads the tokens the target accepted one row of its head."""
    if hasattr(lm, "extend_last"):
        return lm.extend_last(tokens, num_valid)
    return _last(lm.extend(tokens, num_valid), num_valid)


def _last(h: Tensor, num_valid: Tensor) -> Tensor:
    """(B, n, D) -> (B, D): each row's state at its last valid position."""
    return h[torch.arange(h.shape[0], device=h.device), (num_valid.to(h.device) - 1).clamp(min=0)]


class TreeLM(CausalLM, Protocol):
    """A CausalLM that can verify a tree of candidates in one call (``trees = True``)."""

    trees: bool

    def extend(self, tokens: Tensor, num_valid: Tensor, tree: TokenTree | None = None) -> Tensor:
        """As :meth:`CausalLM.extend`; with ``tree`` the new tokens form a
        :class:`~tubelet.models.decoder.TokenTree` (the padding past ``num_valid`` sees nothing
        that matters), and the cache holds them in the order given."""

    def move(self, source: Tensor, to: Tensor) -> None:
        """Put the cached token at ``source[b]`` of each row at ``to[b]`` (and its features, if
        kept); a ``crop`` then forgets what follows it."""


class TubeletLM:
    """A tubelet Decoder with its KVCache (rows left-aligned, per-row lengths and positions)."""

    def __init__(self, model: Decoder) -> None:
        self.model = model.eval()
        self.vocab_size = model.cfg.vocab_size
        self.device = model.embed.weight.device
        self.cache = model.new_cache(1)
        self.calls = 0
        self.keep_features = False  # a feature draft reads them: see last_features
        self.last_features: Features | None = None
        self.trees = True

    @property
    def lengths(self) -> Tensor:
        return self.cache.lengths

    def reset(self, batch_size: int) -> None:
        self.cache = self.model.new_cache(batch_size)

    @torch.no_grad()
    def extend(self, tokens: Tensor, num_valid: Tensor, tree: TokenTree | None = None) -> Tensor:
        return self.model.head(self._features(tokens, num_valid, tree))

    @torch.no_grad()
    def extend_last(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        """:func:`extend_last`: the head on each row's last new token only."""
        return self.model.head(_last(self._features(tokens, num_valid), num_valid))

    def _features(self, tokens: Tensor, num_valid: Tensor, tree: TokenTree | None = None) -> Tensor:
        self.calls += 1
        start = self.lengths.clone() if self.keep_features else None
        h = self.model.features(tokens, self.cache, num_valid, tree=tree)
        if self.keep_features:
            self.last_features = Features(start, h, num_valid)
        return h

    def move(self, source: Tensor, to: Tensor) -> None:
        self.cache.move(source, to)
        f = self.last_features
        if f is not None:
            rows = torch.arange(len(source), device=f.hidden.device)
            s = (source.to(f.start) - f.start).clamp(0, f.hidden.shape[1] - 1)
            t = (to.to(f.start) - f.start).clamp(0, f.hidden.shape[1] - 1)
            f.hidden[rows, t] = f.hidden[rows, s]

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
        self.keep_features = False  # a feature draft reads them: see last_features
        self.last_features: Features | None = None
        self.trees = False  # no tree verification: its cache is transformers'
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
                         use_cache=True, output_hidden_states=self.keep_features,
                         **{self.cache_argument: self.cache})
        if self.keep_features:  # the last hidden state is the final norm's output, the head's input
            self.last_features = Features(self.lengths, out.hidden_states[-1], num_valid)
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


class FeatureLM:
    """A :class:`~tubelet.models.decoder.FeatureDraftModel` as a CausalLM over its target's rows.

    Token j enters with the feature of token j-1: the target's, read from ``target``'s
    ``last_features`` by :meth:`observe` after each verification, or, for a token the draft
    proposed itself, the feature it predicted at the token before (only one such token per call:
    a draft call feeds one proposal). ``crop`` also forgets every token that entered with a
    predicted feature, even one the target accepted, so it is read again with the target's
    feature: the cache then keeps fewer tokens than asked, which :class:`ModelDraft`, feeding
    what its LM lacks, handles. A row's first token enters with zeros.
    """

    def __init__(self, model: FeatureDraftModel, target: CausalLM) -> None:
        if not hasattr(target, "keep_features"):
            raise ValueError(f"a feature draft needs a target that gives its features (a tubelet or "
                             f"transformers LM), got {type(target).__name__}")
        self.model = model.eval()
        self.target = target
        target.keep_features = True
        self.vocab_size = model.cfg.vocab_size
        self.device = model.embed.weight.device
        self.calls = 0
        self.reset(1)

    @property
    def lengths(self) -> Tensor:
        return self.cache.lengths

    def reset(self, batch_size: int) -> None:
        self.cache = self.model.new_cache(batch_size)
        zeros = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.known = zeros  # the target's features are known for tokens 0 .. known-1 of each row
        self.true = zeros.clone()  # leading tokens of the cache that entered with the target's features
        self.features = torch.zeros(batch_size, 0, self.model.cfg.dim, device=self.device)
        self.predicted = torch.zeros(batch_size, self.model.cfg.dim, device=self.device)
        self.predicted_at = zeros - 1  # the token whose next feature ``predicted`` is

    def observe(self, known: Tensor) -> None:
        """Take the target's features of its last call; ``known[b]``: the tokens of row b whose
        features are now the target's (those its cache holds)."""
        f = self.target.last_features
        B, n, D = f.hidden.shape
        start = f.start.to(self.device)
        need = int((start + n).max()) if n else 0
        if need > self.features.shape[1]:  # doubling: not a copy of every feature at every step
            grow = self.features.new_zeros(B, max(need, 2 * self.features.shape[1]) - self.features.shape[1], D)
            self.features = torch.cat([self.features, grow], dim=1)
        j = torch.arange(n, device=self.device)
        valid = j[None] < f.num_valid.to(self.device)[:, None]
        b = torch.arange(B, device=self.device)[:, None].expand(B, n)
        self.features[b[valid], (start[:, None] + j)[valid]] = f.hidden[valid].to(self.features)
        self.known = known.to(self.device).clone()

    @torch.no_grad()
    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        return self._read(tokens, num_valid, last_only=False)

    @torch.no_grad()
    def extend_last(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        """:func:`extend_last`: the head on each row's last new token only."""
        return self._read(tokens, num_valid, last_only=True)

    @torch.no_grad()
    def extend_own(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        """:func:`extend_last` for a drafting call after the first: each row feeds at most one
        token (``num_valid`` 0 or 1), the one after this draft's own last prediction, which is
        then its previous feature. The same as ``extend_last`` there, without the lookups and
        checks that a call mixing the target's features needs."""
        self.calls += 1
        h, logits = self._step(tokens, self.predicted[:, None], num_valid, last_only=True)
        self._remember(h[:, 0], num_valid)  # (B, D)
        return logits

    def _step(self, tokens: Tensor, previous: Tensor, num_valid: Tensor, last_only: bool) -> tuple[Tensor, Tensor]:
        """One call of the model on the cache: the predicted features (B, n, D), and the logits at
        every new token (B, n, V) or, ``last_only``, at each row's last (B, V)."""
        h = self.model.features(tokens, previous, self.cache, num_valid)
        return h, self.model.head(_last(h, num_valid) if last_only else h)

    def _remember(self, last: Tensor, num_valid: Tensor) -> None:
        """After a call (the cache advanced): each row that fed tokens keeps the feature predicted
        at its last one (B, D), the previous feature of the token it feeds next."""
        fed = num_valid.to(self.device) > 0
        self.predicted = torch.where(fed[:, None], last.to(self.predicted), self.predicted)
        self.predicted_at = torch.where(fed, self.lengths - 1, self.predicted_at)

    def _read(self, tokens: Tensor, num_valid: Tensor, last_only: bool) -> Tensor:
        """A call on tokens that may enter with the target's features: its logits (:meth:`_step`)."""
        self.calls += 1
        B, n = tokens.shape
        before = self.lengths.clone()
        position = before[:, None] + torch.arange(n, device=self.device)  # of each new token
        known = position - 1 < self.known[:, None]
        own = torch.zeros_like(known)  # the first token's previous feature is this draft's last output
        own[:, 0] = ~known[:, 0] & (self.predicted_at == before - 1) & (before > 0)
        valid = torch.arange(n, device=self.device)[None] < num_valid[:, None]
        if (valid & ~known & ~own & (position > 0)).any():
            raise ValueError("a feature draft fed a token whose previous feature is neither the "
                             "target's nor its own last prediction")
        index = (position - 1).clamp(0, max(self.features.shape[1] - 1, 0))
        previous = self.features.gather(1, index[..., None].expand(B, n, self.features.shape[2])) \
            if self.features.shape[1] else self.features.new_zeros(B, n, self.model.cfg.dim)
        previous = torch.where(known[..., None] & (position[..., None] > 0), previous, 0.0)
        previous[:, 0] = torch.where(own[:, 0, None], self.predicted, previous[:, 0])
        h, logits = self._step(tokens, previous, num_valid, last_only)
        self._remember(_last(h, num_valid), num_valid)
        # the cache's leading tokens read with the target's features grow while they stay so
        read = (known | (position == 0)) & valid
        leading = read.long().cumprod(1).sum(1)
        self.true = torch.where(self.true == before, before + leading, self.true)
        return logits

    def crop(self, lengths: Tensor) -> None:
        lengths = torch.minimum(torch.minimum(self.lengths, lengths.to(self.lengths)), self.true)
        self.cache.crop(lengths)
        self.true = lengths.clone()

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        return [self.cache.rows(i)[row] for i in range(len(self.model.blocks))]
