"""The scaling study of the paper's section 4.2: time and memory against the number of frames,
for every variant, and the largest frame count each variant fits.

For every variant and frame count (default 8 to 128), one inference call and one training
step (SGD, as in throughput.py) are timed (median and interquartile range over repeats, after
warm-up) and their peak memory measured. Then, at batch 1 and 8, the largest frame count that
fits is searched: frames double until a call fails, then a bisection (in steps of the tubelet
length) between the last that fitted and the first that did not.

"Fits" is measured, never estimated: on CUDA a call fits when it does not raise out of
memory; on CPU, where running out of memory would end the process, a call fits when its
measured peak memory (RSS rise plus weights and optimiser state) stays under
``--memory-budget-gib``, a CPU stand-in that the output labels as such.

    python benchmarks/frame_scaling.py --device cuda --backbone b --size 224 --out results/scaling_cuda.json
    python benchmarks/frame_scaling.py --device cpu --threads 1 --backbone s --size 112 --frames 8,16,32 \\
        --memory-budget-gib 1 --max-frames 256 --batch-ceilings 1
    python benchmarks/frame_scaling.py --quick --out /tmp/frame_scaling.json
"""

from __future__ import annotations

import argparse
import time

import torch

import common  # noqa: F401  (puts src/ on the path)
from common import (Timing, add_run_args, failure, free, inference_fn, is_oom, parse_list, start,
                    peak_memory, time_interleaved, training_fn, write_json)
from throughput import VARIANTS, model_name, state_bytes
from tubelet.models import ViViT, get_config


def build(args, device, variant: str, frames: int, training: bool):
    cfg = get_config(model_name(args.backbone, variant, args.patch), num_frames=frames, image_size=args.size)
    with torch.device(device):
        model = ViViT(cfg)
    model.train(training)
    if training and args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def step_fn(args, device, model, batch: int, frames: int, mode: str):
    x = torch.randn(batch, 3, frames, args.size, args.size, device=device)
    call = torch.compile(model) if args.compile else model
    if mode == "train":
        labels = torch.randint(0, 400, (batch,), device=device)
        return training_fn(model, x, labels, device, args.dtype, call)
    return inference_fn(model, x, device, args.dtype, call)


def measure(args, device, variant, frames, batch, mode, timed: bool) -> dict:
    """Time (if ``timed``) and peak memory of one configuration; errors are recorded."""
    row = dict(variant=variant, model=model_name(args.backbone, variant, args.patch), frames=frames, batch=batch,
               mode=mode, dtype=args.dtype, size=args.size)
    model = None
    try:
        model = build(args, device, variant, frames, mode == "train")
        fn = step_fn(args, device, model, batch, frames, mode)
        if timed:
            t = time_interleaved({"f": fn}, device, warmup=args.warmup, repeats=args.repeats, min_repeat_ms=0)["f"]
            if not isinstance(t, Timing):
                raise RuntimeError(t)
            row.update({k: v for k, v in t.summary().items() if k != "all_ms"})
        else:
            fn()  # one warm-up call before the memory call (lazy state, compilation)
        mem, kind = peak_memory(fn, device)
        row.update(peak_mib=mem + state_bytes(model, mode == "train") / 2**20, memory_kind=kind)
    except Exception as e:  # noqa: BLE001 - out of memory is the point of the search
        row.update(error=failure(e), oom=is_oom(e))
    finally:
        del model
        free(device)
    return row


def fits(args, device, row: dict) -> bool:
    if "error" in row:
        return False
    if device.type == "cpu" and args.memory_budget_gib:
        return row["peak_mib"] <= args.memory_budget_gib * 1024
    return True


