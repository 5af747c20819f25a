"""`tubelet models` and `tubelet info`: what the registry holds and what one model costs."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ..fileio import dumps_json
from .config import MODEL_KINDS, ViViTConfig
from .info import ModelInfo
from .flops import count_macs
from .registry import get_config, list_models
from .vivit import ViViT, count_parameters


def model_info(cfg: ViViTConfig, batch: int = 1) -> dict:
    """Parameters, tokens and compute of one forward pass of ``cfg`` (counted on ``meta``)."""
    with torch.device("meta"):
        model = ViViT(cfg)
    macs = count_macs(model, (batch, cfg.in_channels, cfg.num_frames, *cfg.image_size))
    t, h, w = cfg.grid
    cls = int(cfg.classifier == "token")
    if cfg.kind in ("factorised_encoder", "average_pool"):
        sequences = {"spatial": f"{t} x {h * w + cls}"}
        if cfg.kind == "factorised_encoder":
            sequences["temporal"] = f"1 x {t + cls}"
    elif cfg.kind == "spatiotemporal":
        sequences = {"joint": f"1 x {t * h * w + cls}"}
    else:
        sequences = {"spatial": f"{t} x {h * w}", "temporal": f"{h * w} x {t}"}
    return {
        "name": cfg.name,
        "kind": cfg.kind,
        "params": count_parameters(model),
        "tokens": t * h * w,
        "grid": [t, h, w],
        "attention_sequences": sequences,
        "gmacs": round(macs.total / 1e9 / batch, 2),
        "matmul_gmacs": round(macs.matmul / 1e9 / batch, 2),
        "input": [cfg.in_channels, cfg.num_frames, *cfg.image_size],
        "config": cfg.to_dict(),
    }


def _cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.filter)
    if args.json:
        print(dumps_json(names))
        return 0
    print(f"{'name':<26} {'model':<28} {'backbone':<18} classifier")
    for name in names:
        cfg = get_config(name)
        backbone = f"D={cfg.hidden_size} L={cfg.num_layers} H={cfg.num_heads}"
        print(f"{name:<26} {cfg.kind:<28} {backbone:<18} {cfg.classifier}")
    print(f"\n{len(names)} models. Kinds:")
    for kind, text in MODEL_KINDS.items():
        print(f"  {kind:<27} {text}")
    return 0


def _is_path(name: str) -> bool:
    return "/" in name or os.sep in name or Path(name).exists()


def _cmd_info(args: argparse.Namespace) -> int:
    from ..config import model_overrides
    overrides = model_overrides(args)  # --model.FIELD, --frames, --size, --kv-heads
    if args.classes is not None:
        overrides["num_classes"] = args.classes
    identity = None
    if _is_path(args.name):  # a checkpoint, run or transformers folder
        from ..checkpoint import read_model_config, replace_config, resolve_model_path
        cfg, identity = read_model_config(args.name)
        cfg = replace_config(cfg, overrides, "tubelet info")
        title = str(resolve_model_path(args.name)[0])
    else:
        cfg = get_config(args.name, **overrides)
        title = args.name
    start = time.perf_counter()
    info = model_info(cfg)
    if identity is not None:
        info.update({"source": title, **identity.to_dict(),
                     "preprocessing": identity.preprocessing_for(cfg).to_dict()})
    if args.json:
        print(dumps_json(info))
        return 0
    t, h, w = info["grid"]
    print(f"{title}: {MODEL_KINDS[cfg.kind]}")
    print(f"  input        {cfg.in_channels} x {cfg.num_frames} frames x {cfg.image_size[0]}x{cfg.image_size[1]}"
          f" ({cfg.tokeniser}, patch {cfg.patch_size}"
          + (f", tubelet {cfg.tubelet_size})" if cfg.tokeniser == "tubelet" else ")"))
    print(f"  tokens       {info['tokens']:,} = {t} x {h} x {w}"
          + (" (+ CLS)" if cfg.classifier == "token" else ""))
    for which, shape in info["attention_sequences"].items():
        print(f"  attention    {which}: {shape} tokens per clip (sequences x length)")
    print(f"  backbone     D={cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} heads"
          + (f" ({cfg.kv_heads} key/value heads)" if cfg.kv_heads != cfg.num_heads else "")
          + (f", {cfg.temporal_layers} temporal layers" if cfg.kind == "factorised_encoder" else ""))
    print(f"  classes      {cfg.num_classes}")
    if identity is not None:
        _print_identity(identity, cfg)
    print(f"  parameters   {info['params']:,} ({info['params'] / 1e6:.1f}M)")
    print(f"  compute      {info['gmacs']:.1f} GMACs per clip "
          f"({info['matmul_gmacs']:.1f} in matrix products; counted in "
          f"{time.perf_counter() - start:.1f}s on the meta device)")
    return 0


def _print_identity(identity: ModelInfo, cfg: ViViTConfig) -> None:
    """The classes, heads, preprocessing and provenance lines of a model folder."""
    heads = identity.head_names or tuple(f"head {i}" for i in range(len(cfg.class_splits)))
    for h, size in enumerate(cfg.class_splits):
        names = identity.names_of_head(h)
        label = f"{heads[h]}: " if len(cfg.class_splits) > 1 or identity.head_names else ""
        shown = (", ".join(names[:6]) + (f", ... ({size})" if size > 6 else "")) if names else "names unknown"
        print(f"  {'names' if h == 0 else '':<12} {label}{shown}")
    pre = identity.preprocessing_for(cfg)
    recorded = "" if identity.preprocessing is not None else " (not recorded: the default)"
    print(f"  preprocess   {pre.describe()}{recorded}")
    for key, value in identity.provenance.items():
        print(f"  {'provenance' if key == next(iter(identity.provenance)) else '':<12} {key}: "
              f"{json.dumps(value) if not isinstance(value, str) else value}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named model configurations",
                       description="List the registered ViViT configurations.")
    p.add_argument("filter", nargs="?", help="only names containing this text, e.g. _fe or l16")
    p.add_argument("--json", action="store_true", help="print the names as a JSON list")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "info", help="parameters, tokens and compute of a model (a registry name or a model folder)",
        description="Parameters, token counts and the compute of one forward pass, counted from a "
                    "real forward on the meta device in GMACs (multiply-accumulates, the paper's "
                    "unit: matrix products plus elementwise ops at half weight, as the reference "
                    "counts with XLA).")
    p.add_argument("name", help="a model name from `tubelet models` (e.g. vivit_b16x2), or a model folder: "
                                "a checkpoint, a training run or a transformers Vivit export (then its "
                                "classes, preprocessing and provenance are shown too)")
    p.add_argument("--classes", type=int, help="number of classes (default: the model's, 400)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    from ..config import add_model_arguments
    add_model_arguments(p, aliases={"frames": "model.num_frames", "size": "model.image_size",
                                    "kv_heads": "model.num_kv_heads"})
    p.set_defaults(func=_cmd_info)
