"""The one weight-name map machinery of every conversion (reference Flax, transformers, image ViT).

A conversion is a list of :class:`Rule`: the tubelet tensor, the source tensor(s) it is made
of, and the layout change each way. :func:`apply_rules` runs a list on a source state dict,
refusing a source that lacks a tensor the map names or holds one it has no place for;
:func:`export_rules` runs it backwards. The layout changes are pure functions, named for
what they do, so every mapping can be checked by eye.

Flax layouts: Dense kernels are (in, out); attention q/k/v kernels (D, heads, head_dim), their
biases (heads, head_dim); the attention ``out`` kernel (heads, head_dim, D); the tubelet kernel
(t, h, w, C_in, D); the 2D patch kernel (h, w, C_in, D). torch Linear weights are (out, in).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

Array = np.ndarray


class Rule(NamedTuple):
    """tubelet tensor ``name`` <- ``to_tubelet(*source tensors)``; ``from_tubelet`` splits it back."""

    name: str
    sources: tuple[str, ...]
    to_tubelet: Callable[..., Any]
    from_tubelet: Callable[[Tensor], tuple[Tensor, ...]] | None = None


# ---------------------------------------------------------------------------- layout changes
def same(w: Any) -> Any:
    return w


def one(w: Tensor) -> tuple[Tensor, ...]:
    return (w,)


def dense(w: Array) -> Array:  # Flax (in, out) -> torch (out, in)
    return w.T


def cat_rows(*ws: Tensor) -> Tensor:  # separate q, k, v (weights or biases) -> fused qkv rows
    return torch.cat(ws, dim=0)


def split_qkv(qkv: Tensor) -> tuple[Tensor, ...]:  # (3D, D) -> 3 x (D, D); also biases
    return tuple(qkv.chunk(3, dim=0))


def flax_qkv_kernel(q: Array, k: Array, v: Array) -> Array:  # 3 x (D, heads, d) -> ((H+2G)*d, D)
    return np.concatenate([w.reshape(w.shape[0], -1).T for w in (q, k, v)], axis=0)


def flax_qkv_bias(q: Array, k: Array, v: Array) -> Array:  # 3 x (heads, d) -> ((H+2G)*d,)
    return np.concatenate([b.reshape(-1) for b in (q, k, v)])


def flax_out_kernel(w: Array) -> Array:  # (heads, d, D) -> (D, heads*d)
    return w.reshape(-1, w.shape[-1]).T


def flax_conv3d(w: Array) -> Array:  # (t, h, w, C_in, D) -> (D, C_in, t, h, w)
    return w.transpose(4, 3, 0, 1, 2)


def flax_conv2d(w: Array) -> Array:  # (h, w, C_in, D) -> (D, C_in, h, w)
    return w.transpose(3, 2, 0, 1)


# ---------------------------------------------------------------------------- rule builders
def torch_pair(dst: str, src: str) -> list[Rule]:
    """A torch module's weight and bias under another name."""
    return [Rule(f"{dst}.weight", (f"{src}.weight",), same, one),
            Rule(f"{dst}.bias", (f"{src}.bias",), same, one)]


def torch_qkv(dst: str, q: str, k: str, v: str) -> list[Rule]:
    """Separate q / k / v Linears -> one fused ``qkv`` Linear (rows q, then k, then v)."""
    return [Rule(f"{dst}.weight", (f"{q}.weight", f"{k}.weight", f"{v}.weight"), cat_rows, split_qkv),
            Rule(f"{dst}.bias", (f"{q}.bias", f"{k}.bias", f"{v}.bias"), cat_rows, split_qkv)]


def flax_layer_norm(dst: str, src: str) -> list[Rule]:
    return [Rule(f"{dst}.weight", (f"{src}/scale",), same), Rule(f"{dst}.bias", (f"{src}/bias",), same)]


def flax_dense(dst: str, src: str) -> list[Rule]:
    return [Rule(f"{dst}.weight", (f"{src}/kernel",), dense), Rule(f"{dst}.bias", (f"{src}/bias",), same)]


def flax_attention(dst: str, src: str) -> list[Rule]:
    """Flax ``MultiHeadDotProductAttention`` -> tubelet ``Attention`` (fused qkv, proj)."""
    return [
        Rule(f"{dst}.qkv.weight", tuple(f"{src}/{n}/kernel" for n in ("query", "key", "value")), flax_qkv_kernel),
        Rule(f"{dst}.qkv.bias", tuple(f"{src}/{n}/bias" for n in ("query", "key", "value")), flax_qkv_bias),
        Rule(f"{dst}.proj.weight", (f"{src}/out/kernel",), flax_out_kernel),
        Rule(f"{dst}.proj.bias", (f"{src}/out/bias",), same),
    ]


# Flax encoder block module names: (attention, first LayerNorm, second LayerNorm, MLP) of
# big_vision / scenic (the reference ViViT) and of the original ViT release.
FLAX_BLOCKS = {"big_vision": ("MultiHeadDotProductAttention_0", "LayerNorm_0", "LayerNorm_1", "MlpBlock_0"),
               "vit": ("MultiHeadDotProductAttention_1", "LayerNorm_0", "LayerNorm_2", "MlpBlock_3")}