def ceiling(args, device, variant: str, batch: int, mode: str, start: int) -> dict:
    """Largest frame count that fits: doubling from ``start``, then bisection."""
    step = 2  # the tubelet length: frame counts must be multiples of it
    probes = []

    def probe(frames: int) -> bool:
        row = measure(args, device, variant, frames, batch, mode, timed=False)
        probes.append({k: row.get(k) for k in ("frames", "peak_mib", "error")})
        return fits(args, device, row)

    t0 = time.perf_counter()
    good, bad = 0, None
    frames = start
    while frames <= args.max_frames:
        if probe(frames):
            good, frames = frames, frames * 2
        else:
            bad = frames
            break
    if bad is not None and good:
        while bad - good > step:
            mid = (good + bad) // 2 // step * step
            if probe(mid):
                good = mid
            else:
                bad = mid
    capped = bad is None
    return dict(variant=variant, batch=batch, mode=mode, max_frames=good, capped_at_max_frames=capped,
                first_failing=bad, probes=probes, seconds=time.perf_counter() - t0,
                criterion=("CUDA out-of-memory" if device.type == "cuda" else
                           f"CPU stand-in: measured peak <= {args.memory_budget_gib} GiB"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="1,2,3,4,avgpool")
    p.add_argument("--backbone", default="b")
    p.add_argument("--patch", type=int, default=16, choices=(14, 16))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--frames", default="8,16,32,64,128")
    p.add_argument("--batch", type=int, default=1, help="batch of the timing table")
    p.add_argument("--mode", default="infer,train")
    p.add_argument("--dtype", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--batch-ceilings", default="1,8", help="batches at which the largest frame count is searched ('' for none)")
    p.add_argument("--ceiling-modes", help="modes whose ceilings are searched (default: --mode)")
    p.add_argument("--max-frames", type=int, default=4096, help="the search stops here")
    p.add_argument("--memory-budget-gib", type=float, default=None,
                   help="CPU only: a call 'fits' when its measured peak is under this (required on CPU for the search)")
    p.add_argument("--quick", action="store_true",
                   help="about half a minute on two CPU cores: ViViT-S at 112 px, 8 and 16 frames, fp32 inference, "
                        "1 thread, 2 repeats; ceilings at batch 1 under a 0.5 GiB CPU stand-in budget, up to 32 frames")
    add_run_args(p, warmup=2, repeats=5)
    args = p.parse_args(argv)
    if args.quick:
        args.backbone, args.size, args.frames, args.mode, args.dtype = "s", 112, "8,16", "infer", "fp32"
        args.warmup, args.repeats, args.threads = 1, 2, args.threads or 1
        args.batch_ceilings, args.memory_budget_gib, args.max_frames = "1", args.memory_budget_gib or 0.5, 32
    device, env = start(args)
    variants = parse_list(args.variants)
    modes = parse_list(args.mode)
    rows = []
    print(f"\n{'model':<26} {'mode':<6} {'frames':>6} {'tokens':>7} {'ms median [IQR]':>26} {'peak MiB':>9}")
    for variant in variants:
        for mode in modes:
            for frames in parse_list(args.frames, int):
                row = measure(args, device, variant, frames, args.batch, mode, timed=True)
                t, h, w = get_config(row["model"], num_frames=frames, image_size=args.size).grid
                row["tokens"] = t * h * w
                rows.append(row)
                if "error" in row:
                    cell = row["error"]
                else:
                    cell = f"{row['median_ms']:.1f} [{row['q1_ms']:.1f}-{row['q3_ms']:.1f}]"
                    cell = f"{cell:>26} {row['peak_mib']:>9.0f}"
                print(f"{row['model']:<26} {mode:<6} {frames:>6} {row['tokens']:>7} {cell}", flush=True)
    ceilings = []
    if device.type == "cpu" and not args.memory_budget_gib:
        print("\nno frame ceilings on CPU without --memory-budget-gib")
    else:
        print(f"\nlargest frame count that fits ({'CUDA out-of-memory' if device.type == 'cuda' else f'CPU stand-in: measured peak <= {args.memory_budget_gib} GiB'}):")
        for batch in parse_list(args.batch_ceilings, int):
            for mode in parse_list(args.ceiling_modes or args.mode):
                for variant in variants:
                    c = ceiling(args, device, variant, batch, mode, start=parse_list(args.frames, int)[0])
                    ceilings.append(c)
                    more = f" (search capped at --max-frames {args.max_frames})" if c["capped_at_max_frames"] else \
                        f" (first failing {c['first_failing']})"
                    print(f"  {model_name(args.backbone, variant, args.patch):<26} batch {batch} {mode:<6} "
                          f"{c['max_frames']:>5} frames{more}", flush=True)
    write_json(args.out, {"environment": env, "rows": rows, "ceilings": ceilings, "variants": VARIANTS})


if __name__ == "__main__":
    main()
