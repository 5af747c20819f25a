"""transformers' VivitForVideoClassification on the configuration of a tubelet Model 1, with
tubelet's weights copied in through :mod:`tubelet.convert.hf`, so the two are timed on the same
network and input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tubelet.convert.hf import config_to_hf, detect_naming, to_hf_state_dict
from tubelet.models import ViViT

# transformers' attention implementations for ViViT, fastest-known first; the benchmark
# tries each and reports the ones that cannot run here (e.g. flash_attention_2 without the
# flash-attn package, or on CPU).
HF_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention", "eager")


def build_hf(model: ViViT, attn_implementation: str, device: torch.device):
    """transformers' Model 1 with ``model``'s weights (through :mod:`tubelet.convert.hf`), on
    ``device``, in evaluation mode."""
    from transformers import VivitConfig, VivitForVideoClassification

    config = VivitConfig(**config_to_hf(model.config))
    if model.config.gelu == "tanh":
        # torch's fused tanh GELU: the same function as transformers' default gelu_fast (written
        # out op by op), so the comparison times attention and layout, not an unfused activation.
        config.hidden_act = "gelu_pytorch_tanh"
    config._attn_implementation = attn_implementation
    hf = VivitForVideoClassification(config)
    naming = detect_naming(hf.state_dict())
    hf.load_state_dict(to_hf_state_dict(model, naming=naming))
    return hf.to(device).eval()


def hf_input(x: Tensor) -> Tensor:
    """tubelet clips (B, C, T, H, W) -> transformers' (B, T, C, H, W), made contiguous once,
    outside the timed region."""
    return x.transpose(1, 2).contiguous()


def hf_logits(hf):
    def call(pixel_values: Tensor) -> Tensor:
        return hf(pixel_values=pixel_values).logits
    return call
