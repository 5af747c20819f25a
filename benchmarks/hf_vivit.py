"""transformers' VivitForVideoClassification on the configuration of a tubelet Model 1, with
tubelet's weights copied in, so the two are timed on the same network and input.

The weight copy goes through the visible name map below (tubelet name -> transformers
name). It is local to the benchmarks because this branch predates tubelet's own transformers
converter (``tubelet.convert.hf``, now on main); once merged, that converter should replace
:func:`weight_map` and :func:`copy_weights` here (one name map, not two).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tubelet.models import ViViT, ViViTConfig

# transformers' attention implementations for ViViT, fastest-known first; the benchmark
# tries each and reports the ones that cannot run here (e.g. flash_attention_2 without the
# flash-attn package, or on CPU).
HF_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention", "eager")


def hf_config(cfg: ViViTConfig, attn_implementation: str):
    from transformers import VivitConfig

    if cfg.kind != "spatiotemporal" or cfg.tokeniser != "tubelet" or cfg.classifier != "token":
        raise ValueError(f"transformers has only ViViT Model 1 with a tubelet tokeniser and a CLS token; "
                         f"got kind={cfg.kind}, tokeniser={cfg.tokeniser}, classifier={cfg.classifier}")
    if cfg.kv_heads != cfg.num_heads or cfg.representation_size or isinstance(cfg.num_classes, tuple):
        raise ValueError("transformers' Vivit has no grouped-query attention, pre-logits or several heads")
    if cfg.image_size[0] != cfg.image_size[1]:
        raise ValueError(f"transformers' Vivit takes square frames; got {cfg.image_size}")
    config = VivitConfig(
        image_size=cfg.image_size[0], num_frames=cfg.num_frames,
        tubelet_size=[cfg.tubelet_size, cfg.patch_size, cfg.patch_size], num_channels=cfg.in_channels,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim, qkv_bias=cfg.qkv_bias, layer_norm_eps=cfg.layer_norm_eps,
        # gelu_pytorch_tanh is torch's fused tanh GELU, the same function as tubelet's default
        # (transformers' own default, gelu_fast, is the same formula written out op by op).
        hidden_act="gelu_pytorch_tanh" if cfg.gelu == "tanh" else "gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=cfg.total_classes)
    config._attn_implementation = attn_implementation
    return config


def weight_map(num_layers: int) -> list[tuple[str, str]]:
    """(tubelet name, transformers name) of every tensor of Model 1; the fused q/k/v of tubelet
    is split into three by :func:`copy_weights`."""
    rows = [
        ("tokeniser.proj.weight", "vivit.embeddings.patch_embeddings.projection.weight"),
        ("tokeniser.proj.bias", "vivit.embeddings.patch_embeddings.projection.bias"),
        ("encoder.cls_token", "vivit.embeddings.cls_token"),
        ("encoder.pos_embed", "vivit.embeddings.position_embeddings"),
        ("encoder.norm.weight", "vivit.layernorm.weight"),
        ("encoder.norm.bias", "vivit.layernorm.bias"),
        ("head.weight", "classifier.weight"),
        ("head.bias", "classifier.bias"),
    ]
    per_layer = [
        ("norm1", "layernorm_before"), ("norm2", "layernorm_after"), ("attn.proj", "attention.o_proj"),
        ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
        ("attn.qkv", ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    ]
    for i in range(num_layers):
        for ours, theirs in per_layer:
            for p in ("weight", "bias"):
                if isinstance(theirs, tuple):
                    rows.append((f"encoder.blocks.{i}.{ours}.{p}", "|".join(f"vivit.layers.{i}.{t}.{p}" for t in theirs)))
                else:
                    rows.append((f"encoder.blocks.{i}.{ours}.{p}", f"vivit.layers.{i}.{theirs}.{p}"))
    return rows


@torch.no_grad()
def copy_weights(model: ViViT, hf) -> None:
    ours = model.state_dict()
    theirs = hf.state_dict()
    done = set()
    for src, dst in weight_map(model.config.num_layers):
        if src not in ours:
            continue  # e.g. qkv bias off
        names = dst.split("|")
        parts = ours[src].chunk(len(names), dim=0)  # q, k, v rows of the fused projection
        for name, part in zip(names, parts):
            theirs[name].copy_(part)
            done.add(name)
    missing = set(theirs) - done
    if missing:
        raise KeyError(f"no tubelet tensor for transformers' {sorted(missing)}; extend weight_map")


def build_hf(model: ViViT, attn_implementation: str, device: torch.device):
    """transformers' Model 1 with ``model``'s weights, on ``device``, in evaluation mode."""
    from transformers import VivitForVideoClassification

    hf = VivitForVideoClassification(hf_config(model.config, attn_implementation))
    copy_weights(model, hf)
    return hf.to(device)


def hf_input(x: Tensor) -> Tensor:
    """tubelet clips (B, C, T, H, W) -> transformers' (B, T, C, H, W), made contiguous once,
    outside the timed region."""
    return x.transpose(1, 2).contiguous()


def hf_logits(hf):
    def call(pixel_values: Tensor) -> Tensor:
        return hf(pixel_values=pixel_values).logits
    return call
