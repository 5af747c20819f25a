"""Weights in and out: reference (Flax) checkpoints, transformers, image ViTs, GQA."""

from .msgpack_io import read_flax_params, read_msgpack
from .posembed import pos_embed_grids, repeat_pos_embed_in_time, resize_pos_embed
from .scenic import config_from_scenic, convert_scenic_params, load_scenic, read_scenic_params, scenic_rules

__all__ = ["config_from_scenic", "convert_scenic_params", "load_scenic", "pos_embed_grids",
           "read_flax_params", "read_msgpack", "read_scenic_params", "repeat_pos_embed_in_time",
           "resize_pos_embed", "scenic_rules"]
