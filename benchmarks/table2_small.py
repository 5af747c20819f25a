"""The paper's Table 2 in small: Models 1-4 and the average-pool baseline on the built-in dataset.

One shared recipe (the `default` preset of `tubelet train`: vivit_micro's backbone, the same data,
schedule and seed); only the model kind changes. Reports top-1, top-1 on the time-reversed pairs
(the true class scored above its reversal: 50% = blind to frame order), parameters and time
per optimiser step. Prints a table and writes JSON.

    python benchmarks/table2_small.py [--epochs 14] [--out benchmarks/results/table2_small.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from tubelet.models import count_parameters
from tubelet.train.config import PRESETS, TrainConfig
from tubelet.train.loop import Trainer

VARIANTS = [
    ("Model 1 (spatio-temporal)", "spatiotemporal", "token"),
    ("Model 2 (factorised encoder)", "factorised_encoder", "token"),
    ("Model 3 (factorised self-attention)", "factorised_self_attention", "gap"),
    ("Model 4 (factorised dot-product)", "factorised_dot_product", "gap"),
    ("average-pool baseline", "average_pool", "token"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=float, default=None, help="default: the preset's")
    p.add_argument("--runs", default="runs/table2_small", help="folder for the five run folders")
    p.add_argument("--out", default="benchmarks/results/table2_small.json")
    p.add_argument("--only", nargs="*", help="kinds to run (default: all five)")
    args = p.parse_args()

    base = TrainConfig(**PRESETS["default"])
    if args.epochs:
        base = base.replace(epochs=args.epochs)
    rows = []
    for title, kind, classifier in VARIANTS:
        if args.only and kind not in args.only:
            continue
        run = Path(args.runs) / kind
        cfg = base.replace(model_args={"kind": kind, "classifier": classifier}, out=str(run))
        trainer = Trainer(cfg, progress=False)
        start = time.perf_counter()
        metrics = trainer.fit(resume=True)
        seconds = time.perf_counter() - start
        train_records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rates = [r["clips_per_s"] for r in train_records if r["kind"] == "train" and "clips_per_s" in r]
        step_ms = 1000 * cfg.batch_size / (sum(rates) / len(rates)) if rates else float("nan")
        rows.append({"model": title, "kind": kind, "params": count_parameters(trainer.model),
                     "top1": metrics["top1"], "reversed_pair_top1": metrics.get("reversed_pair_top1"),
                     "ms_per_step": step_ms, "steps": trainer.total_steps, "wall_s": seconds})
        print(f"{title}: top-1 {100 * metrics['top1']:.1f}%, reversed pairs "
              f"{100 * metrics.get('reversed_pair_top1', float('nan')):.1f}%", flush=True)

    header = f"| model | params | top-1 | top-1 on reversed pairs | ms / step ({base.batch_size} clips) |"
    print("\n" + header + "\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {100 * r['top1']:.1f}% | "
              f"{100 * r['reversed_pair_top1']:.1f}% | {r['ms_per_step']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "rows": rows, "recipe": base.to_dict(), "device": "cpu", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "command": " ".join(sys.argv)},
        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
