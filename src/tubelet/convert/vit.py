"""Initialise any ViViT variant from an image ViT (paper 3.4).

Three namings of an image ViT are mapped, each by a visible name map, to ONE canonical
layout (timm's names, which are also the names of tubelet's :class:`Block`):

====================  ===========================================================
``timm``              ``vit_base_patch16_224`` and friends (state dict / safetensors)
``hf``                transformers ``ViTModel`` / ``ViTForImageClassification``, in the
                      naming ``save_pretrained`` writes and in transformers 5's module naming
``flax``              the reference ViT / big_vision ``.npz`` (Flax paths; ``MlpBlock_3`` &
                      co. of the original release or ``MlpBlock_0`` & co. of big_vision/scenic)
====================  ===========================================================

Then :func:`vivit_from_image_vit` builds the video model from the canonical layout:

- position embeddings repeated over time (paper 3.4), resized in space first if the image
  grid differs (bicubic), the CLS row kept (dropped for models without a CLS token);
- tubelet kernels by ``"central_frame"`` (the 2D kernel at temporal index t // 2, zeros at the
  other t - 1 positions; the reference's random-init variant zeroes the wrong axis) or
  ``"filter_inflation"`` (the 2D kernel replicated over t and divided by t);
- Model 3: the spatial attention and its LayerNorm from the ViT; the temporal attention's
  output projection (weight and bias) zero, so the block starts as the image block. The
  paper and the reference (``attention_kernel_init_method='zero'``) zero the q/k/v and output
  kernels; zeroing them all makes the output projection's and the values' gradients zero
  (each is the other's factor), so only the output bias would learn. ``"zero_proj"`` (default)
  keeps q/k/v randomly initialised; ``"zero_all"`` is the reference's choice.
- Model 2 (and the average-pool baseline): the spatial encoder is the ViT, CLS token
  included (the reference forgets it); the temporal encoder stays freshly initialised;
- a fresh (zero) classifier head; the ViT's head, pooler and pre-logits are not used.

The ViT's GELU (exact for timm and transformers, tanh for Flax) and LayerNorm epsilon (1e-6;
1e-12 for transformers) are carried into the ViViT config, so that a clip of one repeated
image gives the image ViT's features (tested in ``tests/convert/test_vit.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import MissingCheckpointError, load_state, read_weights
from ..errors import CheckpointError, UsageError
from ..models.config import ConfigError, ViViTConfig
from ..models.posembed import pos_embed_grids, repeat_pos_embed_in_time, resize_pos_embed
from ..models.vivit import ViViT
from .rules import (FLAX_BLOCKS, Rule, apply_rules, flax_block, flax_conv2d, same, torch_pair, transformers_layer,
                    transformers_naming)

KERNEL_INITS = ("central_frame", "filter_inflation")
TEMPORAL_ATTENTION_INITS = ("zero_proj", "zero_all")


# ---------------------------------------------------------------------------- kernel math
def central_frame_kernel(w: Tensor, t: int) -> Tensor:
    """(D, C, p, p) -> (D, C, t, p, p): the 2D kernel at temporal index t // 2, zeros elsewhere
    (paper eq. 9)."""
    out = w.new_zeros(w.shape[0], w.shape[1], t, *w.shape[2:])
    out[:, :, t // 2] = w
    return out


def inflate_kernel(w: Tensor, t: int) -> Tensor:
    """(D, C, p, p) -> (D, C, t, p, p): the 2D kernel replicated over time, divided by t
    (filter inflation, paper eq. 8)."""
    return w.unsqueeze(2).repeat(1, 1, t, 1, 1) / t


# ---------------------------------------------------------------------------- canonical layout
@dataclass
class ImageViT:
    """An image ViT in the canonical layout (timm names), with the numerics of its source.

    Keys: ``patch_embed.proj.{weight,bias}`` (D, C, p, p), ``cls_token`` (1, 1, D) if it has
    one, ``pos_embed`` (1, [1 +] h*w, D), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
    mlp.fc2}.{weight,bias}``, ``norm.{weight,bias}``.
    """

    state: dict[str, Tensor]
    naming: str
    gelu: str
    layer_norm_eps: float
    num_heads: int | None = None  # when the source says (Flax kernels, transformers config)

    @property
    def depth(self) -> int:
        return sum(1 for k in self.state if k.startswith("blocks.") and k.endswith(".norm1.weight"))

    @property
    def hidden_size(self) -> int:
        return self.state["norm.weight"].shape[0]

    @property
    def patch_size(self) -> int:
        return self.state["patch_embed.proj.weight"].shape[-1]

    @property
    def has_cls_token(self) -> bool:
        return "cls_token" in self.state

    @property
    def grid(self) -> tuple[int, int]:
        n = self.state["pos_embed"].shape[1] - int(self.has_cls_token)
        side = round(n ** 0.5)
        if side * side != n:
            raise ConfigError(f"image ViT position embedding has {n} patch rows, not a square grid")
        return side, side


# Canonical names are tubelet's Block names under ``blocks.{i}``, so the same layer maps serve.
_BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def timm_rules(depth: int, cls_token: bool) -> list[Rule]:
    """timm naming -> canonical (the same names; the map says which tensors are used)."""
    rules: list[Rule] = [Rule("pos_embed", ("pos_embed",), same), *torch_pair("patch_embed.proj", "patch_embed.proj")]
    if cls_token:
        rules.append(Rule("cls_token", ("cls_token",), same))
    for i in range(depth):
        for part in _BLOCK_PARTS:
            rules += torch_pair(f"blocks.{i}.{part}", f"blocks.{i}.{part}")
    return rules + torch_pair("norm", "norm")


def hf_vit_rules(depth: int, naming: str = "released") -> list[Rule]:
    """transformers ViT naming (``vit.`` prefix removed) -> canonical."""
    rules: list[Rule] = [Rule("cls_token", ("embeddings.cls_token",), same),
                         Rule("pos_embed", ("embeddings.position_embeddings",), same),
                         *torch_pair("patch_embed.proj", "embeddings.patch_embeddings.projection")]
    for i in range(depth):
        rules += transformers_layer(f"blocks.{i}", "", i, naming)
    return rules + torch_pair("norm", "layernorm")


def flax_vit_rules(depth: int, cls_token: bool, blocks: str, pos_path: str) -> list[Rule]:
    """Reference ViT / big_vision Flax paths -> canonical (numpy in, layout changed)."""
    rules: list[Rule] = [Rule("pos_embed", (pos_path,), same),
                         Rule("patch_embed.proj.weight", ("embedding/kernel",), flax_conv2d),
                         Rule("patch_embed.proj.bias", ("embedding/bias",), same)]
    if cls_token:
        rules.append(Rule("cls_token", ("cls",), same))
    for i in range(depth):
        rules += flax_block(f"blocks.{i}", f"Transformer/encoderblock_{i}", blocks)
    return rules + [Rule("norm.weight", ("Transformer/encoder_norm/scale",), same),
                    Rule("norm.bias", ("Transformer/encoder_norm/bias",), same)]


# Tensors of an image classifier that a video model does not take (heads, poolers).
_IGNORED = ("head.", "head/", "pre_logits", "classifier.", "pooler.", "embeddings.mask_token",
            "MAPHead_0/", "attn_pool.")


def _apply(rules: list[Rule], state: Mapping[str, Any], naming: str) -> dict[str, Tensor]:
    return apply_rules(rules, state, f"image ViT ({naming} naming)", ignored=_IGNORED,
                       hint=" (layer scale, register tokens and attention pooling are not supported)")


def unstack_scanned_blocks(state: Mapping[str, Any]) -> dict[str, Any]:
    """big_vision with ``scan=True`` stores all blocks as one ``Transformer/encoderblock/...``
    tree with a leading depth axis; split it into ``Transformer/encoderblock_{i}/...``."""
    scanned = "Transformer/encoderblock/"
    out = {k: v for k, v in state.items() if not k.startswith(scanned)}
    for k, v in state.items():
        if k.startswith(scanned):
            for i in range(v.shape[0]):  # (depth, ...) -> depth x (...)
                out[f"Transformer/encoderblock_{i}/{k[len(scanned):]}"] = v[i]
    return out


def _count(keys: Any, fmt: str) -> int:
    i = 0
    while any(k.startswith(fmt.format(i)) for k in keys):
        i += 1
    return i


def detect_vit_naming(keys: Any) -> str:
    """'timm', 'hf' or 'flax': which naming an image ViT's tensors use."""
    keys = set(keys)
    if "patch_embed.proj.weight" in keys:
        return "timm"
    if any(k.startswith(("embeddings.patch_embeddings", "vit.embeddings.patch_embeddings")) for k in keys):
        return "hf"
    if any(k.startswith(("embedding/kernel", "params/embedding/kernel")) for k in keys):
        return "flax"
    raise ConfigError("cannot tell the naming of this image ViT: expected timm "
                      "('patch_embed.proj.weight'), transformers ('embeddings.patch_embeddings...') or "
                      "Flax ('embedding/kernel') tensor names")


