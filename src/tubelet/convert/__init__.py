"""Weights in and out: reference (Flax) checkpoints, transformers, image ViTs, GQA."""

from .scenic import config_from_scenic, convert_scenic_params, scenic_rules

__all__ = ["config_from_scenic", "convert_scenic_params", "scenic_rules"]
