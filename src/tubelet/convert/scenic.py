"""Weights of the reference ViViT (google-research/scenic, Flax) -> tubelet.

The map is written out rule by rule: each tubelet tensor names the Flax parameter(s) it comes
from and the layout change, so every mapping can be checked by eye. Flax layouts: Dense
kernels are (in, out); attention q/k/v kernels (D, heads, head_dim), their biases (heads,
head_dim); the attention ``out`` kernel (heads, head_dim, D); the tubelet kernel
(t, h, w, C_in, D); the 2D patch kernel (h, w, C_in, D).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..models.config import ViViTConfig
from ..models.vivit import ViViT
from .msgpack_io import params_of, read_msgpack
from ..models.posembed import fit_pos_embeds

Array = np.ndarray
# tubelet name -> (Flax paths, function of those arrays giving the torch tensor)
Rule = tuple[str, tuple[str, ...], Callable[..., Array]]


def _dense(w: Array) -> Array:  # (in, out) -> (out, in)
    return w.T


def _same(w: Array) -> Array:
    return w


def _qkv_kernel(q: Array, k: Array, v: Array) -> Array:  # 3 x (D, heads, d) -> ((H+2G)*d, D)
    return np.concatenate([w.reshape(w.shape[0], -1).T for w in (q, k, v)], axis=0)


def _qkv_bias(q: Array, k: Array, v: Array) -> Array:  # 3 x (heads, d) -> ((H+2G)*d,)
    return np.concatenate([b.reshape(-1) for b in (q, k, v)])


def _out_kernel(w: Array) -> Array:  # (heads, d, D) -> (D, heads*d)
    return w.reshape(-1, w.shape[-1]).T


def _conv3d(w: Array) -> Array:  # (t, h, w, C_in, D) -> (D, C_in, t, h, w)
    return w.transpose(4, 3, 0, 1, 2)


def _conv2d(w: Array) -> Array:  # (h, w, C_in, D) -> (D, C_in, h, w)
    return w.transpose(3, 2, 0, 1)


def _cls(w: Array) -> Array:  # (1, 1, D)
    return w


def _layer_norm(dst: str, src: str) -> list[Rule]:
    return [(f"{dst}.weight", (f"{src}/scale",), _same), (f"{dst}.bias", (f"{src}/bias",), _same)]


def _linear(dst: str, src: str) -> list[Rule]:
    return [(f"{dst}.weight", (f"{src}/kernel",), _dense), (f"{dst}.bias", (f"{src}/bias",), _same)]


def _attention(dst: str, src: str) -> list[Rule]:
    qkv = tuple(f"{src}/{n}/kernel" for n in ("query", "key", "value"))
    qkv_b = tuple(f"{src}/{n}/bias" for n in ("query", "key", "value"))
    return [
        (f"{dst}.qkv.weight", qkv, _qkv_kernel),
        (f"{dst}.qkv.bias", qkv_b, _qkv_bias),
        (f"{dst}.proj.weight", (f"{src}/out/kernel",), _out_kernel),
        (f"{dst}.proj.bias", (f"{src}/out/bias",), _same),
    ]


def _mlp(dst: str, src: str) -> list[Rule]:
    return _linear(f"{dst}.fc1", f"{src}/Dense_0") + _linear(f"{dst}.fc2", f"{src}/Dense_1")


def _block(dst: str, src: str) -> list[Rule]:
    """Models 1, 2, 4: EncoderBlock."""
    return (_layer_norm(f"{dst}.norm1", f"{src}/LayerNorm_0")
            + _attention(f"{dst}.attn", f"{src}/MultiHeadDotProductAttention_0")
            + _layer_norm(f"{dst}.norm2", f"{src}/LayerNorm_1")
            + _mlp(f"{dst}.mlp", f"{src}/MlpBlock_0"))


def _factorised_block(dst: str, src: str) -> list[Rule]:
    """Model 3: EncoderFactorizedSelfAttentionBlock."""
    rules: list[Rule] = []
    for axis in ("space", "time"):
        rules += _layer_norm(f"{dst}.norm_{axis}", f"{src}/LayerNorm_{axis}")
        rules += _attention(f"{dst}.attn_{axis}", f"{src}/MultiHeadDotProductAttention_{axis}")
    return rules + _layer_norm(f"{dst}.norm_mlp", f"{src}/LayerNorm_mlp") + _mlp(f"{dst}.mlp", f"{src}/MlpBlock")


def _encoder(dst: str, src: str, depth: int, block: Callable[[str, str], list[Rule]],
             cls_src: str | None) -> list[Rule]:
    rules: list[Rule] = [(f"{dst}.pos_embed", (f"{src}/posembed_input/pos_embedding",), _same)]
    if cls_src is not None:
        rules.append((f"{dst}.cls_token", (cls_src,), _cls))
    for i in range(depth):
        rules += block(f"{dst}.blocks.{i}", f"{src}/encoderblock_{i}")
    return rules + _layer_norm(f"{dst}.norm", f"{src}/encoder_norm")


def scenic_rules(cfg: ViViTConfig) -> list[Rule]:
    """The complete name map for ``cfg``: (tubelet name, Flax paths, layout change)."""
    token = cfg.classifier == "token"
    conv = _conv3d if cfg.tokeniser == "tubelet" else _conv2d
    rules: list[Rule] = [("tokeniser.proj.weight", ("embedding/kernel",), conv),
                         ("tokeniser.proj.bias", ("embedding/bias",), _same)]
    if cfg.kind in ("factorised_encoder", "average_pool"):
        rules += _encoder("spatial", "SpatialTransformer", cfg.num_layers, _block,
                          "cls_SpatialTransformer" if token else None)
        if cfg.kind == "factorised_encoder":
            rules += _encoder("temporal", "TemporalTransformer", cfg.temporal_layers, _block,
                              "cls_TemporalTransformer" if token else None)
    else:
        block = _factorised_block if cfg.kind == "factorised_self_attention" else _block
        rules += _encoder("encoder", "Transformer", cfg.num_layers, block, "cls" if token else None)
    if cfg.representation_size:
        rules += _linear("pre_logits.0", "pre_logits")
    return rules + _linear("head", "output_projection")


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, Array]:
    """Nested Flax parameter dict -> {'a/b/c': array}."""
    flat: dict[str, Array] = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten_tree(v, path))
        else:
            flat[path] = np.asarray(v)
    return flat


def convert_scenic_params(params: Mapping, cfg: ViViTConfig) -> dict[str, torch.Tensor]:
    """Flax parameters (nested, or flat with '/' paths) -> tubelet state dict for ``cfg``.

    Raises ``KeyError`` naming the missing Flax parameter; unused Flax parameters are an error
    too, since they mean the config does not describe the checkpoint.
    """
    flat = flatten_tree(params) if any(isinstance(v, Mapping) for v in params.values()) else dict(params)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, sources, fn in scenic_rules(cfg):
        missing = [s for s in sources if s not in flat]
        if missing:
            raise KeyError(f"reference parameter {missing[0]!r} (for {name}) is not in the checkpoint; "
                           f"does the config (kind={cfg.kind}, classifier={cfg.classifier}, "
                           f"num_layers={cfg.num_layers}) match it?")
        used.update(sources)
        state[name] = torch.from_numpy(np.ascontiguousarray(fn(*(flat[s] for s in sources)), dtype=np.float32))
    unused = sorted(set(flat) - used)
    if unused:
        raise KeyError(f"{len(unused)} reference parameter(s) not described by the config, e.g. "
                       f"{unused[0]!r}; check kind, classifier, num_layers and temporal_layers")
    return state


def read_scenic_params(path: str | Path) -> dict[str, Array]:
    """The reference parameters of a file, flat with '/' paths.

    - ``.npz``: arrays named by Flax path, with or without a ``params/`` prefix (other arrays,
      such as the fixtures' ``x`` and ``logits``, are ignored when a prefix is present);
    - any other file is read as Flax msgpack (``.msgpack``; the released checkpoints are named
      ``checkpoint_<step>``): the tree under ``['optimizer']['target']`` (or ``['params']``, or
      the top level).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is a folder; expected a Flax .msgpack checkpoint or an .npz"
                                if path.is_dir() else f"{path} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        prefixed = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
        return prefixed or arrays
    # anything else is read as msgpack: released checkpoints are named checkpoint_<step>
    return flatten_tree(params_of(read_msgpack(path), str(path)))


def load_scenic(source: str | Path | Mapping[str, Any], cfg: ViViTConfig,
                trained: ViViTConfig | None = None) -> ViViT:
    """A :class:`ViViT` for ``cfg`` with the reference weights of ``source`` (a file, see
    :func:`read_scenic_params`, or a parameter mapping).

    Position embeddings trained on another grid are resized to ``cfg``'s: from the grid of
    ``trained`` (the config the checkpoint was trained with) when given, else from a grid
    inferred from their length (:func:`~tubelet.convert.posembed.infer_grid`). Any other
    mismatch is a :class:`ConfigError` naming the tensor, both shapes and the config field.
    """
    from ..checkpoint import adapt_pos_embeds, load_state  # checkpoint imports convert

    name = str(source) if isinstance(source, (str, Path)) else "the reference parameters"
    params = read_scenic_params(source) if isinstance(source, (str, Path)) else source
    state = convert_scenic_params(params, trained or cfg)
    state = adapt_pos_embeds(state, trained, cfg) if trained else fit_pos_embeds(state, cfg)
    return load_state(ViViT(cfg), state, name).eval()


_SCENIC_KINDS = {
    "spacetime": "spatiotemporal",
    "factorized_encoder": "factorised_encoder",
    "factorized_self_attention_block": "factorised_self_attention",
    "factorized_dot_product_attention": "factorised_dot_product",
}
_SCENIC_TOKENISERS = {"3d_conv": "tubelet", "temporal_sampling": "frame_sampling"}


def config_from_scenic(d: Mapping) -> ViViTConfig:
    """A reference model description (the fixtures' ``.json``: type, classifier, tokeniser,
    patch_hwt, hidden, num_heads, mlp_dim, num_layers, num_classes, input_bthwc, ...) -> config."""
    _, t, h, w, c = d["input_bthwc"]
    patch = d["patch_hwt"]
    if patch[0] != patch[1]:
        raise ValueError(f"non-square patches {patch[:2]} are not supported")
    kind = _SCENIC_KINDS[d["type"]]
    if kind == "factorised_encoder" and d.get("spatial_only_baseline"):
        kind = "average_pool"
    return ViViTConfig(
        kind=kind, classifier=d["classifier"], tokeniser=_SCENIC_TOKENISERS[d["tokeniser"]],
        num_frames=t, image_size=(h, w), in_channels=c, patch_size=patch[0],
        tubelet_size=patch[2] if len(patch) > 2 else 1, sampled_frames=d.get("n_sampled_frames"),
        hidden_size=d["hidden"], num_heads=d["num_heads"], mlp_dim=d["mlp_dim"],
        num_layers=d["num_layers"], temporal_layers=d.get("temporal_layers", 4),
        attention_order=d.get("attention_order", "time_space"), num_classes=d["num_classes"],
        representation_size=d.get("representation_size"))