_HF_TANH = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh")


def image_vit_from_state_dict(state: Mapping[str, Any], hf_config: Mapping[str, Any] | None = None) -> ImageViT:
    """Any supported naming -> :class:`ImageViT` (canonical layout). ``hf_config`` is the
    ``config.json`` of a transformers ViT (GELU, epsilon, heads); without it transformers'
    defaults (exact GELU, eps 1e-12) are assumed."""
    naming = detect_vit_naming(state)
    if naming == "timm":
        depth = _count(state, "blocks.{}.")
        return ImageViT(_apply(timm_rules(depth, "cls_token" in state), state, naming), naming,
                        gelu="exact", layer_norm_eps=1e-6)
    if naming == "hf":
        prefix = "vit."  # ViTForImageClassification nests ViTModel under `vit.`
        state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
        sub = transformers_naming(state) or "released"
        depth = _count(state, "encoder.layer.{}." if sub == "released" else "layers.{}.")
        cfg = dict(hf_config or {})
        act = cfg.get("hidden_act", "gelu")
        if act not in _HF_TANH + ("gelu",):
            raise ConfigError(f"transformers ViT hidden_act={act!r} is not a GELU tubelet has")
        return ImageViT(_apply(hf_vit_rules(depth, sub), state, "transformers"), naming,
                        gelu="tanh" if act in _HF_TANH else "exact",
                        layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
                        num_heads=cfg.get("num_attention_heads"))
    # Flax: arrays named by path, with big_vision's `params/` prefix or without.
    state = {(k[len("params/"):] if k.startswith("params/") else k): v for k, v in state.items()}
    state = unstack_scanned_blocks(state)
    depth = _count(state, "Transformer/encoderblock_{}/")
    blocks = "vit" if "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel" in state else "big_vision"
    pos = "pos_embedding" if "pos_embedding" in state else "Transformer/posembed_input/pos_embedding"
    heads = np.shape(state.get(f"Transformer/encoderblock_0/{FLAX_BLOCKS[blocks][0]}/query/kernel", ()))
    return ImageViT(_apply(flax_vit_rules(depth, "cls" in state, blocks, pos), state, f"Flax ({blocks})"),
                    naming, gelu="tanh", layer_norm_eps=1e-6,
                    num_heads=heads[1] if len(heads) == 3 else None)


