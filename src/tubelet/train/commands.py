"""`tubelet train` and `tubelet eval` (`tubelet predict` is in :mod:`tubelet.inference.commands`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import (PRESETS, RunConfig, add_config_arguments, flag_values, load_config, preset,
                      resolve_config, resolve_resume, validate)
from ..devices import add_device_argument
from ..errors import DataError, TrainingError
from ..fileio import dumps_json


def _train_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration: a new one from preset / file / flags, or (``--resume``) the saved one."""
    if not args.resume:
        return resolve_config(args)
    from .run import default_run_dir, run_name
    given = flag_values(args)
    out = given.get("runtime.out")
    name = run_name(args.preset or "default", given.get("model.task", "classify"))
    run_dir = Path(out) if out else default_run_dir(name, resume=True)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise TrainingError(f"--resume: {saved} does not exist, so there is no run to resume in {run_dir}; "
                            "give the run folder with --out, or start a new run without --resume")
    return resolve_resume(load_config(saved), args).with_values({"runtime.out": str(run_dir)})


def _cmd_train(args: argparse.Namespace) -> int:
    from .distributed import init_runtime, shutdown
    from .loop import Trainer

    cfg = _train_config(args)  # every error of the configuration before anything is written
    rt = init_runtime(args.device)
    try:
        trainer = Trainer(cfg, rt)
        metrics = trainer.fit(resume=args.resume)
    finally:
        shutdown(rt)
    if rt.is_main and metrics:
        _print_metrics(metrics, trainer.run_dir)
    return 0


def _print_metrics(metrics: dict, run_dir: Path | None = None) -> None:
    print(f"\nvalidation: {metrics['count']} videos")
    for k, v in metrics.items():
        if isinstance(v, float) and k.endswith(("top1", "top5", "mean_class_accuracy")):
            print(f"  {k.replace('_', ' '):<24} {100 * v:6.2f}%")
    if "reversed_pair_top1" in metrics:
        print("  (reversed pair top1: the true class scored above its time-reversal; 50% = blind to order)")
    for key, what in (("bleu4", "BLEU-4"), ("cider_d", "CIDEr-D"), ("facts_correct", "facts correct")):
        if key in metrics:
            print(f"  {what:<24} {metrics[key]:6.3f}")
    if "facts_correct" in metrics:
        print("  (facts correct: captions whose motion, direction and event order are all right)")
        shares = ", ".join(f"{m} {100 * v:.1f}%" for m, v in metrics.get("facts_correct_by_motion", {}).items())
        print(f"  facts correct by motion: {shares}")
    if metrics.get("absent_classes"):
        absent = metrics["absent_classes"]
        print(f"  {len(absent)} class(es) of the model have no video in the data: {', '.join(absent[:8])}"
              + (" ..." if len(absent) > 8 else ""))
    for key, what in (("train_skipped", "training"), ("skipped", "validation")):
        if metrics.get(key):
            files = metrics[key]
            print(f"  {what} skipped {len(files)} unreadable file(s): {'; '.join(files[:5])}"
                  + (" ..." if len(files) > 5 else ""))
    if run_dir is not None:
        print(f"run folder: {run_dir} (final model in {run_dir / 'final'}, metrics.jsonl, learning_curves.png)")


def _inference_clip(model, cfg: RunConfig):
    """The clip of a loaded model: its frames, size and stride unless the flags say otherwise."""
    from ..inference.pipeline import inference_clip
    return inference_clip(model, stride=cfg.clip.stride, views=cfg.clip.views, crops=cfg.clip.crops)


def absent_classes(dataset, class_names) -> list[str]:
    """The model's classes (of every head) that no video of ``dataset`` is labelled with."""
    if not class_names:
        return []
    present: list[set[int]] = [set() for _ in class_names]
    for record in dataset.records:
        for head, label in enumerate(record.label if isinstance(record.label, tuple) else (record.label,)):
            present[head].add(int(label))
    return [name for head, names in enumerate(class_names) for i, name in enumerate(names)
            if i not in present[head]]


