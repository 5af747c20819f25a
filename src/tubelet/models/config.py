"""One configuration dataclass for every ViViT variant.

The field names follow the paper (tubelet, spatial / temporal, factorised encoder); the
defaults are ViViT-B/16x2 Model 1 at 32 frames, 224x224 pixels and 400 classes, the
configuration of the paper's Table 2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

# The paper's four models and the average-pool baseline of its Table 2.
MODEL_KINDS = {
    "spatiotemporal": "Model 1: joint spatio-temporal attention over all tokens",
    "factorised_encoder": "Model 2: spatial encoder per frame, then a temporal encoder",
    "factorised_self_attention": "Model 3: spatial then temporal self-attention in every block",
    "factorised_dot_product": "Model 4: half of the heads attend over time, half over space",
    "average_pool": "Table 2 baseline: Model 2's spatial encoder, then the mean over frames",
}
TOKENISERS = ("tubelet", "frame_sampling")
CLASSIFIERS = ("token", "gap")
ATTENTION_ORDERS = ("space_time", "time_space")
GELU_KINDS = ("tanh", "exact")


@dataclass
class ViViTConfig:
    """Every ViViT variant: the model kind, the tokeniser, the backbone and regularisation.

    Input clips are (B, C, T, H, W) with T = ``num_frames`` and (H, W) = ``image_size``.
    """

    kind: str = "spatiotemporal"
    # Input and tokeniser (paper 3.2).
    num_frames: int = 32
    image_size: tuple[int, int] = (224, 224)
    in_channels: int = 3
    tokeniser: str = "tubelet"
    patch_size: int = 16
    tubelet_size: int = 2  # frames per tubelet (tokeniser="tubelet")
    sampled_frames: int | None = None  # frames taken (tokeniser="frame_sampling"); default num_frames
    # Backbone (ViT-B by default).
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int | None = None  # None: multi-head; 1: multi-query; else grouped-query
    mlp_dim: int = 3072
    qkv_bias: bool = True
    temporal_layers: int = 4  # Model 2: depth of the temporal encoder
    attention_order: str = "space_time"  # Model 3; the reference's default is "time_space"
    # Position in time. None (the reference): only the learned position table, N(0, 0.02), which
    # Models 1, 3 and 4 learn jointly over all t*h*w tokens. A std s: those three also add a learned
    # table over the t token frames, shared by every spatial position and drawn from N(0, s^2),
    # and Model 2's temporal encoder draws its table from N(0, s^2) too. The average-pool baseline
    # has no position in time either way.
    time_embed: float | None = None
    # Head.
    classifier: str = "token"
    num_classes: int | tuple[int, ...] = 400  # a tuple gives several heads, e.g. (97, 300)
    representation_size: int | None = None  # reference "pre_logits": Dense + tanh before the head
    # Regularisation and numerics.
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth at the last layer, linear in depth from 0
    drop_path_scale: bool = False  # divide kept branches by 1-p (the reference does not)
    gelu: str = "tanh"  # the reference weights use the tanh approximation
    layer_norm_eps: float = 1e-6
    name: str | None = field(default=None, compare=False)  # registry name it was built from

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        self.image_size = tuple(int(s) for s in self.image_size)
        if isinstance(self.num_classes, (list, tuple)):
            self.num_classes = tuple(int(c) for c in self.num_classes)
        self.validate()

    # ----------------------------------------------------------------- derived sizes
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def frames_in(self) -> int:
        """Frames that reach the tokeniser (frame sampling keeps ``sampled_frames``)."""
        if self.tokeniser == "frame_sampling":
            return self.sampled_frames or self.num_frames
        return self.num_frames

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (t, h, w) after tokenisation."""
        t = self.frames_in // (self.tubelet_size if self.tokeniser == "tubelet" else 1)
        return t, self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def class_splits(self) -> tuple[int, ...]:
        """Sizes of the heads, in the order of the concatenated logits."""
        return self.num_classes if isinstance(self.num_classes, tuple) else (self.num_classes,)

    @property
    def total_classes(self) -> int:
        return sum(self.class_splits)

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field and what to do."""

        def fail(msg: str) -> None:
            where = f" (model {self.name})" if self.name else ""
            raise ConfigError(msg + where)

        if self.kind not in MODEL_KINDS:
            fail(f"unknown kind {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        if self.tokeniser not in TOKENISERS:
            fail(f"unknown tokeniser {self.tokeniser!r}; choose one of {', '.join(TOKENISERS)}")
        if self.classifier not in CLASSIFIERS:
            fail(f"unknown classifier {self.classifier!r}; choose 'token' or 'gap'")
        if self.attention_order not in ATTENTION_ORDERS:
            fail(f"unknown attention_order {self.attention_order!r}; choose one of {ATTENTION_ORDERS}")
        if self.gelu not in GELU_KINDS:
            fail(f"unknown gelu {self.gelu!r}; choose 'tanh' (reference) or 'exact'")
        for name in ("num_frames", "patch_size", "tubelet_size", "hidden_size", "num_layers",
                     "num_heads", "mlp_dim", "in_channels"):
            if getattr(self, name) < 1:
                fail(f"{name}={getattr(self, name)} must be at least 1")
        if min(self.class_splits) < 1:
            fail(f"num_classes={self.num_classes} must be positive")
        for name in ("dropout", "attention_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.kind in ("factorised_self_attention", "factorised_dot_product") and self.classifier == "token":
            fail(f"kind={self.kind} has no CLS token (the paper's Models 3 and 4 keep the token "
                 "grid intact); use classifier='gap'")
        if self.hidden_size % self.num_heads:
            fail(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.num_kv_heads is not None:
            if not 1 <= self.num_kv_heads <= self.num_heads or self.num_heads % self.num_kv_heads:
                fail(f"num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}; "
                     f"choose a divisor of {self.num_heads}")
        if self.kind == "factorised_dot_product":
            if self.num_heads % 2:
                fail(f"kind=factorised_dot_product splits the heads in half (time / space): "
                     f"num_heads={self.num_heads} must be even")
            if self.kv_heads not in (1, self.num_heads) and self.kv_heads % 2:
                fail(f"kind=factorised_dot_product needs an even num_kv_heads (or 1) so that "
                     f"no key/value group spans the time and space heads; got {self.kv_heads}")
        if self.time_embed is not None and not self.time_embed > 0:
            fail(f"time_embed={self.time_embed} must be a positive standard deviation, or None for "
                 "the reference's position embedding")
        if self.kind == "factorised_encoder" and self.temporal_layers < 1:
            fail("kind=factorised_encoder needs temporal_layers >= 1; for no temporal encoder "
                 "use kind='average_pool'")
        h, w = self.image_size
        if h % self.patch_size or w % self.patch_size:
            fail(f"image size {h}x{w} is not divisible by patch_size={self.patch_size}; "
                 f"use a size that is a multiple of {self.patch_size} (e.g. "
                 f"{_round_to(h, self.patch_size)}x{_round_to(w, self.patch_size)})")
        if self.tokeniser == "tubelet" and self.num_frames % self.tubelet_size:
            fail(f"num_frames={self.num_frames} is not divisible by tubelet_size={self.tubelet_size}; "
                 f"use a multiple of {self.tubelet_size} (e.g. {_round_to(self.num_frames, self.tubelet_size)})")
        if self.tokeniser == "frame_sampling" and self.sampled_frames is not None:
            if not 1 <= self.sampled_frames <= self.num_frames:
                fail(f"sampled_frames={self.sampled_frames} must be between 1 and num_frames={self.num_frames}")

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        if isinstance(self.num_classes, tuple):
            d["num_classes"] = list(self.num_classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ViViTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> "ViViTConfig":
        return dataclasses.replace(self, **changes)


def _round_to(x: int, m: int) -> int:
    return max(m, round(x / m) * m)
