"""The one attention module of tubelet: multi-head, grouped-query and multi-query attention.

Every ViViT variant and the causal decoder use :class:`Attention`. Keys and values have
``num_kv_heads`` heads; query head ``j`` reads key/value head ``j // (num_heads // num_kv_heads)``
(contiguous groups, as in the GQA paper and ``enable_gqa`` of
``torch.nn.functional.scaled_dot_product_attention``). ``num_kv_heads == num_heads`` is plain
multi-head attention and ``num_kv_heads == 1`` multi-query attention.

Model 4 of ViViT (factorised dot-product attention) is a different *neighbourhood*, not a
different module: :func:`factorised_dot_product_attention` sends the first half of the heads
over time and the second half over space, and :class:`Attention` calls it when given a grid.
"""

from __future__ import annotations

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
    """
    gqa = k.shape[-3] != q.shape[-3]
    if gqa and q.is_cuda and q.dtype not in (torch.float16, torch.bfloat16):
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)  # head j -> j // rep
        gqa = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                          is_causal=is_causal, enable_gqa=gqa)


def _kv_range(first_query_head: int, query_heads: int, group: int) -> slice:
    """Key/value heads read by query heads [first, first + count) with contiguous groups."""
    start = first_query_head // group
    stop = (first_query_head + query_heads - 1) // group + 1
    return slice(start, stop)


def factorised_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int],
                                     dropout_p: float = 0.0) -> Tensor:
    """ViViT Model 4: the first half of the heads attend over time, the second over space.

    q: (B, H, T*S, d), k, v: (B, G, T*S, d), tokens flattened time-major; grid = (T, S).
    A time head of token (t, s) sees the tokens (., s) of its spatial location; a space head
    sees the tokens (t, .) of its frame. Returns (B, H, T*S, d), laid out in memory as
    (B, T*S, H, d) so that merging the heads for the output projection is free.

    Each half is folded into a batch of 4-D attention problems, the form fused SDPA kernels
    take. With q, k, v as :meth:`Attention.project` makes them (views of one (B, N, heads, d)
    projection), the space fold is a view and only the time fold copies; the two halves'
    outputs are concatenated once, straight into the layout the output projection reads.
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
        out.append(unfold(sdpa(fold(qh), fold(kh), fold(vh), dropout_p=dropout_p)))
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

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) -> q (B, H, N, d), k and v (B, G, N, d)."""
        H, G, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * d, G * d, G * d], dim=-1)
        return (q.unflatten(-1, (H, d)).transpose(1, 2), k.unflatten(-1, (G, d)).transpose(1, 2),
                v.unflatten(-1, (G, d)).transpose(1, 2))

    def output(self, o: Tensor) -> Tensor:
        """(B, H, N, d) -> (B, N, D)."""
        return self.proj_drop(self.proj(o.transpose(1, 2).flatten(2)))

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        """x: (B, N, D). With ``grid=(T, S)`` the heads are factorised as in ViViT Model 4."""
        q, k, v = self.project(x)
        p = self.attn_drop if self.training else 0.0
        if grid is None:
            o = sdpa(q, k, v, dropout_p=p)
        else:
            o = factorised_dot_product_attention(q, k, v, grid, dropout_p=p)
        return self.output(o)