def read_image_vit(path: str | Path) -> ImageViT:
    """An image ViT from a file or folder: ``.safetensors``, ``.pth``/``.pt``/``.bin`` (a state
    dict, or a dict with it under 'model' / 'state_dict'), ``.npz`` (Flax paths), or a
    transformers folder (``config.json`` + weights)."""
    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(f"{path} does not exist")
    if path.is_dir():
        from .hf import read_hf_folder
        config, state = read_hf_folder(path)
        return image_vit_from_state_dict(state, config)
    if path.suffix == ".safetensors":
        return image_vit_from_state_dict(read_weights(path)[0])
    if path.suffix == ".npz":
        from .scenic import read_npz
        return image_vit_from_state_dict(read_npz(path))
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
        except Exception as e:
            raise CheckpointError(f"cannot read {path} as a torch state dict ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else 'no detail'}); only plain tensor "
                                  "files are read (no pickled code): save it as .safetensors") from None
        for key in ("model", "state_dict", "model_state"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        return image_vit_from_state_dict(obj)
    raise UsageError(f"{path}: expected .safetensors, .pth/.pt/.bin, .npz or a transformers folder")


# ---------------------------------------------------------------------------- ViT -> ViViT
def _check_backbone(vit: ImageViT, cfg: ViViTConfig) -> None:
    checks = [("num_layers", cfg.num_layers, vit.depth), ("hidden_size", cfg.hidden_size, vit.hidden_size),
              ("patch_size", cfg.patch_size, vit.patch_size),
              ("mlp_dim", cfg.mlp_dim, vit.state["blocks.0.mlp.fc1.weight"].shape[0])]
    if vit.num_heads is not None:
        checks.append(("num_heads", cfg.num_heads, vit.num_heads))
    for field, want, got in checks:
        if want != got:
            raise ConfigError(f"the image ViT has {field}={got} but the ViViT config has {field}={want}; "
                              f"set {field}={got} (or pick the registry name of that backbone)")
    if cfg.kv_heads != cfg.num_heads:
        raise ConfigError(f"num_kv_heads={cfg.num_kv_heads}: initialise multi-head attention from the "
                          "ViT first, then convert to grouped-query attention")


def _encoder_from_vit(vit: ImageViT, dst: str, encoder_grid: tuple[int, int, int], cls_token: bool,
                      block_map: list[tuple[str, str]], depth: int) -> dict[str, Tensor]:
    """The ViT's CLS token, position embedding (resized in space, repeated over time), blocks
    (renamed by ``block_map``: (ViViT block part, canonical block part)) and final norm."""
    src, t, hw = vit.state, encoder_grid[0], encoder_grid[1:]
    out: dict[str, Tensor] = {}
    pos = src["pos_embed"]  # (1, [1+] h*w, D) on the ViT's grid
    if vit.has_cls_token and not cls_token:
        pos = pos[:, 1:]  # the video encoder has no CLS token: drop its row
    pos = resize_pos_embed(pos, (1, *vit.grid), (1, *hw))  # -> the model's (h, w)
    if cls_token and not vit.has_cls_token:
        pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)  # a zero row; the CLS is fresh
    if cls_token and vit.has_cls_token:
        out[f"{dst}.cls_token"] = src["cls_token"]
    out[f"{dst}.pos_embed"] = repeat_pos_embed_in_time(pos, hw, t)  # -> (1, [1+] t*h*w, D)
    for i in range(depth):
        for part, canonical in block_map:
            for p in ("weight", "bias"):
                out[f"{dst}.blocks.{i}.{part}.{p}"] = src[f"blocks.{i}.{canonical}.{p}"]
    out[f"{dst}.norm.weight"], out[f"{dst}.norm.bias"] = src["norm.weight"], src["norm.bias"]
    return out


