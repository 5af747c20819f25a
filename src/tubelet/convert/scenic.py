"""Weights of the reference ViViT (google-research/scenic, Flax) -> tubelet.

The map is written out rule by rule (:mod:`tubelet.convert.rules`): each tubelet tensor names
the Flax parameter(s) it comes from and the layout change, so every mapping can be checked by
eye. The attention kernels (D, heads, head_dim) show the head count, which is checked against
the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..checkpoint import MissingCheckpointError, adapt_pos_embeds, check_head_layout, load_state
from ..errors import CheckpointError
from ..models.config import ConfigError, ViViTConfig
from ..models.posembed import fit_pos_embeds
from ..models.vivit import ViViT
from .msgpack_io import params_of, read_msgpack
from .rules import (Rule, apply_rules, flax_attention, flax_block, flax_conv2d, flax_conv3d, flax_dense,
                    flax_layer_norm, same)

Array = np.ndarray


def _factorised_block(dst: str, src: str) -> list[Rule]:
    """Model 3: EncoderFactorizedSelfAttentionBlock."""
    rules: list[Rule] = []
    for axis in ("space", "time"):
        rules += flax_layer_norm(f"{dst}.norm_{axis}", f"{src}/LayerNorm_{axis}")
        rules += flax_attention(f"{dst}.attn_{axis}", f"{src}/MultiHeadDotProductAttention_{axis}")
    return (rules + flax_layer_norm(f"{dst}.norm_mlp", f"{src}/LayerNorm_mlp")
            + flax_dense(f"{dst}.mlp.fc1", f"{src}/MlpBlock/Dense_0")
            + flax_dense(f"{dst}.mlp.fc2", f"{src}/MlpBlock/Dense_1"))


def _encoder(dst: str, src: str, depth: int, block: Callable[[str, str], list[Rule]],
             cls_src: str | None) -> list[Rule]:
    rules: list[Rule] = [Rule(f"{dst}.pos_embed", (f"{src}/posembed_input/pos_embedding",), same)]
    if cls_src is not None:
        rules.append(Rule(f"{dst}.cls_token", (cls_src,), same))  # (1, 1, D)
    for i in range(depth):
        rules += block(f"{dst}.blocks.{i}", f"{src}/encoderblock_{i}")
    return rules + flax_layer_norm(f"{dst}.norm", f"{src}/encoder_norm")


def scenic_rules(cfg: ViViTConfig) -> list[Rule]:
    """The complete name map for ``cfg``: (tubelet name, Flax paths, layout change)."""
    token = cfg.classifier == "token"
    conv = flax_conv3d if cfg.tokeniser == "tubelet" else flax_conv2d
    rules: list[Rule] = [Rule("tokeniser.proj.weight", ("embedding/kernel",), conv),
                         Rule("tokeniser.proj.bias", ("embedding/bias",), same)]
    if cfg.kind in ("factorised_encoder", "average_pool"):
        rules += _encoder("spatial", "SpatialTransformer", cfg.num_layers, flax_block,
                          "cls_SpatialTransformer" if token else None)
        if cfg.kind == "factorised_encoder":
            rules += _encoder("temporal", "TemporalTransformer", cfg.temporal_layers, flax_block,
                              "cls_TemporalTransformer" if token else None)
    else:
        block = _factorised_block if cfg.kind == "factorised_self_attention" else flax_block
        rules += _encoder("encoder", "Transformer", cfg.num_layers, block, "cls" if token else None)
    if cfg.representation_size:
        rules += flax_dense("pre_logits.0", "pre_logits")
    return rules + flax_dense("head", "output_projection")


def flax_head_layout(flat: Mapping[str, Array]) -> dict[str, int]:
    """{num_heads, num_kv_heads, head_dim} read off the first Flax attention's q / k kernels
    (D, heads, head_dim); {} when there are none."""
    for path in sorted(flat):
        if path.endswith("/query/kernel") and np.ndim(flat[path]) == 3:
            key = flat.get(path[:-len("query/kernel")] + "key/kernel")
            _, heads, head_dim = np.shape(flat[path])
            kv = np.shape(key)[1] if key is not None and np.ndim(key) == 3 else heads
            return {"num_heads": int(heads), "num_kv_heads": int(kv), "head_dim": int(head_dim)}
    return {}


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


def _flat(params: Mapping) -> dict[str, Array]:
    return flatten_tree(params) if any(isinstance(v, Mapping) for v in params.values()) else dict(params)


def convert_scenic_params(params: Mapping, cfg: ViViTConfig, source: str = "the reference checkpoint"
                          ) -> dict[str, torch.Tensor]:
    """Flax parameters (nested, or flat with '/' paths) -> tubelet state dict for ``cfg``.

    Raises :class:`ConfigError` naming a missing Flax parameter, an unused one (the config does
    not describe the checkpoint) or a head count the kernels contradict.
    """
    flat = _flat(params)
    hint = (f"; does the config (kind={cfg.kind}, classifier={cfg.classifier}, num_layers={cfg.num_layers}"
            + (f", temporal_layers={cfg.temporal_layers}" if cfg.kind == "factorised_encoder" else "")
            + ") match the checkpoint?")
    state = apply_rules(scenic_rules(cfg), flat, source, hint=hint)
    check_head_layout(flax_head_layout(flat), cfg, source)
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
        raise MissingCheckpointError(f"{path} is a folder; expected a Flax .msgpack checkpoint or an .npz"
                                     if path.is_dir() else f"{path} does not exist")
    if path.suffix == ".npz":
        arrays = read_npz(path)
        prefixed = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
        return prefixed or arrays
    # anything else is read as msgpack: released checkpoints are named checkpoint_<step>
    return flatten_tree(params_of(read_msgpack(path), str(path)))


def read_npz(path: Path) -> dict[str, Array]:
    """The arrays of an ``.npz`` file; a damaged one is a :class:`CheckpointError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / numpy raise several types for a damaged archive
        raise CheckpointError(f"cannot read {path} as an .npz archive ({type(e).__name__}: {e}); the file is "
                              "truncated or damaged: copy it again") from None


def load_scenic(source: str | Path | Mapping[str, Any], cfg: ViViTConfig,
                trained: ViViTConfig | None = None) -> ViViT:
    """A :class:`ViViT` for ``cfg`` with the reference weights of ``source`` (a file, see
    :func:`read_scenic_params`, or a parameter mapping).

    Position embeddings trained on another grid are resized to ``cfg``'s: from the grid of
    ``trained`` (the config the checkpoint was trained with) when given, else from a grid
    inferred from their length (:func:`~tubelet.convert.posembed.infer_grid`). Any other
    mismatch is a :class:`ConfigError` naming the tensor, both shapes and the config field.
    """
    name = str(source) if isinstance(source, (str, Path)) else "the reference parameters"
    params = read_scenic_params(source) if isinstance(source, (str, Path)) else source
    flat = _flat(params)
    state = convert_scenic_params(flat, trained or cfg, name)
    check_head_layout(flax_head_layout(flat), cfg, name)  # the model built has the kernels' heads
    state = adapt_pos_embeds(state, trained, cfg, name) if trained else fit_pos_embeds(state, cfg)
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
        raise ConfigError(f"non-square patches {patch[:2]} are not supported")
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