def flax_block(dst: str, src: str, names: str = "big_vision") -> list[Rule]:
    """A Flax pre-LN ``EncoderBlock`` -> tubelet ``Block`` (norm1, attn, norm2, mlp)."""
    attn, ln1, ln2, mlp = FLAX_BLOCKS[names]
    return (flax_layer_norm(f"{dst}.norm1", f"{src}/{ln1}") + flax_attention(f"{dst}.attn", f"{src}/{attn}")
            + flax_layer_norm(f"{dst}.norm2", f"{src}/{ln2}")
            + flax_dense(f"{dst}.mlp.fc1", f"{src}/{mlp}/Dense_0") + flax_dense(f"{dst}.mlp.fc2", f"{src}/{mlp}/Dense_1"))


# transformers' ViT-family layer (ViT, ViViT) in its two namings: ``save_pretrained`` writes the
# released one (``encoder.layer.{i}.attention.attention.query``), transformers 5's module tree
# says ``layers.{i}.attention.q_proj``.
TRANSFORMERS_NAMINGS = ("released", "module")


def transformers_layer(dst: str, root: str, i: int, naming: str = "released") -> list[Rule]:
    """Layer ``i`` of a transformers ViT / Vivit encoder under ``root`` (``""``, ``"vivit."``)
    -> tubelet ``Block`` ``dst`` (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""
    if naming == "released":
        src = f"{root}encoder.layer.{i}"
        a = f"{src}.attention.attention"
        return (torch_pair(f"{dst}.norm1", f"{src}.layernorm_before")
                + torch_qkv(f"{dst}.attn.qkv", f"{a}.query", f"{a}.key", f"{a}.value")
                + torch_pair(f"{dst}.attn.proj", f"{src}.attention.output.dense")
                + torch_pair(f"{dst}.norm2", f"{src}.layernorm_after")
                + torch_pair(f"{dst}.mlp.fc1", f"{src}.intermediate.dense")
                + torch_pair(f"{dst}.mlp.fc2", f"{src}.output.dense"))
    if naming == "module":
        src = f"{root}layers.{i}"
        a = f"{src}.attention"
        return (torch_pair(f"{dst}.norm1", f"{src}.layernorm_before")
                + torch_qkv(f"{dst}.attn.qkv", f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj")
                + torch_pair(f"{dst}.attn.proj", f"{a}.o_proj")
                + torch_pair(f"{dst}.norm2", f"{src}.layernorm_after")
                + torch_pair(f"{dst}.mlp.fc1", f"{src}.mlp.fc1")
                + torch_pair(f"{dst}.mlp.fc2", f"{src}.mlp.fc2"))
    raise ValueError(f"naming={naming!r}; choose one of {TRANSFORMERS_NAMINGS}")


def transformers_naming(keys: Iterable[str], root: str = "") -> str | None:
    """'released' or 'module': which transformers naming the layers under ``root`` use."""
    keys = list(keys)
    if any(k.startswith(f"{root}encoder.layer.") for k in keys):
        return "released"
    if any(k.startswith(f"{root}layers.") for k in keys):
        return "module"
    return None


# ---------------------------------------------------------------------------- applying a map
def apply_rules(rules: list[Rule], state: Mapping[str, Any], source: str, *, ignored: tuple[str, ...] = (),
                hint: str = "") -> dict[str, Tensor]:
    """The tubelet state dict ``rules`` make of ``state`` (torch tensors or numpy arrays).

    A tensor the map names but ``state`` lacks, or a tensor of ``state`` the map does not use
    (except names starting with ``ignored``), is a :class:`ConfigError` naming it, ``source``
    and ``hint`` (the config fields that decide the map).
    """
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for rule in rules:
        missing = [s for s in rule.sources if s not in state]
        if missing:
            raise ConfigError(f"{source}: tensor {missing[0]!r} (for {rule.name}) is not there{hint}")
        used.update(rule.sources)
        value = rule.to_tubelet(*(state[s] for s in rule.sources))
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        out[rule.name] = value.detach().float().contiguous()
    unused = sorted(k for k in set(state) - used if not k.startswith(ignored))
    if unused:
        raise ConfigError(f"{source}: {len(unused)} tensor(s) have no place in the model, e.g. "
                          f"{unused[0]!r}{hint}")
    return out


def export_rules(rules: list[Rule], state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``rules`` backwards: a tubelet state dict -> the source naming and layout."""
    out: dict[str, Tensor] = {}
    for rule in rules:
        if rule.from_tubelet is None:
            raise ValueError(f"rule for {rule.name} has no export direction")
        for target, tensor in zip(rule.sources, rule.from_tubelet(state[rule.name])):
            out[target] = tensor.detach().cpu().contiguous()
    return out


__all__ = ["FLAX_BLOCKS", "Rule", "TRANSFORMERS_NAMINGS", "apply_rules", "cat_rows", "dense", "export_rules",
           "flax_attention", "flax_block", "flax_conv2d", "flax_conv3d", "flax_dense", "flax_layer_norm",
           "flax_out_kernel", "flax_qkv_bias", "flax_qkv_kernel", "one", "same", "split_qkv", "torch_pair",
           "torch_qkv", "transformers_layer", "transformers_naming"]
