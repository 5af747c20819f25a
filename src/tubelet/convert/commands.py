"""`tubelet convert`: foreign weights -> a tubelet checkpoint folder (and Model 1 -> transformers).

    tubelet convert --from scenic checkpoint.msgpack --model vivit_b16x2 --out k400_b16x2
    tubelet convert --from hf ./vivit-b-16x2-kinetics400 --out k400_hf
    tubelet convert --from vit vit_base_patch16_224.safetensors --model vivit_b16x2_fe \\
        --num-classes 174 --kernel-init central_frame --out ssv2_init
    tubelet convert --from tubelet k400_b16x2 --to hf --out k400_for_transformers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UsageError
from ..models.info import ModelInfo
from ..models.config import ViViTConfig
from ..models.registry import get_config
from ..models.vivit import ViViT, count_parameters

SOURCES = ("scenic", "hf", "vit", "tubelet")


def _parse_set(items: list[str]) -> dict[str, Any]:
    """['num_kv_heads=4', 'gelu="exact"'] -> {'num_kv_heads': 4, 'gelu': 'exact'} (JSON values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set drop_path=0.1")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string: --set gelu=exact
    return out


def _read_config_file(path: Path) -> ViViTConfig:
    """A tubelet config.json, a bare ViViTConfig dict, or (scenic) a reference model description."""
    from ..checkpoint import MissingCheckpointError, read_json

    if not path.is_file():
        raise MissingCheckpointError(f"--config {path} does not exist")
    d = read_json(path)
    if d.get("format") == "tubelet":
        return ViViTConfig.from_dict(d["config"])
    if "type" in d and "hidden" in d:  # the reference's description (fixtures' NAME.json)
        from .scenic import config_from_scenic
        try:
            return config_from_scenic(d)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"--config {path}: not a complete reference model description ({e})") from None
    return ViViTConfig.from_dict(d)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set FIELD=VALUE, --num-classes and the --model.FIELD flags (--num-frames, --image-size)."""
    from ..config import model_overrides
    overrides = _parse_set(args.set)
    overrides.update(model_overrides(args))
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    return overrides


def _target_config(args: argparse.Namespace, trained: ViViTConfig | None = None) -> ViViTConfig | None:
    """The ViViT to build: --model, else --config, else ``trained`` (the config the source
    describes itself), with the overrides applied; None if there is nothing to start from."""
    overrides = _overrides(args)
    if args.model and args.config:
        raise UsageError("give --model or --config, not both")
    if args.model:
        return get_config(args.model, **overrides)
    base = _read_config_file(Path(args.config)) if args.config else trained
    if base is None:
        if overrides:
            raise UsageError("--num-frames/--image-size/--num-classes/--set need --model or --config")
        return None
    from ..checkpoint import replace_config
    return replace_config(base, overrides, "--set")


def _convert(args: argparse.Namespace) -> ViViT:
    """The model ``args`` describe, its ``info`` (classes, preprocessing, provenance) filled."""
    src = Path(args.src)
    if args.source == "tubelet":  # re-save at another clip size, or export with --to hf
        from ..checkpoint import load_model
        if args.model or args.config:
            raise UsageError("--from tubelet takes the model from the checkpoint; drop --model/--config")
        return load_model(src, **_overrides(args))  # a checkpoint, run or export folder
    if not src.exists():
        from ..checkpoint import MissingCheckpointError
        raise MissingCheckpointError(f"{src} does not exist")
    if args.source == "scenic":
        from .scenic import load_scenic
        # --config describes the checkpoint as trained; the overrides then change the clip size
        trained = _read_config_file(Path(args.config)) if args.config else None
        cfg = _target_config(args)
        if cfg is None:
            raise UsageError("--from scenic needs the model the checkpoint holds: --model NAME (e.g. "
                             "vivit_b16x2, vivit_l16x2_fe) or --config FILE.json")
        model = load_scenic(src, cfg, trained=trained)
        model.info = ModelInfo(provenance={"source": f"scenic {src}"})
        return model
    if args.source == "hf":
        from .hf import config_from_hf, load_hf, read_hf_config
        trained = config_from_hf(read_hf_config(src))
        model = load_hf(src, cfg=_target_config(args, trained))
        _report_hf_import(model.info, src)
        return model
    # --from vit
    from .vit import read_image_vit, vivit_from_image_vit
    cfg = _target_config(args)
    if cfg is None:
        raise UsageError("--from vit needs the video model to build: --model NAME (e.g. vivit_b16x2_fe)")
    vit = read_image_vit(src)
    print(f"image ViT: {vit.naming} naming, {vit.depth} layers, width {vit.hidden_size}, patch "
          f"{vit.patch_size}, {vit.grid[0]}x{vit.grid[1]} grid, "
          f"{'a' if vit.has_cls_token else 'no'} CLS token, GELU {vit.gelu}, eps {vit.layer_norm_eps:g}")
    model = vivit_from_image_vit(vit, cfg, kernel_init=args.kernel_init,
                                 temporal_attention_init=args.temporal_attention_init)
    model.info = ModelInfo(provenance={"source": f"image ViT {src}", "kernel_init": args.kernel_init})
    return model


def _report_hf_import(info: ModelInfo, src: Path) -> None:
    """Say what the transformers folder told about the model's identity."""
    names = info.names_of_head(0)
    print(f"{src}: " + (f"{len(names)} class names from id2label ({', '.join(names[:3])}"
                        f"{', ...' if len(names) > 3 else ''})" if names else
                        "no class names (id2label holds transformers' placeholders LABEL_i)"))
    pre = info.preprocessing
    if pre is None:
        print(f"{src}: no processor config; preprocessing left at the reference's pixels in [-1, 1]")
    elif pre.is_reference_pixels:
        print(f"{src}: the processor config feeds the reference's pixels in [-1, 1]")
    else:
        lo, hi = pre.pixel_range
        print(f"{src}: the processor config maps pixels to [{lo:g}, {hi:g}] (x / 255 - mean) / std with "
              f"mean {list(pre.pixel_mean)}, std {list(pre.pixel_std)}"
              + (" (the hub's Vivit processor: rescale to [-1, 1], then normalise with mean = std = 0.5)"
                 if (round(lo, 6), round(hi, 6)) == (-3, 1) else "")
              + "; recorded in the checkpoint's preprocessing so tubelet feeds the model what transformers "
              "fed it (the reference ViViT feeds [-1, 1])")


