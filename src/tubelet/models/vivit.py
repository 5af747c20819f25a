"""ViViT: the paper's four models and its average-pool baseline in one class.

The variants differ only where the paper says they differ (section 3.3):

- Model 1 (``spatiotemporal``): one encoder over all t*h*w tokens.
- Model 2 (``factorised_encoder``): a spatial encoder shared by all frames, whose per-frame
  outputs (CLS or mean) form the sequence of a temporal encoder.
- ``average_pool``: Model 2's spatial encoder, then the mean over frames (Table 2's baseline).
- Model 3 (``factorised_self_attention``): blocks with spatial then temporal attention.
- Model 4 (``factorised_dot_product``): blocks whose heads are split between time and space.

Input clips are (B, C, T, H, W); pixels normalised as the reference does (x * 2 / 255 - 1).
The output is (B, sum(num_classes)) logits; :meth:`ViViT.split_logits` separates the heads
(e.g. EPIC-KITCHENS verb and noun), the layout of the reference's multi-head model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import Block, Encoder, FactorisedSelfAttentionBlock
from .config import ViViTConfig
from .info import ModelInfo
from .tokenisers import build_tokeniser


class ViViT(nn.Module):
    def __init__(self, cfg: ViViTConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.info = ModelInfo()  # classes, heads, preprocessing, provenance (saved in config.json)
        self.tokeniser = build_tokeniser(cfg)
        t, h, w = cfg.grid
        cls = cfg.classifier == "token"
        if cfg.kind in ("factorised_encoder", "average_pool"):
            self.spatial = Encoder(cfg, h * w, cfg.num_layers, cls_token=cls)
            self.temporal = (Encoder(cfg, t, cfg.temporal_layers, cls_token=cls, pos_std=cfg.time_embed or 0.02)
                             if cfg.kind == "factorised_encoder" else None)
        else:
            block = FactorisedSelfAttentionBlock if cfg.kind == "factorised_self_attention" else Block
            self.encoder = Encoder(cfg, t * h * w, cfg.num_layers, cls_token=cls, block=block,
                                   time_steps=t if cfg.time_embed else 0)
        d = cfg.hidden_size
        if cfg.representation_size:
            self.pre_logits = nn.Sequential(nn.Linear(d, cfg.representation_size), nn.Tanh())
            d = cfg.representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head = nn.Linear(d, cfg.total_classes)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.apply(_init_weights)
        nn.init.zeros_(self.head.weight)  # the reference zero-initialises the output projection
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ forward
    def check_input(self, x: Tensor) -> None:
        cfg = self.config
        expect = (cfg.in_channels, cfg.num_frames, *cfg.image_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != expect:
            raise ValueError(
                f"expected clips of shape (B, C, T, H, W) = (B, {', '.join(map(str, expect))}), got "
                f"{tuple(x.shape)}; the config's num_frames/image_size set the input (tubelet.load_model "
                "resizes position embeddings when a checkpoint was trained at another size)")

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> the last encoder's normalised output tokens.

        Models 1, 3, 4: (B, [1 +] t*h*w, D), frame-major after the CLS token if there is one;
        Model 2: the temporal encoder's (B, [1 +] t, D); the average-pool baseline: one pooled
        token per frame, (B, t, D).
        """
        self.check_input(x)
        tokens = self.tokeniser(x)  # (B, t, h*w, D)
        B, t, s, d = tokens.shape
        kind = self.config.kind
        if kind in ("factorised_encoder", "average_pool"):
            frames = self.spatial(tokens.flatten(0, 1), group=t)  # (B*t, s[+1], D)
            frames = self.spatial.pool(frames).unflatten(0, (B, t))  # (B, t, D)
            return frames if self.temporal is None else self.temporal(frames)
        grid = None if kind == "spatiotemporal" else (t, s)
        return self.encoder(tokens.flatten(1, 2), grid)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, D) pooled representation, before pre_logits and the head."""
        out = self.encode(x)
        if self.config.kind == "average_pool":
            return out.mean(dim=1)
        return (self.temporal if self.config.kind == "factorised_encoder" else self.encoder).pool(out)

    def time_tokens(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, 1 + t, D): the pooled representation, then one token per
        token frame in order (the mean over its spatial tokens; Model 2's temporal tokens), the
        short ordered summary a caption decoder reads."""
        out = self.encode(x)
        kind = self.config.kind
        if kind == "average_pool":
            return torch.cat([out.mean(dim=1, keepdim=True), out], dim=1)
        encoder = self.temporal if kind == "factorised_encoder" else self.encoder
        body = out[:, 1:] if encoder.cls_token is not None else out
        if kind != "factorised_encoder":  # (B, t*h*w, D) -> (B, t, D)
            body = body.unflatten(1, (self.config.grid[0], -1)).mean(dim=2)
        return torch.cat([encoder.pool(out)[:, None], body], dim=1)
    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(self.head_drop(self.pre_logits(features)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, sum(num_classes)) logits."""
        return self.forward_head(self.forward_features(x))

    def split_logits(self, logits: Tensor) -> tuple[Tensor, ...]:
        """Concatenated logits -> one tensor per head, in the order of ``num_classes``."""
        return logits.split(list(self.config.class_splits), dim=-1)

    def reset_head(self, num_classes: int | tuple[int, ...]) -> None:
        """A fresh zero-initialised head for fine-tuning on other classes (the class names are
        forgotten: set ``model.info.class_names`` to the new ones)."""
        heads = len(self.config.class_splits)
        self.config = self.config.replace(num_classes=num_classes)
        self.info.class_names = None
        if len(self.config.class_splits) != heads:
            self.info.head_names = None
        d = self.head.in_features
        self.head = nn.Linear(d, self.config.total_classes).to(self.head.weight)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> "ViViT":
        """Recompute each transformer block in the backward pass instead of storing its
        activations (every encoder: Model 2's spatial and temporal ones alike). Trades about one
        more forward of compute for memory; outputs and gradients are unchanged."""
        for encoder in self.encoders:
            encoder.grad_checkpointing = enable
        return self

    @property
    def encoders(self) -> list[Encoder]:
        return [m for m in self.modules() if isinstance(m, Encoder)]


def _init_weights(m: nn.Module) -> None:
    """The reference's initialisers: Xavier-uniform kernels, zero biases, LayerNorm 1 / 0."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
        # Flax's default (LeCun normal) for the embedding convolution.
        fan_in = m.weight[0].numel()
        nn.init.trunc_normal_(m.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ViViT", "count_parameters"]
