"""Multi-head -> grouped-query attention (GQA paper, section 2.1).

Each group of query heads keeps its own query and output projections and shares one key and
one value head: the key and value projection heads of the group, mean-pooled. Groups are
contiguous (query head j reads key/value head j // (H / G)), the grouping of
:class:`tubelet.models.Attention`. Works on any model built from that module (every ViViT
variant, the causal decoder) and converts G1 -> G2 key/value heads whenever G2 divides G1.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.attention import Attention


def pool_kv_heads(w: Tensor, heads: int, groups: int) -> Tensor:
    """Mean-pool ``heads`` stacked head blocks of ``w`` into ``groups`` (contiguous) blocks.

    w: (heads * d, ...) rows of a key or value projection (weight or bias) -> (groups * d, ...).
    """
    if heads % groups:
        raise ConfigError(f"{heads} key/value heads cannot be pooled into {groups} groups; "
                         f"choose a divisor of {heads}")
    d = w.shape[0] // heads
    return w.reshape(groups, heads // groups, d, *w.shape[1:]).mean(dim=1).reshape(groups * d, *w.shape[1:])


def convert_attention(attn: Attention, num_kv_heads: int) -> None:
    """Rewrite ``attn``'s fused q/k/v projection in place for ``num_kv_heads`` key/value heads."""
    H, G, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    if H % num_kv_heads:
        raise ConfigError(f"num_heads={H} is not divisible by num_kv_heads={num_kv_heads}")
    old = attn.qkv
    rows = [H * d, G * d, G * d]

    def convert(t: Tensor) -> Tensor:
        q, k, v = t.split(rows, dim=0)
        return torch.cat([q, pool_kv_heads(k, G, num_kv_heads), pool_kv_heads(v, G, num_kv_heads)])

    new = nn.Linear(old.in_features, (H + 2 * num_kv_heads) * d, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(convert(old.weight))
        if old.bias is not None:
            new.bias.copy_(convert(old.bias))
    attn.qkv = new
    attn.num_kv_heads = num_kv_heads


def to_gqa(model: nn.Module, num_kv_heads: int, *, inplace: bool = False) -> nn.Module:
    """``model`` with every attention converted to ``num_kv_heads`` key/value heads.

    ``num_kv_heads`` = number of query heads gives back the same model; 1 gives multi-query
    attention. The model's ``config.num_kv_heads`` is updated (and validated) when it has one.
    """
    if not inplace:
        model = copy.deepcopy(model)
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and hasattr(config, "num_kv_heads"):
        config = dataclasses.replace(config, num_kv_heads=num_kv_heads)  # validates a ViViTConfig
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    if not attentions:
        raise ValueError("the model has no tubelet Attention module to convert")
    for attn in attentions:
        convert_attention(attn, num_kv_heads)
    if config is not None:
        model.config = config
    return model