def _cmd_convert(args: argparse.Namespace) -> int:
    model = _convert(args)
    if args.to_gqa is not None:
        from .gqa import to_gqa
        heads, kv = model.config.num_heads, model.config.kv_heads
        model = to_gqa(model, args.to_gqa, inplace=True)  # the same model object: its info stays
        model.info.provenance["gqa"] = {"num_kv_heads_before": kv, "num_kv_heads": args.to_gqa}
        print(f"grouped-query attention: {heads} query heads share {args.to_gqa} key/value head(s) "
              "(mean-pooled); uptrain it with `tubelet train --init OUT --uptrain-fraction 0.05`")
    out = Path(args.out)
    names = model.info.class_names
    kept = (f"class names of {len(names)} head(s) kept" if names else "no class names known")
    if args.to == "hf":
        from .hf import save_hf
        save_hf(model, out)
        print(f"wrote {out} (transformers VivitForVideoClassification: config.json with id2label, "
              f"model.safetensors, preprocessor_config.json feeding "
              f"{model.info.preprocessing_for(model.config).describe()}; {kept}); load it with "
              f"transformers.pipeline('video-classification', model={str(out)!r})")
        return 0
    from ..checkpoint import save_model
    save_model(model, out)
    cfg = model.config
    t, h, w = cfg.grid
    print(f"wrote {out} ({cfg.name or cfg.kind}, {count_parameters(model):,} parameters, "
          f"{cfg.num_frames} frames at {cfg.image_size[0]}x{cfg.image_size[1]}, token grid {t}x{h}x{w}; {kept}); "
          f"load it with tubelet.load_model({str(out)!r})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert reference / transformers / image-ViT weights to a tubelet checkpoint",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", choices=SOURCES, required=True,
                   help="scenic: the reference's Flax .msgpack checkpoint or .npz of Flax paths; hf: a "
                        "transformers Vivit folder; vit: an image ViT (timm / transformers / Flax .npz "
                        "naming, detected) to initialise from; tubelet: a tubelet checkpoint, training run "
                        "or transformers Vivit folder")
    p.add_argument("src", help="the file or folder to convert")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--to", choices=("tubelet", "hf"), default="tubelet",
                   help="tubelet checkpoint (default) or a transformers Vivit folder (Model 1 only)")
    p.add_argument("--model", help="registry name of the ViViT to build (`tubelet models` lists them)")
    p.add_argument("--config", help="a JSON config instead of --model: a tubelet config.json, a "
                                    "ViViTConfig dict, or the reference's model description")
    p.add_argument("--num-classes", type=int, help="classes of the (fresh, for --from vit) head")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other ViViTConfig field, e.g. --set temporal_layers=4 (repeatable)")
    p.add_argument("--kernel-init", choices=("central_frame", "filter_inflation"), default="central_frame",
                   help="--from vit: tubelet kernel from the 2D patch kernel (paper 3.4; default "
                        "central_frame, the paper's best)")
    p.add_argument("--temporal-attention-init", choices=("zero_proj", "zero_all"), default="zero_proj",
                   help="--from vit, Model 3: zero the temporal attention's output projection (default) "
                        "or all its kernels as the reference does")
    p.add_argument("--to-gqa", type=int, metavar="G",
                   help="convert multi-head attention to G key/value heads by mean-pooling each group "
                        "(GQA paper 2.1); 1 gives multi-query attention")
    from ..config import add_model_arguments
    add_model_arguments(p, aliases={"num_frames": "model.num_frames", "image_size": "model.image_size"})
    p.set_defaults(func=_cmd_convert)