def _cmd_eval(args: argparse.Namespace) -> int:
    from .. import data as tdata
    from ..checkpoint import load_model
    from ..models.captioner import Captioner
    from .distributed import init_runtime, shutdown
    from .evaluate import evaluate

    cfg = validate(RunConfig().with_values(flag_values(args), "the command line"))
    if cfg.data.path is None:
        raise DataError("tubelet eval needs --data: labelled videos (a dataset folder, class folders or an "
                        "annotation file)")
    rt = init_runtime(args.device)
    try:
        model = load_model(args.checkpoint, map_location=rt.device)
        if isinstance(model, Captioner):
            return _eval_captioner(model, cfg, rt, args)
        clip = _inference_clip(model, cfg)
        # the data's labels are numbered by the model's class names (an unknown class is an error)
        val = tdata.build_eval_dataset(cfg.data.path, class_names=model.info.class_names,
                                       format=None if cfg.data.format == "auto" else cfg.data.format,
                                       root=cfg.data.root, missing=cfg.data.missing, clip=clip)
        if len(val) == 0:
            raise DataError(f"{cfg.data.path}: no labelled videos to evaluate")
        absent = absent_classes(val, model.info.class_names)
        sampler = tdata.ClipSampler(len(val), shuffle=False, seed=0, rank=rt.rank, world_size=rt.world_size,
                                    drop_last=False, epoch=0)
        loader = tdata.make_loader(val, sampler, batch_size=args.batch_size, workers=cfg.data.workers,
                                   pin_memory=rt.device.type == "cuda")
        metrics = evaluate(model, loader, rt, class_splits=model.config.class_splits,
                           head_names=model.info.head_names, average=cfg.clip.average,
                           precision=cfg.runtime.precision, total=len(loader),
                           preprocessing=model.info.preprocessing)
    finally:
        shutdown(rt)
    if not rt.is_main:
        return 0
    if metrics["count"] == 0:
        raise DataError(f"{cfg.data.path}: none of the {len(val)} videos could be decoded "
                        f"({len(metrics['skipped'])} skipped)")
    metrics["absent_classes"] = absent
    if args.json:
        print(dumps_json({k: v for k, v in metrics.items() if k not in ("indices", "scores", "labels")}))
    else:
        print(f"{args.checkpoint}: {clip.views} views x {clip.crops} crops, {cfg.clip.average} averaged")
        _print_metrics(metrics)
    return 0


def _eval_captioner(model, cfg: RunConfig, rt, args: argparse.Namespace) -> int:
    from .caption import evaluate_captioner
    if rt.distributed:
        raise TrainingError("tubelet eval of a captioner runs in one process (not under torchrun)")
    metrics = evaluate_captioner(model, cfg, rt.device, args.batch_size)
    if metrics["count"] == 0:
        raise DataError(f"{cfg.data.path}: none of the videos could be decoded ({len(metrics['skipped'])} skipped)")
    if args.json:
        print(dumps_json(metrics))
    else:
        print(f"{args.checkpoint}: greedy captions of the centre clip")
        _print_metrics(metrics)
        for example in metrics["examples"][:3]:
            print(f"  {Path(example['video']).name}: {example['caption']!r} (reference: {example['reference']!r})")
    return 0


def _add_runtime(p: argparse.ArgumentParser) -> None:
    add_device_argument(p)


INFERENCE_FIELDS = {"clip.stride", "clip.views", "clip.crops", "clip.average", "runtime.precision"}
INFERENCE_ALIASES = {"views": "clip.views", "crops": "clip.crops", "stride": "clip.stride",
                     "average": "clip.average", "precision": "runtime.precision", "data": "data.path",
                     "format": "data.format", "root": "data.root", "missing": "data.missing",
                     "workers": "data.workers"}
MODEL_HELP = ("a run folder (its final/ model), a checkpoint folder, or a transformers export folder")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train and evaluate a ViViT (no arguments: the built-in dataset)",
        usage="tubelet train [--preset NAME] [--config FILE.yaml] [--SECTION.FIELD VALUE ...] [--resume]",
        description="Train a ViViT with one of the paper's recipes and evaluate it with the multi-view "
                    "protocol. With no arguments it generates (or reuses) the built-in motion dataset, "
                    "trains a small model on the CPU or GPU, evaluates it and prints the result. Every "
                    "field of the run config is a dotted flag (--optim.lr, --model.drop-path, "
                    "--clip.stride); the short forms (--lr, --epochs, ...) are aliases. Presets: "
                    + ", ".join(f"{k} ({v['model.name']}, lr {v['optim.lr']}, {v['optim.epochs']} epochs)"
                                for k, v in PRESETS.items())
                    + ". Distributed: torchrun --nproc_per_node N -m tubelet train ...")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the last run) from its latest checkpoint, "
                        "with its saved config.yaml; only workers, logging, checkpoint and evaluation "
                        "cadence may change")
    _add_runtime(p)
    add_config_arguments(p, defaults=preset("default"))
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="multi-view evaluation of a model on labelled videos",
                       description="Top-1, top-5, per-class accuracy and the confusion matrix (verb / noun / "
                                   "action for two-head data) with V temporal views x C spatial crops. The data's "
                                   "labels are matched to the model's classes by name.")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--batch-size", type=int, default=4, help="videos per batch (default: 4)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_runtime(p)
    add_config_arguments(p, defaults=RunConfig(), presets=False, aliases=INFERENCE_ALIASES,
                         only=INFERENCE_FIELDS | {"data.path", "data.format", "data.root", "data.missing",
                                                  "data.workers"})
    p.set_defaults(func=_cmd_eval)
