"""ViViT models: configuration, the shared attention module, blocks, tokenisers, registry."""

from .attention import (Attention, KVCache, apply_rotary, factorised_dot_product_attention,
                        rotary_embedding, sdpa)
from .config import MODEL_KINDS, ConfigError, ViViTConfig
from .info import ModelInfo, Preprocessing
from .posembed import pos_embed_grids, repeat_pos_embed_in_time, resize_pos_embed
from .registry import create_model, get_config, list_models, register_config
from .vivit import ViViT, count_parameters

__all__ = [
    "Attention", "ConfigError", "KVCache", "apply_rotary", "rotary_embedding", "MODEL_KINDS", "ViViT", "ViViTConfig", "count_parameters",
    "create_model", "factorised_dot_product_attention", "get_config", "list_models",
    "register_config", "sdpa", "ModelInfo", "Preprocessing", "pos_embed_grids", "repeat_pos_embed_in_time",
    "resize_pos_embed",
]