# (ViViT block part, canonical ViT block part)
BLOCK_MAP = [("norm1", "norm1"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj"),
             ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
# Model 3: the spatial attention is the ViT's; the temporal attention and its norm are new.
FACTORISED_BLOCK_MAP = [("norm_space", "norm1"), ("attn_space.qkv", "attn.qkv"),
                        ("attn_space.proj", "attn.proj"), ("norm_mlp", "norm2"),
                        ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]


def vivit_from_image_vit(vit: ImageViT, cfg: ViViTConfig, *, kernel_init: str = "central_frame",
                         temporal_attention_init: str = "zero_proj") -> ViViT:
    """A ViViT for ``cfg`` initialised from an image ViT (paper 3.4; see the module docstring).

    The ViT's GELU and LayerNorm epsilon replace ``cfg``'s. Parts the ViT does not have (the
    head, Model 2's temporal encoder, Model 3's temporal attention) are freshly initialised.
    """
    if kernel_init not in KERNEL_INITS:
        raise ConfigError(f"kernel_init={kernel_init!r}; choose one of {', '.join(KERNEL_INITS)}")
    if temporal_attention_init not in TEMPORAL_ATTENTION_INITS:
        raise ConfigError(f"temporal_attention_init={temporal_attention_init!r}; choose one of "
                          f"{', '.join(TEMPORAL_ATTENTION_INITS)}")
    cfg = cfg.replace(gelu=vit.gelu, layer_norm_eps=vit.layer_norm_eps)
    _check_backbone(vit, cfg)
    model = ViViT(cfg)
    state = model.state_dict()
    token = cfg.classifier == "token"
    grids = pos_embed_grids(cfg)

    w2d = vit.state["patch_embed.proj.weight"]  # (D, C, p, p)
    if cfg.tokeniser == "tubelet":
        make = central_frame_kernel if kernel_init == "central_frame" else inflate_kernel
        state["tokeniser.proj.weight"] = make(w2d, cfg.tubelet_size)  # -> (D, C, t, p, p)
    else:
        state["tokeniser.proj.weight"] = w2d
    state["tokeniser.proj.bias"] = vit.state["patch_embed.proj.bias"]

    if cfg.kind in ("factorised_encoder", "average_pool"):
        state.update(_encoder_from_vit(vit, "spatial", grids["spatial.pos_embed"], token, BLOCK_MAP,
                                       cfg.num_layers))  # the temporal encoder keeps its fresh init
    elif cfg.kind == "factorised_self_attention":
        state.update(_encoder_from_vit(vit, "encoder", grids["encoder.pos_embed"], token,
                                       FACTORISED_BLOCK_MAP, cfg.num_layers))
        zeroed = ["attn_time.proj"] + (["attn_time.qkv"] if temporal_attention_init == "zero_all" else [])
        for i in range(cfg.num_layers):
            for part in zeroed:
                for p in ("weight", "bias"):
                    state[f"encoder.blocks.{i}.{part}.{p}"] = torch.zeros_like(state[f"encoder.blocks.{i}.{part}.{p}"])
    else:
        state.update(_encoder_from_vit(vit, "encoder", grids["encoder.pos_embed"], token, BLOCK_MAP,
                                       cfg.num_layers))
    return load_state(model, state, f"the image ViT ({vit.naming} naming)").eval()


__all__ = ["BLOCK_MAP", "FACTORISED_BLOCK_MAP", "ImageViT", "central_frame_kernel", "detect_vit_naming",
           "flax_vit_rules", "hf_vit_rules", "image_vit_from_state_dict", "inflate_kernel",
           "read_image_vit", "timm_rules", "unstack_scanned_blocks", "vivit_from_image_vit"]
