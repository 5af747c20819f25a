"""Before / after a model change, in one run: tubelet's models at a git revision against the
working tree, with the same weights and input, timed round-robin (paired ratios).

The model package of the revision is extracted (``git archive``) and imported under another
name, so both versions live in one process. The outputs of the two are compared first.

    python benchmarks/compare_revisions.py --before main --variants 3,4 --backbone s --frames 8 --size 112
    python benchmarks/compare_revisions.py --quick                    # HEAD against the working tree
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import common
from common import (Timing, add_run_args, inference_fn, parse_list, start, time_interleaved, training_fn,
                    write_json)
from throughput import VARIANTS, model_name, paired_ratio
from tubelet.models import ViViT, get_config


def import_revision(rev: str):
    """tubelet's ``models`` package as of ``rev``, imported as ``tubelet_<sha>.models``."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=common.ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    blob = subprocess.run(["git", "archive", rev, "src/tubelet"], cwd=common.ROOT, capture_output=True,
                          check=True).stdout
    where = Path(tempfile.mkdtemp(prefix="tubelet_rev_"))
    tarfile.open(fileobj=io.BytesIO(blob)).extractall(where, filter="data")
    name = f"tubelet_{sha}"
    (where / "src" / "tubelet").rename(where / name)
    sys.path.insert(0, str(where))
    return sha, importlib.import_module(f"{name}.models")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="HEAD", help="git revision of the 'before' models")
    p.add_argument("--variants", default="1,2,3,4,avgpool")
    p.add_argument("--backbone", default="s")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="fp32,bf16")
    p.add_argument("--mode", default="infer,train")
    p.add_argument("--quick", action="store_true",
                   help="seconds on two CPU cores: Models 1 and 4, fp32 inference, 1 thread, 1 warm-up, 3 repeats")
    add_run_args(p, warmup=3, repeats=10)
    args = p.parse_args(argv)
    if args.quick:
        args.variants, args.dtype, args.mode = "1,4", "fp32", "infer"
        args.warmup, args.repeats, args.threads = 1, 3, args.threads or 1
    device, env = start(args)
    sha, before = import_revision(args.before)
    env["before"] = f"{args.before} ({sha})"
    print(f"before = {args.before} ({sha}), after = working tree")
    rows = []
    for variant in parse_list(args.variants):
        name = model_name(args.backbone, variant, 16)
        cfg = get_config(name, num_frames=args.frames, image_size=args.size)
        torch.manual_seed(0)
        new = ViViT(cfg).to(device)
        torch.nn.init.normal_(new.head.weight, std=0.02)
        old = before.ViViT(before.ViViTConfig.from_dict(cfg.to_dict())).to(device)
        old.load_state_dict(new.state_dict())
        x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
        labels = torch.randint(0, 400, (args.batch,), device=device)
        with torch.no_grad():
            diff = (old.eval()(x) - new.eval()(x)).abs().max().item()
        for dtype in parse_list(args.dtype):
            for mode in parse_list(args.mode):
                for m in (old, new):
                    m.train(mode == "train")
                make = (lambda m: training_fn(m, x, labels, device, dtype)) if mode == "train" else \
                    (lambda m: inference_fn(m, x, device, dtype))
                t = time_interleaved({"before": make(old), "after": make(new)}, device, warmup=args.warmup,
                                     repeats=args.repeats, min_repeat_ms=0)
                if not all(isinstance(v, Timing) for v in t.values()):
                    print(f"{name} {dtype} {mode}: {t}")
                    continue
                b, a = t["before"].summary(), t["after"].summary()
                med, q1, q3 = paired_ratio(b, a)
                rows.append(dict(model=name, label=VARIANTS[variant][1], dtype=dtype, mode=mode, before=b, after=a,
                                 speedup=med, speedup_q1=q1, speedup_q3=q3, max_abs_output_diff=diff))
                print(f"{name:<24} {dtype:<5} {mode:<6} before {b['median_ms']:8.1f} ms  after {a['median_ms']:8.1f} ms"
                      f"  speed-up x{med:.2f} [IQR {q1:.2f}-{q3:.2f}]  |out diff| {diff:.1e}", flush=True)
    write_json(args.out, {"environment": env, "rows": rows})


if __name__ == "__main__":
    main()
