"""Weights in and out: reference (Flax) checkpoints, transformers, image ViTs, GQA.

Nothing here imports JAX, Flax or transformers: the reference checkpoints are read with
``msgpack`` and transformers' weights are plain state dicts.
"""

from .gqa import pool_kv_heads, to_gqa
from .hf import config_from_hf, config_to_hf, load_hf, save_hf
from .msgpack_io import read_flax_params, read_msgpack
from .scenic import config_from_scenic, convert_scenic_params, load_scenic, read_scenic_params, scenic_rules
from .vit import (ImageViT, central_frame_kernel, image_vit_from_state_dict, inflate_kernel, read_image_vit,
                  vivit_from_image_vit)

__all__ = ["ImageViT", "central_frame_kernel", "config_from_hf", "config_from_scenic", "config_to_hf",
           "convert_scenic_params", "image_vit_from_state_dict", "inflate_kernel", "load_hf", "load_scenic",
           "read_flax_params", "read_image_vit", "read_msgpack", "read_scenic_params",
           "save_hf", "scenic_rules", "to_gqa", "pool_kv_heads",
           "vivit_from_image_vit"]
