"""Can a model learn one time-reversed pair of the built-in dataset on its own? A diagnostic.

Renders the pair's clips in memory (no video coding), trains a fresh vivit_micro (or one loaded
with ``--init``, given a new 2-class head) on them alone with AdamW, and prints training and
validation accuracy as it goes: a quick way to tell "the cue is not learnable from these clips"
from "the full run has too little budget". ``--halves`` instead asks which half of a first-class
video a clip comes from (for the event-order pair: a sway or a bob), the per-event perception the
pair's order builds on. Prints a table and writes JSON.

    python benchmarks/pair_probe.py --pair 5 --event-order --steps 1000
    python benchmarks/pair_probe.py --pair 5 --event-order --halves --stride 1 --steps 200
    python benchmarks/pair_probe.py --pair 5 --event-order --init runs/table2_small/spatiotemporal/final
    python benchmarks/pair_probe.py --pair 5 --event-order --fresh --steps 1000
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

from tubelet.checkpoint import load_model
from tubelet.data.augment import normalise
from tubelet.data.synth import SynthConfig, render
from tubelet.models import create_model


def clips(config: SynthConfig, pair: int, split: int, per_class: int, halves: bool, first: int = 0):
    """(N, C, T, H, W) float model input and (N,) labels 0 / 1: videos first..first+per_class-1."""
    videos, labels = [], []
    for label in (2 * pair,) if halves else (2 * pair, 2 * pair + 1):
        for i in range(first, first + per_class):
            frames = render(label, np.random.default_rng([7, split, label, i]), config)
            if halves:
                half = config.frames // 2
                videos += [frames[:half], frames[half:2 * half]]
                labels += [0, 1]
            else:
                videos.append(frames)
                labels.append(label % 2)
    return normalise(torch.from_numpy(np.stack(videos))), torch.tensor(labels)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", type=int, default=0, help="index of the pair (5: the event-order pair)")
    p.add_argument("--event-order", action="store_true", help="the dataset with the event-order pair")
    p.add_argument("--kind", default="spatiotemporal", help="the ViViT variant (ignored with --init)")
    p.add_argument("--init", help="a tubelet checkpoint folder to start from (its head is replaced)")
    p.add_argument("--halves", action="store_true", help="first half vs second half of a first-class video")
    p.add_argument("--videos", type=int, default=100, help="training videos per class")
    p.add_argument("--fresh", action="store_true",
                   help="train on new videos at every step (never the same twice); the training "
                        "accuracy is then on the --videos set, which it never trains on")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--stride", type=int, default=2, help="frame stride of the 8-frame clips")
    p.add_argument("--every", type=int, default=50, help="evaluate every this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/pair_probe.json")
    args = p.parse_args()

    config = SynthConfig(event_order=args.event_order)
    torch.manual_seed(args.seed)
    train_x, train_y = clips(config, args.pair, 0, args.videos, args.halves)
    val_x, val_y = clips(config, args.pair, 1, 50, args.halves)
    if args.init:
        model = load_model(args.init)
        model.reset_head(2)
    else:
        # Models 3 and 4 keep the token grid intact, so they pool by GAP (no CLS token).
        gap = args.kind in ("factorised_self_attention", "factorised_dot_product")
        model = create_model("vivit_micro", num_classes=2, kind=args.kind, classifier="gap" if gap else "token")
    frames = model.config.num_frames
    span = (frames - 1) * args.stride + 1
    if span > train_x.shape[2]:
        p.error(f"{frames} frames at stride {args.stride} need {span} frames; the clips have "
                f"{train_x.shape[2]}" + (" (halves of videos: use --stride 1)" if args.halves else ""))
    optimiser = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=0.05)

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            right = (model(x[:, :, :span:args.stride]).argmax(1) == y).float().mean().item()
        model.train()
        return right

    name = config.classes[2 * args.pair]
    task = f"halves of '{name}'" if args.halves else f"'{name}' vs its reversal"
    print(f"{task}: {len(train_y)} training clips, {len(val_y)} validation clips", flush=True)
    rows, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        if args.fresh:  # split 2: neither the training (0) nor the validation (1) videos
            x, y = clips(config, args.pair, 2, 16 if args.halves else 8, args.halves, first=16 * step)
        else:
            batch = torch.randint(len(train_y), (16,))
            x, y = train_x[batch], train_y[batch]
        offset = int(torch.randint(0, train_x.shape[2] - span + 1, ()))
        loss = F.cross_entropy(model(x[:, :, offset:offset + span:args.stride]), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0:
            rows.append({"step": step, "loss": loss.item(), "train": accuracy(train_x[::3], train_y[::3]),
                         "val": accuracy(val_x, val_y), "seconds": time.perf_counter() - start})
            print(f"step {step}: loss {rows[-1]['loss']:.3f}, train {100 * rows[-1]['train']:.0f}%, "
                  f"validation {100 * rows[-1]['val']:.0f}%", flush=True)
    print("\n| step | training accuracy | validation accuracy |\n| ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['step']} | {100 * r['train']:.0f}% | {100 * r['val']:.0f}% |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"task": task, "args": vars(args), "rows": rows,
                                         "torch": torch.__version__, "command": " ".join(sys.argv)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
