"""GQA in ViViT (GQA paper, section 2): convert a multi-head model, uptrain it, measure.

Starting from a multi-head run on the built-in dataset (trained here with the `default` preset
unless --source names one), the table has: the multi-head model; converted to grouped-query
attention with 2 key/value heads and to multi-query attention (1 head) without further training;
the same after uptraining with 5% and 10% of the original run's steps. Each row: top-1, top-1
on the time-reversed pairs, parameters, key/value activation memory per clip (measured from the
k and v tensors of a real forward pass, float32) and time per training step (measured side by
side in this process). Prints a table and writes JSON.

    python experiments/gqa_uptraining.py [--source runs/gqa/mha] [--out experiments/results/gqa.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from tubelet import data as tdata
from tubelet.checkpoint import load_model
from tubelet.config import preset
from tubelet.convert.gqa import to_gqa
from tubelet.models import Attention, count_parameters
from tubelet.train.distributed import Runtime
from tubelet.train.evaluate import evaluate
from tubelet.data import reversed_classes
from tubelet.train.loop import Trainer
from tubelet.train.metrics import reversed_pair_accuracy


def kv_bytes_per_clip(model: torch.nn.Module, clip: torch.Tensor) -> int:
    """Bytes of the key and value tensors of every attention in one forward of one clip."""
    total = 0
    wrapped = [m for m in model.modules() if isinstance(m, Attention)]

    def measuring(project):
        def run(*args, **kwargs):
            nonlocal total
            q, k, v = project(*args, **kwargs)
            total += k.numel() * k.element_size() + v.numel() * v.element_size()
            return q, k, v
        return run

    for m in wrapped:
        m.project = measuring(m.project)  # an instance attribute shadows the method
    try:
        with torch.no_grad():
            model.eval()(clip)
    finally:
        for m in wrapped:
            del m.project
    return total // clip.shape[0]


def step_ms(model: torch.nn.Module, clip_shape: tuple[int, ...], classes: int, repeats: int = 5) -> float:
    model = model.train()
    x = torch.randn(clip_shape)
    y = torch.randint(0, classes, (clip_shape[0],))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="runs/gqa/mha", help="a multi-head run folder (trained if missing)")
    p.add_argument("--runs", default="runs/gqa")
    p.add_argument("--groups", type=int, nargs="+", default=[2, 1], help="key/value heads to convert to")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10])
    p.add_argument("--out", default="experiments/results/gqa.json")
    args = p.parse_args(argv)

    base = preset("default")
    source = Path(args.source)
    if not (source / "final" / "config.json").is_file():
        print(f"training the multi-head model in {source}", flush=True)
        Trainer(base.with_values({"runtime.out": str(source)}), progress=False).fit(resume=True)
    data = tdata.builtin_dataset(progress=False)
    reverse = reversed_classes(data)
    mha = load_model(source / "final")
    cfg = mha.config
    clip = tdata.ClipConfig(num_frames=cfg.num_frames, stride=base.clip.stride, size=cfg.image_size[0],
                            views=base.clip.views, crops=base.clip.crops)
    _, val = tdata.build_datasets(str(data), None, clip=clip, seed=0)
    rt = Runtime()

    def score(model) -> dict:
        loader = tdata.make_loader(val, tdata.ClipSampler(len(val), shuffle=False, drop_last=False),
                                   batch_size=8, workers=2)
        m = evaluate(model, loader, rt, class_splits=cfg.class_splits, progress=False)
        return {"top1": m["top1"], "reversed_pair_top1": reversed_pair_accuracy(m["scores"], m["labels"], reverse)}

    models = {"multi-head": mha}
    for g in args.groups:
        models[f"{'MQA' if g == 1 else f'GQA-{g}'}, converted"] = to_gqa(mha, g)
    for g in args.groups:
        for f in args.fractions:
            run = Path(args.runs) / f"kv{g}_uptrain{int(f * 100)}"
            up = base.with_values({"model.init": str(source), "model.num_kv_heads": g, "optim.uptrain_fraction": f,
                                   "optim.warmup_epochs": 0, "runtime.out": str(run), "runtime.eval_every": 0})
            Trainer(up, progress=False).fit(resume=True)
            models[f"{'MQA' if g == 1 else f'GQA-{g}'}, uptrained {int(f * 100)}%"] = load_model(run / "final")

    shape = (base.optim.batch_size, 3, cfg.num_frames, *cfg.image_size)
    one = torch.randn(1, 3, cfg.num_frames, *cfg.image_size)
    rows = []
    for name, model in models.items():
        r = {"model": name, "kv_heads": model.config.kv_heads, "params": count_parameters(model),
             "kv_kib_per_clip": kv_bytes_per_clip(model, one) / 1024, **score(model)}
        rows.append(r)
        print(f"{name}: top-1 {100 * r['top1']:.1f}%", flush=True)
    for r, model in zip(rows, models.values()):  # timed side by side, one after another
        r["ms_per_step"] = step_ms(model, shape, cfg.total_classes)

    print(f"\n| model | kv heads | params | top-1 | reversed pairs | k/v memory per clip | ms / step ({shape[0]} clips) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['kv_heads']} | {r['params'] / 1e6:.3f}M | {100 * r['top1']:.1f}% | "
              f"{100 * r['reversed_pair_top1']:.1f}% | {r['kv_kib_per_clip']:.0f} KiB | {r['ms_per_step']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "device": "cpu", "threads": torch.get_num_threads(),
                                          "torch": torch.__version__, "python": platform.python_version(),
                                          "command": " ".join(sys.argv)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
