"""The one attention module of tubelet: multi-head, grouped-query and multi-query attention.

Every ViViT variant and the causal decoder use :class:`Attention`. Keys and values have
``num_kv_heads`` heads; query head ``j`` reads key/value head ``j // (num_heads // num_kv_heads)``
(contiguous groups, as in the GQA paper and ``enable_gqa`` of
``torch.nn.functional.scaled_dot_product_attention``). ``num_kv_heads == num_heads`` is plain
multi-head attention and ``num_kv_heads == 1`` multi-query attention.

Model 4 of ViViT (factorised dot-product attention) is a different *neighbourhood*, not a
different module: :func:`factorised_dot_product_attention` sends the first half of the heads
over time and the second half over space, and :class:`Attention` calls it when given a grid.

Causal decoding is a set of optional arguments of the same module, all off by default: rotary
position embeddings (:func:`rotary_embedding`, applied to q and k), a key/value cache
(:class:`KVCache`) into which each call writes its keys and values, and an explicit boolean mask.
A cache holds rows of different lengths left-aligned, so a row's tokens sit at slots
``0 .. lengths[b]-1`` and position == slot; :meth:`KVCache.causal_mask` gives the causal mask
aligned bottom-right per row (new query ``i`` of row ``b`` sees slots ``<= lengths[b] + i``),
which ``is_causal=True`` of SDPA is not when query and key lengths differ (it is top-left
aligned). Right padding of a batch of prompts is the same mask: padded tokens lie past a row's
length, where no real query looks.

Attention maps need the weights that the fused kernels never form. Inside
``with capture_attention(model) as weights:`` every :class:`Attention` of the model computes
``softmax(q k^T / sqrt(d))`` explicitly (:func:`attention_with_weights`, the same numbers as SDPA
to float rounding) and records them per call; outside it, nothing changes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sdpa(q: Tensor, k: Tensor, v: Tensor, *, dropout_p: float = 0.0, attn_mask: Tensor | None = None,
         is_causal: bool = False) -> Tensor:
    """Scaled dot-product attention with fewer key/value heads than query heads.

    q: (..., H, Lq, d); k, v: (..., G, Lk, d) with H % G == 0.

    On CUDA, grouped key/value heads are taken only by the FlashAttention kernel (fp16 / bf16);
    in float32 the fused kernel that remains (memory-efficient attention) takes no groups, and
    SDPA would fall back to the math kernel, whose Lq x Lk score matrix is what runs a long
    clip out of memory. There the key/value heads are repeated instead: memory linear in the
    sequence, the same result.

    On a CPU, a call whose queries are fewer than its keys (decoding with a cache: one new token,
    or the few that speculative sampling verifies) runs in float32 when q is bf16 or fp16. The
    CPU's fused kernel in half precision is slowest exactly there: one query over 330 cached
    bf16 keys took 233 us, where casting to float32 and back takes 40, with the same error
    against a float32 reference (it accumulates in float32 either way). Over 200 cached tokens
    that was a seventh of a bf16 SmolLM2-135M token's time. Longer queries (a prompt, a clip)
    stay in half precision, where the kernel is as fast or faster. A :class:`KVCache` keeps
    half-precision keys and values in float32 on a CPU (:func:`cache_dtype`) for this reason.
    Exported (``torch.export``: a compiled decoding call), every such call runs in float32: comparing
    the two lengths would fix them in the graph.
    """
    if (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
            and (torch.compiler.is_exporting() or int(q.shape[-2]) < int(k.shape[-2]))):
        return sdpa(q.float(), k.float(), v.float(), dropout_p=dropout_p, attn_mask=attn_mask,
                    is_causal=is_causal).to(q.dtype)
    if k.dtype != q.dtype:  # a prompt's call on a float32 cache (cache_dtype)
        k, v = k.to(q.dtype), v.to(q.dtype)
    # a Python bool under torch.jit.trace, and under torch.compile, where a branch on it fixes the head counts
    gqa = True if int(k.shape[-3]) != int(q.shape[-3]) else False
    if gqa and q.is_cuda and q.dtype not in (torch.float16, torch.bfloat16):
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)  # head j -> j // rep
        gqa = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                          is_causal=is_causal, enable_gqa=gqa)


def attention_with_weights(q: Tensor, k: Tensor, v: Tensor, *, dropout_p: float = 0.0,
                           attn_mask: Tensor | None = None, is_causal: bool = False) -> tuple[Tensor, Tensor]:
    """What :func:`sdpa` computes, written out, and the attention weights with it.

    q: (..., H, Lq, d); k, v: (..., G, Lk, d) -> output (..., H, Lq, d) and weights
    (..., H, Lq, Lk) = softmax(q k^T / sqrt(d) + mask), one row per query of every query head
    (a key/value head's weights repeated for each query head of its group). Only for
    :func:`capture_attention`: the Lq x Lk matrix is what the fused kernels avoid.
    """
    k, v = k.to(q.dtype), v.to(q.dtype)  # a float32 cache (cache_dtype)
    rep = q.shape[-3] // k.shape[-3]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)  # head j -> j // rep
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (..., H, Lq, Lk)
    if is_causal:  # top-left aligned, as SDPA's is_causal
        attn_mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    weights = scores.softmax(dim=-1)
    return (F.dropout(weights, dropout_p) if dropout_p else weights) @ v, weights


_ROTARY_TABLES: dict[tuple[int, float, torch.dtype], tuple[Tensor, Tensor]] = {}  # CPU: see rotary_embedding


def rotary_embedding(positions: Tensor, head_dim: int, theta: float = 10000.0,
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """cos and sin of rotary position embeddings (RoFormer), the "rotate half" layout of Llama.

    positions: (B, N) integers -> cos, sin: (B, 1, N, head_dim), broadcast over heads. Channel
    ``i`` and ``i + head_dim/2`` form one rotated pair, with frequency ``theta^(-2i/head_dim)``.
    Computed in float64, rounded to float32, then to ``dtype``: give the hidden states' dtype, so
    that every layer's :func:`apply_rotary` uses them without a cast of its own.

    On a CPU the values are looked up in a table of positions 0..n-1 (made the same way, grown
    by doubling): a decoding call, one token's positions, then costs a lookup instead of a dozen
    small ops, a few percent of a small draft's call. Elsewhere reading the largest position
    would wait for the device, and under ``torch.compile`` it would break the graph, so they are
    computed there (the same values: the table is made by the same function).
    """
    if positions.device.type != "cpu" or not positions.numel() or torch.compiler.is_compiling():
        return _rotary(positions, head_dim, theta, dtype)  # (compiled: no read of a position, one graph)
    need = int(positions.max()) + 1
    key = (head_dim, float(theta), dtype)
    table = _ROTARY_TABLES.get(key)
    if table is None or table[0].shape[0] < need:
        n = max(need, 2 * (0 if table is None else table[0].shape[0]), 256)
        cos, sin = _rotary(torch.arange(n)[None], head_dim, theta, dtype)  # (1, 1, n, d)
        table = _ROTARY_TABLES[key] = cos[0, 0], sin[0, 0]
    return table[0][positions].unsqueeze(1), table[1][positions].unsqueeze(1)


def _rotary(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64)
                          / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (B, N, d/2)
    angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)  # (B, 1, N, d)
    return angles.cos().float().to(dtype), angles.sin().float().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate q or k (B, heads, N, d) by the angles of :func:`rotary_embedding` (or any layout
    whose last dimension is d, with cos and sin laid out to broadcast over it)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


def cache_dtype(k: Tensor) -> torch.dtype:
    """The precision a :class:`KVCache` keeps keys and values in: theirs, but float32 for bf16 or
    fp16 on a CPU, where :func:`sdpa` computes a decoding call's attention in float32. Kept in
    float32, the cache is not cast again by every layer of every call: SmolLM2-135M's attention
    over 2,000 cached tokens for 4 queries took 478 us a layer instead of 769. It is rounded
    to the model's precision as before, so the result is the same; the memory is twice."""
    return torch.float32 if k.device.type == "cpu" and k.dtype in (torch.bfloat16, torch.float16) else k.dtype


class KVCache:
    """Keys and values of every attention layer of a decoder, for rows of different lengths
    (kept in :func:`cache_dtype`).

    Row ``b`` holds ``lengths[b]`` tokens at slots ``0 .. lengths[b]-1`` of each layer's buffer
    (B, G, capacity, d); slots past a row's length hold stale values that no query sees.
    A call on ``n`` new tokens: :meth:`begin` fixes where they go (slot ``lengths[b] + i``, which
    is also their position), every layer's :meth:`write` puts its keys and values there, and
    :meth:`advance` counts the ``num_valid[b]`` real ones (the rest are right padding).
    :meth:`crop` forgets everything past a length: nothing is recomputed or copied.

    A call may carry a tree of candidate tokens instead of one sequence (tree verification in
    speculative sampling): ``begin(n, visible)`` with ``visible[b, i, j]`` True where new token
    ``i`` sees new token ``j``; it still sees every cached token. After verification,
    :meth:`move` puts the accepted candidate's keys and values where the sequence goes on.
    """

    def __init__(self, num_layers: int, batch_size: int, device: torch.device | str = "cpu") -> None:
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.slots: Tensor | None = None  # (B, n) where the current call writes
        self.visible: Tensor | None = None  # (B, n, n) the current call's tree, None: causal
        self.mask: Tensor | None = None  # the current call's mask, made once for all layers
        self.need: int | None = None  # the current call's span, read once for all layers

    def begin(self, n: int, visible: Tensor | None = None) -> Tensor:
        """Slots of the next ``n`` tokens of each row: (B, n); they are also the positions of a
        causal call. ``visible`` (B, n, n): which new tokens each new token sees (a tree)."""
        self.slots = self.lengths[:, None] + torch.arange(n, device=self.lengths.device)
        self.visible, self.mask, self.need = visible, None, None
        return self.slots

    def causal_mask(self) -> Tensor:
        """(B, 1, n, L) boolean, True where new query ``i`` may attend to slot ``j``.

        Bottom-right aligned per row: ``j <= lengths[b] + i``; L = max(lengths) + n. With a
        tree, new token ``i`` sees the new slot ``lengths[b] + j`` only if ``visible[b, i, j]``.
        """
        assert self.slots is not None, "call begin() first"
        if self.mask is not None:
            return self.mask
        keys = torch.arange(self.span(), device=self.slots.device)
        mask = keys <= self.slots[:, :, None]
        if self.visible is not None:
            new = keys[None, None] - self.lengths[:, None, None]  # (B, 1, L): index among the new tokens
            n = self.visible.shape[-1]
            seen = self.visible.gather(2, new.clamp(0, n - 1).expand(-1, n, -1))
            mask &= (new < 0) | seen
        self.mask = mask.unsqueeze(1)
        return self.mask

    def attention_mask(self) -> Tensor | None:
        """The mask the current call's attention needs: none for one row's one new token (it sees
        every slot of the span: the row's cached tokens and itself), else :meth:`causal_mask`.
        Plain decoding's calls skip building a mask and the kernel's masking."""
        assert self.slots is not None, "call begin() first"
        return None if self.slots.shape == (1, 1) else self.causal_mask()

    def span(self) -> int:
        """Slots the current call attends over: max over rows of lengths + n (read from the device
        once per call, not once per layer: on a GPU each read waits for the work queued before it)."""
        assert self.slots is not None
        if self.need is None:
            self.need = int(self.slots[:, -1].max()) + 1
        return self.need

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new k, v (B, G, n, d) at the current slots; return (B, G, L, d) for attention."""
        assert self.slots is not None, "call begin() first"
        B, G, n, d = k.shape
        need = self.span()
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if buf_k is None or buf_k.shape[2] < need:
            cap = max(need, 2 * (0 if buf_k is None else buf_k.shape[2]), 16)
            dtype = cache_dtype(k)
            new_k, new_v = k.new_zeros(B, G, cap, d, dtype=dtype), v.new_zeros(B, G, cap, d, dtype=dtype)
            if buf_k is not None:
                new_k[:, :, :buf_k.shape[2]] = buf_k
                new_v[:, :, :buf_v.shape[2]] = buf_v
            buf_k, buf_v = self.keys[layer], self.values[layer] = new_k, new_v
        if B == 1:  # one row: its slots are the last n of the span, a slice (one copy, no index)
            buf_k[:, :, need - n:need] = k
            buf_v[:, :, need - n:need] = v
        else:  # indexing, not scatter_ with an index expanded to (B, G, n, d): a third of its time on a CPU
            rows = torch.arange(B, device=self.slots.device)[:, None]
            buf_k[rows, :, self.slots] = k.transpose(1, 2).to(buf_k.dtype)  # (B, n, G, d), as rows and slots index
            buf_v[rows, :, self.slots] = v.transpose(1, 2).to(buf_v.dtype)
        return buf_k[:, :, :need], buf_v[:, :, :need]

    def advance(self, num_valid: Tensor | None = None) -> None:
        """Count the tokens just written: all ``n``, or ``num_valid[b]`` of row ``b``."""
        assert self.slots is not None
        self.lengths = self.lengths + (self.slots.shape[1] if num_valid is None else num_valid)
        self.slots = self.visible = self.mask = self.need = None

    def move(self, source: Tensor, to: Tensor) -> None:
        """Copy the keys and values of slot ``source[b]`` to slot ``to[b]`` in every layer (both
        within the row's length): the accepted candidate of a tree goes after its parent."""
        for buf in self.keys + self.values:
            if buf is None:
                continue
            B, G, _, d = buf.shape
            moved = buf.gather(2, source.view(B, 1, 1, 1).expand(B, G, 1, d))
            buf.scatter_(2, to.view(B, 1, 1, 1).expand(B, G, 1, d), moved)

    def crop(self, lengths: Tensor) -> None:
        """Keep the first ``lengths[b]`` tokens of each row (never more than it holds)."""
        self.lengths = torch.minimum(self.lengths, lengths.to(self.lengths))

    def select(self, rows: Tensor) -> None:
        """Keep rows ``rows`` in that order: new row ``i`` is a copy of row ``rows[i]`` (beam search)."""
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]
        self.lengths = self.lengths[rows]

    def rows(self, layer: int) -> list[tuple[Tensor, Tensor]]:
        """The valid keys and values (G, lengths[b], d) of each row of one layer (inspection)."""
        k, v = self.keys[layer], self.values[layer]
        return [(k[b, :, :n], v[b, :, :n]) for b, n in enumerate(self.lengths.tolist())]


class FixedKVCache(KVCache):
    """A :class:`KVCache` whose calls read no value from the device and grow nothing, so that a
    whole decoding call traces as one graph (``torch.export``, ``torch.compile``): the buffers are
    made ahead of each call (:meth:`reserve`, outside the graph), every call attends over the whole
    capacity, and the mask, always made, hides the slots past each row's tokens (stale or never
    written). Cropping, moving and selecting rows are :class:`KVCache`'s. The cost: attention over
    the capacity, at most twice the longest row (it grows by doubling)."""

    def reserve(self, n: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
        """Make room for ``n`` more tokens in every row: buffers (B, kv_heads, capacity, head_dim)
        of ``dtype`` (:func:`cache_dtype` of the model's), at least 256 slots, grown by doubling."""
        need = int(self.lengths.max()) + n
        capacity = self.capacity()
        if capacity >= need:
            return
        grown = max(need, 2 * capacity, 256)
        B, device = self.lengths.shape[0], self.lengths.device
        for i in range(len(self.keys)):
            k, v = (torch.zeros(B, kv_heads, grown, head_dim, dtype=dtype, device=device) for _ in range(2))
            if self.keys[i] is not None:
                k[:, :, :capacity], v[:, :, :capacity] = self.keys[i], self.values[i]
            self.keys[i], self.values[i] = k, v

    def capacity(self) -> int:
        """Slots of each layer's buffers (0 before the first :meth:`reserve`)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def span(self) -> int:
        return self.keys[0].shape[2]

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        buf_k, buf_v = self.keys[layer], self.values[layer]
        buf_k[rows, :, self.slots] = k.transpose(1, 2).to(buf_k.dtype)  # (B, n, G, d), as rows and slots index
        buf_v[rows, :, self.slots] = v.transpose(1, 2).to(buf_v.dtype)
        return buf_k, buf_v

    def attention_mask(self) -> Tensor:
        return self.causal_mask()


def _kv_range(first_query_head: int, query_heads: int, group: int) -> slice:
    """Key/value heads read by query heads [first, first + count) with contiguous groups."""
    start = first_query_head // group
    stop = (first_query_head + query_heads - 1) // group + 1
    return slice(start, stop)


def factorised_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int],
                                     dropout_p: float = 0.0, weights: dict[str, Tensor] | None = None) -> Tensor:
    """ViViT Model 4: the first half of the heads attend over time, the second over space.

    q: (B, H, T*S, d), k, v: (B, G, T*S, d), tokens flattened time-major; grid = (T, S).
    A time head of token (t, s) sees the tokens (., s) of its spatial location; a space head
    sees the tokens (t, .) of its frame. Returns (B, H, T*S, d), laid out in memory as
    (B, T*S, H, d) so that merging the heads for the output projection is free.

    Each half is folded into a batch of 4-D attention problems, the form fused SDPA kernels
    take. With q, k, v as :meth:`Attention.project` makes them (views of one (B, N, heads, d)
    projection), the space fold is a view and only the time fold copies; the two halves'
    outputs are concatenated once, straight into the layout the output projection reads.

    Given a ``weights`` dict (:func:`capture_attention`), each half is computed explicitly and its
    weights stored as folded: ``"time"`` (B*S, H/2, T, T) and ``"space"`` (B*T, H/2, S, S).
    """
    B, H, N, d = q.shape
    T, S = grid
    G = k.shape[1]
    group = H // G
    half = H // 2
    out = []
    for first, over_time in ((0, True), (half, False)):
        kv = _kv_range(first, half, group)
        qh, kh, vh = q[:, first:first + half], k[:, kv], v[:, kv]
        if over_time:
            # (B, h, T*S, d) -> (B, h, T, S, d) -> (B*S, h, T, d)
            def fold(x: Tensor) -> Tensor:
                return x.unflatten(2, (T, S)).permute(0, 3, 1, 2, 4).flatten(0, 1)

            def unfold(x: Tensor) -> Tensor:  # (B*S, h, T, d) -> (B, T, S, h, d)
                return x.unflatten(0, (B, S)).permute(0, 3, 1, 2, 4)
        else:
            # (B, h, T*S, d) -> (B, T, h, S, d) -> (B*T, h, S, d)
            def fold(x: Tensor) -> Tensor:
                return x.unflatten(2, (T, S)).transpose(1, 2).flatten(0, 1)

            def unfold(x: Tensor) -> Tensor:  # (B*T, h, S, d) -> (B, T, S, h, d)
                return x.unflatten(0, (B, T)).transpose(2, 3)
        if weights is None:
            o = sdpa(fold(qh), fold(kh), fold(vh), dropout_p=dropout_p)
        else:
            o, weights["time" if over_time else "space"] = attention_with_weights(
                fold(qh), fold(kh), fold(vh), dropout_p=dropout_p)
        out.append(unfold(o))
    # Concatenating the heads writes (B, T, S, H, d) contiguously: (B, T*S, H, d) in memory.
    return torch.cat(out, dim=3).flatten(1, 2).transpose(1, 2)


class Attention(nn.Module):
    """Self-attention: a fused q/k/v projection, SDPA, an output projection.

    ``qkv`` holds the query rows (H * d), then key rows (G * d), then value rows (G * d).
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, *,
                 qkv_bias: bool = True, proj_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, head_dim: int | None = None) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim or dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * self.head_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        # A list while capture_attention is on: the weights of every call are appended to it.
        self.captured: list[Tensor | dict[str, Tensor]] | None = None

    def project(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) -> q (B, H, N, d), k and v (B, G, N, d); ``rope=(cos, sin)`` rotates q and k
        (one :func:`apply_rotary` over their H + G heads together, before the heads move)."""
        H, G, d = self.num_heads, self.num_kv_heads, self.head_dim
        heads = self.qkv(x).unflatten(-1, (H + 2 * G, d))  # (B, N, H + 2G, d)
        if rope is None:
            q, k, v = heads.split([H, G, G], dim=2)
        else:
            cos, sin = rope  # (B, 1, N, d) -> (B, N, 1, d), as the heads lie here
            q, k = apply_rotary(heads[:, :, :H + G], cos.transpose(1, 2), sin.transpose(1, 2)).split([H, G], dim=2)
            v = heads[:, :, H + G:]
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def output(self, o: Tensor) -> Tensor:
        """(B, H, N, d) -> (B, N, D)."""
        return self.proj_drop(self.proj(o.transpose(1, 2).flatten(2)))

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None, *,
                rope: tuple[Tensor, Tensor] | None = None, attn_mask: Tensor | None = None,
                causal: bool = False, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """x: (B, N, D). With ``grid=(T, S)`` the heads are factorised as in ViViT Model 4.

        Decoding options: ``rope=(cos, sin)`` from :func:`rotary_embedding` rotates q and k;
        ``cache`` stores this call's keys and values as layer ``layer`` and attends over the
        row's cached tokens too, with ``cache.attention_mask()`` unless ``attn_mask`` is given;
        ``causal=True`` without a cache is the square causal mask (training).
        """
        q, k, v = self.project(x, rope)
        if cache is not None:
            k, v = cache.write(layer, k, v)
            if attn_mask is None:
                attn_mask = cache.attention_mask()
        p = self.attn_drop if self.training else 0.0
        causal = causal and attn_mask is None
        if grid is not None:
            weights = None if self.captured is None else {}
            o = factorised_dot_product_attention(q, k, v, grid, dropout_p=p, weights=weights)
        elif self.captured is not None:
            o, weights = attention_with_weights(q, k, v, dropout_p=p, attn_mask=attn_mask, is_causal=causal)
        else:
            o = sdpa(q, k, v, dropout_p=p, attn_mask=attn_mask, is_causal=causal)
        if self.captured is not None:
            self.captured.append(weights)
        return self.output(o)


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[dict[Attention, list[Tensor | dict[str, Tensor]]]]:
    """Record the attention weights of every :class:`Attention` in ``model`` while inside.

        with capture_attention(model) as weights:
            model(clip)
        weights[model.encoder.blocks[0].attn]  # [(B, heads, N, N)]: one entry per call

    Each call appends its (B, heads, Lq, Lk) weights; a call with a token grid (ViViT Model 4)
    appends ``{"time": (B*S, heads/2, T, T), "space": (B*T, heads/2, S, S)}``. Inside, the
    weights are computed explicitly instead of by the fused kernel (the outputs agree to float
    rounding; memory grows with heads * N^2 per layer); on leaving, every module is back on the
    fused path and the lists stay with the caller.
    """
    modules = [m for m in model.modules() if isinstance(m, Attention)]
    if any(m.captured is not None for m in modules):
        raise RuntimeError("capture_attention is already on for this model: leave the first one before "
                           "starting another")
    records: dict[Attention, list[Tensor | dict[str, Tensor]]] = {m: [] for m in modules}
    try:
        for m in modules:
            m.captured = records[m]
        yield records
    finally:
        for m in modules:
            m.captured = None
