"""Can a model learn one time-reversed pair of the built-in dataset on its own? A diagnostic.

Renders the pair's clips in memory (no video coding), trains fresh vivit_micro models (each ViViT
variant given with ``--kind``, one after another on the same videos in the same order; or one
loaded with ``--init``, given a new 2-class head) on them alone with AdamW, and prints training
and validation accuracy as it goes: a quick way to tell "the cue is not learnable from these clips"
from "the full run has too little budget". ``--videos`` sets the size of the training pool (kept
as uint8: 12,000 per class take 4.7 GB); ``--fresh`` renders new videos at every step instead.
``--halves`` instead asks which half of a first-class video a clip comes from (for the event-order
pair: a sway or a bob), the per-event perception the pair's order builds on. Prints a table and
writes JSON (after every model, so a stopped run keeps what it finished).

    python experiments/pair_probe.py --pair 5 --event-order --steps 1000
    python experiments/pair_probe.py --pair 5 --event-order --halves --stride 1 --steps 200
    python experiments/pair_probe.py --pair 5 --event-order --init runs/table2_small/spatiotemporal/final
    python experiments/pair_probe.py --pair 5 --event-order --init 'runs/table2_small/{kind}_lr0.0003/final' \\
        --kind all --time-embed 1.0
    python experiments/pair_probe.py --pair 5 --event-order --fresh --steps 1000
    python experiments/pair_probe.py --pair 5 --event-order --kind all --videos 12000 --steps 3000
    python experiments/pair_probe.py --pair 0 --kind factorised_encoder --tokeniser frame_sampling --videos 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from table2 import add_table2_start_args, table2_classifiers
from tubelet.checkpoint import load_model
from tubelet.data.augment import normalise
from tubelet.data.synth import SynthConfig, render
from tubelet.models import count_parameters, create_model
from tubelet.train.optim import learning_rate, set_learning_rate

CLASSIFIER = table2_classifiers()
KINDS = list(CLASSIFIER)  # Models 1-4 and the average-pool baseline, in Table 2's order


def clips(config: SynthConfig, pair: int, split: int, per_class: int, halves: bool, first: int = 0,
          progress: bool = False):
    """(N, T, H, W, C) uint8 frames and (N,) labels 0 / 1: videos first..first+per_class-1 of each class.

    Kept as uint8 (a quarter of float32's memory, so a pool of tens of thousands of videos fits);
    :func:`normalise` turns a batch into model input."""
    jobs = [(label, i) for label in ((2 * pair,) if halves else (2 * pair, 2 * pair + 1))
            for i in range(first, first + per_class)]
    videos, labels = [], []
    for label, i in tqdm(jobs, desc=f"rendering split {split}", disable=not progress, unit="video"):
        frames = render(label, np.random.default_rng([7, split, label, i]), config)
        if halves:
            half = config.frames // 2
            videos += [frames[:half], frames[half:2 * half]]
            labels += [0, 1]
        else:
            videos.append(frames)
            labels.append(label % 2)
    return torch.from_numpy(np.stack(videos)), torch.tensor(labels)


def probe(kind: str, args: argparse.Namespace, config: SynthConfig, train: tuple, val: tuple) -> dict:
    """Train one model on the pair and return its evaluations, parameters and time per step."""
    torch.manual_seed(args.seed)  # the same initialisation stream and batch order for every kind
    if args.init:  # a new time_embed table (Models 1, 3, 4) starts from N(0, std^2), as in a fresh model
        model = load_model(args.init.format(kind=kind), time_embed=args.time_embed)
        model.reset_head(2)
    else:
        model = create_model("vivit_micro", num_classes=2, kind=kind, classifier=CLASSIFIER[kind],
                             tokeniser=args.tokeniser, time_embed=args.time_embed)
    if args.head_std:
        torch.nn.init.normal_(model.head.weight, std=args.head_std)
    frames = model.config.num_frames
    span = (frames - 1) * args.stride + 1
    length = train[0].shape[1]
    if span > length:
        raise SystemExit(f"{frames} frames at stride {args.stride} need {span} frames; the clips have "
                         f"{length}" + (" (halves of videos: use --stride 1)" if args.halves else ""))
    optimiser = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=0.05)
    # At most 200 training videos are scored: enough to see memorisation, cheap with a large pool.
    every = max(1, len(train[1]) // 200)
    seen_x, seen_y = train[0][::every], train[1][::every]
    val_x, val_y = val

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            right = sum((model(normalise(x[i:i + 50, :span:args.stride])).argmax(1) == y[i:i + 50]).sum().item()
                        for i in range(0, len(y), 50))
        model.train()
        return right / len(y)

    order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(args.seed))
    rows, step_seconds = [], []
    for step in range(1, args.steps + 1):
        if args.fresh:  # split 2: neither the training (0) nor the validation (1) videos
            x, y = clips(config, args.pair, 2, 16 if args.halves else 8, args.halves, first=16 * step)
        else:  # the pool in a fixed shuffled order, epoch after epoch
            batch = order[(torch.arange(16) + 16 * (step - 1)) % len(order)]
            x, y = train[0][batch], train[1][batch]
        start = time.perf_counter()
        if args.schedule == "cosine":
            set_learning_rate(optimiser, learning_rate(step - 1, base=args.lr, total=args.steps,
                                                       warmup=args.warmup))
        offset = int(torch.randint(0, length - span + 1, ()))
        loss = F.cross_entropy(model(normalise(x[:, offset:offset + span:args.stride])), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step_seconds.append(time.perf_counter() - start)
        if step % args.every == 0 or step == args.steps:
            rows.append({"step": step, "loss": loss.item(), "lr": optimiser.param_groups[0]["lr"],
                         "train": accuracy(seen_x, seen_y), "val": accuracy(val_x, val_y),
                         "seconds": sum(step_seconds)})
            print(f"{kind} step {step}: loss {rows[-1]['loss']:.3f}, train {100 * rows[-1]['train']:.0f}%, "
                  f"validation {100 * rows[-1]['val']:.0f}%", flush=True)
    return {"kind": model.config.kind, "init": args.init.format(kind=kind) if args.init else None,
            "params": count_parameters(model), "rows": rows, "val": rows[-1]["val"],
            "best_val": max(r["val"] for r in rows),
            "ms_per_step": 1000 * float(np.median(step_seconds)), "steps": args.steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", type=int, default=0, help="index of the pair (5: the event-order pair)")
    p.add_argument("--event-order", action="store_true", help="the dataset with the event-order pair")
    p.add_argument("--kind", nargs="+", default=["spatiotemporal"], choices=KINDS + ["all"],
                   help="the ViViT variants, trained one after another ('all': the five of Table 2); "
                        "with --init, the kinds whose checkpoints '{kind}' names")
    p.add_argument("--tokeniser", choices=("tubelet", "frame_sampling"), default="tubelet",
                   help="8x8x2 tubelets or 8x8 per-frame tokens (ignored with --init)")
    add_table2_start_args(p)
    p.add_argument("--head-std", type=float, default=0.0,
                   help="start the head from N(0, std) instead of the reference's zeros")
    p.add_argument("--halves", action="store_true", help="first half vs second half of a first-class video")
    p.add_argument("--videos", type=int, default=100,
                   help="training videos per class, rendered once and shared by every kind")
    p.add_argument("--val-videos", type=int, default=100, help="validation videos per class")
    p.add_argument("--fresh", action="store_true",
                   help="train on new videos at every step (never the same twice); the training "
                        "accuracy is then on the --videos set, which it never trains on")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW's (peak) learning rate")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: linear warm-up over --warmup steps, then cosine decay to 0 at --steps")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps of the cosine schedule")
    p.add_argument("--stride", type=int, default=2, help="frame stride of the 8-frame clips")
    p.add_argument("--every", type=int, default=50, help="evaluate every this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/pair_probe.json")
    args = p.parse_args(argv)
    kinds = KINDS if "all" in args.kind else list(dict.fromkeys(args.kind))
    if args.init and "{kind}" not in args.init:
        kinds = kinds[:1]  # one checkpoint: one model

    config = SynthConfig(event_order=args.event_order)
    train = clips(config, args.pair, 0, args.videos, args.halves, progress=args.videos > 1000)
    val = clips(config, args.pair, 1, args.val_videos, args.halves)
    name = config.classes[2 * args.pair]
    task = f"halves of '{name}'" if args.halves else f"'{name}' vs its reversal"
    print(f"{task}: {len(train[1])} training clips, {len(val[1])} validation clips", flush=True)
    results = []
    for kind in kinds:
        results.append(probe(kind, args, config, train, val))
        # Written after every kind, so a long run that is stopped keeps what it finished.
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "task": task, "args": vars(args), "results": results,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "command": " ".join(sys.argv)},
            indent=2))
    for r in results:
        print(f"\n{r['kind']}\n| step | training accuracy | validation accuracy |\n| ---: | ---: | ---: |")
        for row in r["rows"]:
            print(f"| {row['step']} | {100 * row['train']:.0f}% | {100 * row['val']:.0f}% |")
    print("\n| model | params | validation accuracy (last / best) | ms / step (16 clips) |\n| --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['kind']} | {r['params'] / 1e6:.2f}M | {100 * r['val']:.1f}% / {100 * r['best_val']:.1f}% | "
              f"{r['ms_per_step']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
