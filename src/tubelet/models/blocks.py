"""Transformer blocks and the encoder shared by every ViViT variant.

Pre-LN blocks as in ViT and the reference code: ``x + MSA(LN(x))`` then ``+ MLP(LN(.))``.
:class:`Block` serves Models 1, 2 and 4 (Model 4 passes a token grid to the attention);
:class:`FactorisedSelfAttentionBlock` is Model 3's block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention
from .config import ViViTConfig


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate of each layer: linear from 0 at the first to ``rate`` at the last.

    The reference uses ``layer / max(depth - 1, 1) * rate``.
    """
    return [i / max(depth - 1, 1) * rate for i in range(depth)]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole examples.

    Each example keeps the branch with probability 1 - p. The reference does not rescale the
    kept branches (``scale=False``); ``scale=True`` divides them by 1 - p as timm does.
    ``group`` consecutive rows of the batch belong to one example (Model 2's spatial encoder
    sees (B*T) frames, and drops a branch for all frames of a clip together, as the reference).
    """

    def __init__(self, p: float = 0.0, scale: bool = False) -> None:
        super().__init__()
        self.p = p
        self.scale = scale

    def forward(self, x: Tensor, group: int = 1) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0] // group).bernoulli_(keep)
        if self.scale:
            mask = mask / keep
        mask = mask.repeat_interleave(group) if group > 1 else mask
        return x * mask.view(-1, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}, scale={self.scale}"


class MLP(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout (the reference's MlpBlock)."""

    def __init__(self, dim: int, hidden: int, gelu: str = "tanh", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _attention(cfg: ViViTConfig) -> Attention:
    return Attention(cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, qkv_bias=cfg.qkv_bias,
                     attn_drop=cfg.attention_dropout, proj_drop=cfg.dropout)


class Block(nn.Module):
    """Pre-LN transformer block; with a grid its attention is factorised over heads (Model 4)."""

    def __init__(self, cfg: ViViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = _attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.mlp_dim, cfg.gelu, cfg.dropout)
        self.drop_path = DropPath(drop_path, cfg.drop_path_scale)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None, group: int = 1) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid), group)
        return x + self.drop_path(self.mlp(self.norm2(x)), group)


class FactorisedSelfAttentionBlock(nn.Module):
    """ViViT Model 3: spatial MSA within each frame, temporal MSA within each spatial location.

    Each attention has its own LayerNorm and residual; then the MLP. ``attention_order``
    picks which comes first. The reference applies no stochastic depth in this block; here it
    is applied like in every other block (it changes no weights).
    """

    def __init__(self, cfg: ViViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.norm_space = nn.LayerNorm(d, eps=eps)
        self.attn_space = _attention(cfg)
        self.norm_time = nn.LayerNorm(d, eps=eps)
        self.attn_time = _attention(cfg)
        self.norm_mlp = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(d, cfg.mlp_dim, cfg.gelu, cfg.dropout)
        self.drop_path = DropPath(drop_path, cfg.drop_path_scale)
        self.order = cfg.attention_order

    def _space(self, x: Tensor, T: int, S: int) -> Tensor:
        B = x.shape[0]
        y = x.reshape(B * T, S, -1)  # (B, T*S, D) -> (B*T, S, D)
        y = self.attn_space(self.norm_space(y)).reshape(B, T * S, -1)
        return x + self.drop_path(y)

    def _time(self, x: Tensor, T: int, S: int) -> Tensor:
        B = x.shape[0]
        y = x.unflatten(1, (T, S)).transpose(1, 2).reshape(B * S, T, -1)  # -> (B*S, T, D), a copy
        y = self.attn_time(self.norm_time(y)).unflatten(0, (B, S)).transpose(1, 2)  # -> (B, T, S, D), a view
        # The residual add reads y through the transposed view and writes (B, T, S, D) in
        # x's layout, so returning to time-major order costs no copy of its own.
        return (x.unflatten(1, (T, S)) + self.drop_path(y)).flatten(1, 2)  # -> (B, T*S, D)

    def forward(self, x: Tensor, grid: tuple[int, int], group: int = 1) -> Tensor:
        T, S = grid
        if self.order == "space_time":
            x = self._time(self._space(x, T, S), T, S)
        else:
            x = self._space(self._time(x, T, S), T, S)
        return x + self.drop_path(self.mlp(self.norm_mlp(x)))


def fold_time_embed(pos: Tensor, time: Tensor, prefix: int) -> Tensor:
    """A (1, P + t*s, D) position table (``prefix`` = P rows first) plus a (1, t, D) table over
    time (``ViViTConfig.time_embed``) -> the one (1, P + t*s, D) table that adds the same to every
    token: what the encoder adds, and what formats with only the joint table store."""
    grid = pos[:, prefix:].unflatten(1, (time.shape[1], -1)) + time[:, :, None]
    return torch.cat([pos[:, :prefix], grid.flatten(1, 2)], dim=1)


class Encoder(nn.Module):
    """Optional CLS token, learned position embedding, blocks, final LayerNorm.

    The CLS token is prepended before the position embedding is added (so the embedding has
    N + 1 rows), as in the reference. With ``time_steps`` (``ViViTConfig.time_embed``), a table
    of one row per token frame is also added to the N = time_steps * s tokens, frame-major.
    ``grid`` is passed to blocks that need the token layout.

    With ``grad_checkpointing`` set, a training forward keeps only each block's input and
    recomputes the block's activations during the backward pass (``torch.utils.checkpoint``,
    non-reentrant, random state replayed so dropout and stochastic depth draw the same masks):
    activation memory falls from every intermediate of every block to one (B, N, D) tensor per
    block, for about one more forward pass of compute.
    """

    def __init__(self, cfg: ViViTConfig, num_tokens: int, depth: int, *, cls_token: bool,
                 block: type[nn.Module] = Block, pos_std: float = 0.02, time_steps: int = 0) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens + int(cls_token), d))
        nn.init.normal_(self.pos_embed, std=pos_std)
        # ViViTConfig.time_embed: one row per token frame, added to every token of that frame.
        self.time_embed = None
        if time_steps:
            self.time_embed = nn.Parameter(torch.empty(1, time_steps, d))
            nn.init.normal_(self.time_embed, std=cfg.time_embed)
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = drop_path_rates(cfg.drop_path, depth)
        self.blocks = nn.ModuleList(block(cfg, rates[i]) for i in range(depth))
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.grad_checkpointing = False

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None, group: int = 1) -> Tensor:
        """(B, N, D) -> (B, N[+1], D), normalised."""
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos = self.pos_embed
        if self.time_embed is not None:  # folded into the (1, N, D) table: one add over the batch
            pos = fold_time_embed(pos, self.time_embed, prefix=int(self.cls_token is not None))
        x = self.pos_drop(x + pos)
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        for blk in self.blocks:
            if recompute:
                x = checkpoint(blk, x, grid, group, use_reentrant=False)
            else:
                x = blk(x, grid, group)
        return self.norm(x)

    def pool(self, x: Tensor) -> Tensor:
        """Encoder output -> one vector per sequence: the CLS token or the mean of all tokens."""
        return x[:, 0] if self.cls_token is not None else x.mean(dim=1)
