"""`tubelet train`, `tubelet eval` and `tubelet predict`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import UsageError
from .config import PRESETS, add_config_arguments, resolve_config


def _cmd_train(args: argparse.Namespace) -> int:
    from .distributed import init_runtime, shutdown
    from .loop import Trainer, TrainingError

    try:
        cfg = resolve_config(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    rt = init_runtime(args.device)
    try:
        trainer = Trainer(cfg, rt)
        metrics = trainer.fit(resume=args.resume)
    except TrainingError as e:
        raise UsageError(str(e)) from None
    finally:
        shutdown(rt)
    if rt.is_main and metrics:
        _print_metrics(metrics, Path(trainer.cfg.out))
    return 0


def _print_metrics(metrics: dict, run_dir: Path | None = None) -> None:
    print(f"\nvalidation: {metrics['count']} videos")
    for k, v in metrics.items():
        if isinstance(v, float) and k.endswith(("top1", "top5", "mean_class_accuracy")):
            print(f"  {k.replace('_', ' '):<24} {100 * v:6.2f}%")
    if "reversed_pair_top1" in metrics:
        print("  (reversed pair top1: the true class scored above its time-reversal; 50% = blind to order)")
    if metrics.get("skipped"):
        print(f"  skipped {len(metrics['skipped'])} unreadable file(s): {', '.join(metrics['skipped'][:5])}")
    if run_dir is not None:
        print(f"run folder: {run_dir} (final model in {run_dir / 'final'}, metrics.jsonl, learning_curves.png)")


def _load_for_inference(path: str, device: torch.device):
    from ..checkpoint import load_model
    from .state import model_folder
    p = model_folder(path)
    model = load_model(p, map_location=device)
    classes_file = p / "classes.json"
    classes = json.loads(classes_file.read_text()) if classes_file.is_file() else {}
    return model, p, classes.get("class_names"), classes.get("head_names")


def _cmd_eval(args: argparse.Namespace) -> int:
    from .. import data as tdata
    from .distributed import init_runtime, shutdown
    from .evaluate import evaluate

    rt = init_runtime(args.device)
    try:
        model, path, _, head_names = _load_for_inference(args.checkpoint, rt.device)
        cfg = model.config
        clip = tdata.ClipConfig(num_frames=cfg.num_frames, stride=args.stride, size=cfg.image_size[0],
                                views=args.views, crops=args.crops)
        _, val = tdata.build_datasets(args.data, args.data, format=args.format, clip=clip, seed=0)
        sampler = tdata.ClipSampler(len(val), shuffle=False, seed=0, rank=rt.rank, world_size=rt.world_size,
                                    drop_last=False, epoch=0)
        loader = tdata.make_loader(val, sampler, batch_size=args.batch_size, workers=args.workers,
                                   pin_memory=rt.device.type == "cuda")
        metrics = evaluate(model, loader, rt, class_splits=cfg.class_splits, head_names=head_names,
                           average=args.average, precision=args.precision, total=len(loader))
    finally:
        shutdown(rt)
    if not rt.is_main:
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("indices", "scores", "labels")}))
    else:
        print(f"{path}: {args.views} views x {args.crops} crops, {args.average} averaged")
        _print_metrics(metrics)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .. import data as tdata
    from .evaluate import score_views
    from .metrics import average_views

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _, class_names, head_names = _load_for_inference(args.checkpoint, device)
    cfg = model.config
    clip = tdata.ClipConfig(num_frames=cfg.num_frames, stride=args.stride, size=cfg.image_size[0],
                            views=args.views, crops=args.crops)
    results = []
    for video in args.videos:
        try:
            views = tdata.load_eval_views(video, clip)  # (V*C, T, H, W, 3) uint8
        except (FileNotFoundError, tdata.DecodeError) as e:
            raise UsageError(str(e)) from None
        scores = average_views(score_views(model, views[None], device, args.precision), args.average)[0]
        heads = scores.split(list(cfg.class_splits))
        entry = {"video": str(video), "heads": []}
        for h, s in enumerate(heads):
            probs = s.softmax(-1)
            top = probs.topk(min(args.top_k, len(probs)))
            names = class_names[h] if class_names else None
            entry["heads"].append({
                "head": head_names[h] if head_names else None,
                "top": [{"label": names[i] if names else int(i), "index": int(i), "score": float(p)}
                        for p, i in zip(top.values.tolist(), top.indices.tolist())]})
        results.append(entry)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0]))
        return 0
    for entry in results:
        print(entry["video"])
        for head in entry["heads"]:
            prefix = f"  [{head['head']}]" if head["head"] else ""
            if prefix:
                print(prefix)
            for rank, t in enumerate(head["top"], 1):
                print(f"    {rank}. {t['label']:<28} {100 * t['score']:5.1f}%")
    return 0


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, except where there is no default to name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train and evaluate a ViViT (no arguments: the built-in dataset)",
        description="Train a ViViT with one of the paper's recipes and evaluate it with the multi-view "
                    "protocol. With no arguments it generates (or reuses) the built-in motion dataset, "
                    "trains a small model on the CPU or GPU, evaluates it and prints the result. Presets: "
                    + ", ".join(f"{k} ({v['model']}, lr {v['lr']}, {v['epochs']} epochs)" for k, v in PRESETS.items())
                    + ". Distributed: torchrun --nproc_per_node N -m tubelet train ...",
        formatter_class=_HelpFormatter)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, exactly where it stopped")
    _add_runtime(p)
    add_config_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="multi-view evaluation of a checkpoint on labelled videos",
                       description="Top-1, top-5, per-class accuracy and the confusion matrix (verb / noun / "
                                   "action for two-head data) with V temporal views x C spatial crops.")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder (its final/ model is used)")
    p.add_argument("--data", required=True, help="labelled videos: a folder per class, a list file, a CSV/JSON")
    p.add_argument("--format", help="annotation format (default: detected)")
    p.add_argument("--views", type=int, default=4, help="temporal views per video")
    p.add_argument("--crops", type=int, default=3, help="spatial crops per view (1 = centre)")
    p.add_argument("--average", choices=["logits", "softmax"], default="logits")
    p.add_argument("--stride", type=int, default=2, help="frame stride within a view")
    p.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_runtime(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="labels and scores for video files",
                       description="Score each video with the multi-view protocol and print its top labels.")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--crops", type=int, default=3)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--average", choices=["logits", "softmax"], default="logits")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_runtime(p)
    p.set_defaults(func=_cmd_predict)
