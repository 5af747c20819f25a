"""Inference and training throughput of every ViViT variant, beside transformers' Vivit.

For each backbone x frames x size x batch x dtype x mode (inference / training step), all
selected tubelet variants (eager and torch.compile) and transformers'
VivitForVideoClassification (Model 1, each attention implementation that runs here) are
timed round-robin in one cell, so the ratios between them are paired measurements. Reported
per row: median milliseconds per call with the interquartile range, clips/s, peak memory,
achieved TFLOP/s (2 FLOPs per multiply-accumulate of the matrix products, x3 for a training
step) and MFU, the fraction of the device's matrix-multiply rate measured in the same run (the
faster of bf16 and fp32: bf16 on GPUs and on CPUs with AMX or avx512_bf16, fp32 on a CPU that
only emulates bf16).

    python benchmarks/throughput.py --quick --out /tmp/throughput.json   # about a minute on 2 CPU cores
    python benchmarks/throughput.py --device cuda --backbones b --frames 32 --size 224 \\
        --batch 1,8 --dtype fp32,bf16 --compile off,on --out results/throughput_cuda.json

Timings are printed and written, never asserted.
"""

from __future__ import annotations

import argparse

import torch

import common  # noqa: F401  (puts src/ on the path)
from common import (add_run_args, autocast, free, inference_fn, matmul_rate, parse_list, start,
                    peak_memory, time_interleaved, training_fn, write_json, Timing)
from hf_vivit import HF_ATTENTION, build_hf, hf_input, hf_logits
from tubelet.models import ViViT, get_config
from tubelet.models.flops import count_macs

# variant key -> (registry suffix, label). The paper's Table 2 runtimes (ms, TPU-v3, ViViT-B,
# 32 frames, 224 px) for the ordering check.
VARIANTS = {
    "1": ("", "Model 1 spatio-temporal"),
    "2": ("_fe", "Model 2 factorised encoder"),
    "3": ("_fsa", "Model 3 factorised self-attention"),
    "4": ("_fdp", "Model 4 factorised dot-product"),
    "avgpool": ("_fe_avgpool", "Model 2 average-pool baseline"),
}
PAPER_MS = {"1": 58.9, "2": 17.4, "3": 31.7, "4": 22.9, "avgpool": 17.3}


def model_name(backbone: str, variant: str, patch: int) -> str:
    return f"vivit_{backbone}{patch}x2{VARIANTS[variant][0]}"


def matmul_macs(cfg, batch: int) -> int:
    with torch.device("meta"):
        model = ViViT(cfg)
    return count_macs(model, (batch, cfg.in_channels, cfg.num_frames, *cfg.image_size)).matmul


def state_bytes(model: torch.nn.Module, training: bool) -> int:
    """Weights and buffers, plus the SGD momentum when training (gradients are freed after each
    step, so the step's own peak already counts them)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return weights * (2 if training else 1) + buffers


def build_cell(args, device, backbone, frames, size, batch, dtype, mode):
    """The functions timed together in one cell: name -> (callable, metadata)."""
    fns, meta = {}, {}
    torch.manual_seed(0)
    x = torch.randn(batch, 3, frames, size, size, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)
    training = mode == "train"
    reference = None  # Model 1, for the transformers comparison
    for variant in args.variants:
        name = model_name(backbone, variant, args.patch)
        try:
            cfg = get_config(name, num_frames=frames, image_size=size)
        except Exception as e:  # e.g. ViT-Ti's 3 heads cannot be halved for Model 4
            print(f"  skip {name}: {e}")
            continue
        if args.kv_heads:
            cfg = cfg.replace(num_kv_heads=args.kv_heads)
        with torch.device(device):
            model = ViViT(cfg)
        torch.nn.init.normal_(model.head.weight, std=0.02)  # a zero head would make outputs trivially equal
        model.train(training)
        if training and args.grad_checkpointing:
            model.set_grad_checkpointing(True)
        macs = matmul_macs(cfg, batch)
        if variant == "1":
            reference = model
        for comp in args.compile:
            call = torch.compile(model, mode=args.compile_mode) if comp == "on" else model
            key = f"tubelet M{variant}" + (" compiled" if comp == "on" else "")
            fn = training_fn(model, x, labels, device, dtype, call) if training else inference_fn(model, x, device, dtype, call)
            fns[key] = fn
            meta[key] = dict(impl="tubelet", variant=variant, model=name, compiled=comp == "on", macs=macs,
                             state_bytes=state_bytes(model, training), call=call, module=model)
    if reference is not None and args.hf:
        xh = hf_input(x)
        for impl in args.hf:
            try:
                hf = build_hf(reference, impl, device).train(training)
                if training and args.grad_checkpointing:
                    hf.gradient_checkpointing_enable()
            except Exception as e:  # noqa: BLE001 - e.g. flash-attn not installed, or no CUDA
                print(f"  transformers {impl}: cannot run here ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
                continue
            for comp in args.compile:
                logits = hf_logits(hf)
                call = torch.compile(logits, mode=args.compile_mode) if comp == "on" else logits
                key = f"transformers {impl}" + (" compiled" if comp == "on" else "")
                fn = (training_fn(hf, xh, labels, device, dtype, call) if training
                      else inference_fn(hf, xh, device, dtype, call))
                fns[key] = fn
                meta[key] = dict(impl=f"transformers:{impl}", variant="1", model=model_name(backbone, "1", args.patch),
                                 compiled=comp == "on", macs=meta.get("tubelet M1", {}).get("macs") or matmul_macs(reference.config, batch),
                                 state_bytes=state_bytes(hf, training), call=call, module=hf, hf_input=True)
    return fns, meta, x


@torch.no_grad()
def agreement(meta, x, device, dtype) -> dict[str, float]:
    """Largest |difference| of each transformers implementation's logits from tubelet Model 1's,
    relative to the largest |logit|, in the cell's precision (eager calls, evaluation mode)."""
    ref = next((m for k, m in meta.items() if k == "tubelet M1"), None)
    if ref is None:
        return {}
    out = {}
    xh = hf_input(x)
    for key, m in meta.items():
        if not m.get("hf_input") or m["compiled"]:
            continue
        ref["module"].eval(), m["module"].eval()
        try:
            with autocast(device, dtype):
                a = ref["module"](x).float()
                b = m["module"](pixel_values=xh).logits.float()
            out[key] = ((a - b).abs().max() / a.abs().max()).item()
        except Exception as e:  # noqa: BLE001
            out[key] = float("nan")
            print(f"  agreement {key}: {type(e).__name__}")
    return out


def mfu_dtype(rates: dict) -> str:
    """The precision whose measured rate is MFU's denominator: the device's fastest (on an AVX2 CPU,
    which emulates bf16 at 1/67 of fp32's rate, fp32: against bf16, MFU read 6,553% there)."""
    return max(rates, key=lambda d: rates[d]["tflops"])


def run_cell(args, device, env, rates, backbone, frames, size, batch, dtype, mode) -> list[dict]:
    print(f"\n== {backbone.upper()}/{args.patch}x2, {frames} frames, {size}px, batch {batch}, {dtype}, {mode}")
    fns, meta, x = build_cell(args, device, backbone, frames, size, batch, dtype, mode)
    agree = agreement(meta, x, device, dtype) if mode == "infer" else {}
    for m in meta.values():
        m["module"].train(mode == "train")
    timings = time_interleaved(fns, device, warmup=args.warmup, repeats=args.repeats, min_repeat_ms=args.min_repeat_ms)
    rows = []
    for key, t in timings.items():
        m = meta[key]
        row = dict(name=key, impl=m["impl"], variant=m["variant"], model=m["model"], compiled=m["compiled"],
                   backbone=backbone, frames=frames, size=size, batch=batch, dtype=dtype, mode=mode,
                   grad_checkpointing=bool(args.grad_checkpointing and mode == "train"),
                   matmul_gmacs_per_clip=m["macs"] / batch / 1e9)
        if isinstance(t, Timing):
            mem, what = ("n/a", None) if args.no_memory else peak_memory(fns[key], device)
            flops = 2 * m["macs"] * (3 if mode == "train" else 1)
            achieved = flops / (t.median * 1e-3)
            row.update(t.summary(), clips_per_s=batch / (t.median * 1e-3),
                       peak_mib=None if mem == "n/a" else mem + m["state_bytes"] / 2**20, memory_kind=what,
                       tflops=achieved / 1e12, mfu=achieved / (rates[mfu_dtype(rates)]["tflops"] * 1e12),
                       mfu_same_dtype=achieved / (rates[dtype]["tflops"] * 1e12))
        else:
            row.update(error=t)
        if key in agree:
            row["max_rel_diff_vs_tubelet"] = agree[key]
        rows.append(row)
    print_rows(rows)
    print_ratios(rows)
    del fns, meta
    free(device)
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"  {'implementation':<34} {'ms/call median [IQR]':>26} {'min':>7} {'clips/s':>8} {'peak MiB':>9} "
          f"{'TFLOP/s':>8} {'MFU':>6}  agreement")
    for r in rows:
        if "error" in r:
            print(f"  {r['name']:<34} {r['error']}")
            continue
        iqr = f"{r['median_ms']:.1f} [{r['q1_ms']:.1f}-{r['q3_ms']:.1f}]"
        mem = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        agree = f"{r['max_rel_diff_vs_tubelet']:.1e}" if "max_rel_diff_vs_tubelet" in r else ""
        print(f"  {r['name']:<34} {iqr:>26} {r['min_ms']:>7.1f} {r['clips_per_s']:>8.2f} {mem:>9} {r['tflops']:>8.3f} "
              f"{r['mfu']:>6.1%}  {agree}")


def paired_ratio(slow: dict, fast: dict) -> tuple[float, float, float]:
    """Median and interquartile range of per-round ratios slow/fast (same round, same cell)."""
    ratios = sorted(a / b for a, b in zip(slow["all_ms"], fast["all_ms"]))
    t = Timing(ms=ratios)
    return t.median, t.quantile(0.25), t.quantile(0.75)


def print_ratios(rows: list[dict]) -> None:
    ok = {r["name"]: r for r in rows if "error" not in r}
    for comp in ("", " compiled"):
        ours = ok.get("tubelet M1" + comp)
        if not ours:
            continue
        for r in rows:
            if r["impl"].startswith("transformers") and r["name"].endswith(comp) and r["name"] in ok \
                    and (comp or not r["compiled"]):
                med, q1, q3 = paired_ratio(r, ours)
                ours.setdefault("speedup_vs", {})[r["name"]] = dict(median=med, q1=q1, q3=q3)
                print(f"  speed-up of tubelet M1{comp} over {r['name']}: x{med:.2f} [IQR {q1:.2f}-{q3:.2f}]")
    ones = {r["compiled"]: r for r in ok.values() if r["impl"] == "tubelet" and r["variant"] == "1"}
    for comp, m1 in ones.items():
        models = {r["variant"]: r for r in ok.values() if r["impl"] == "tubelet" and r["compiled"] == comp}
        if len(models) > 1:
            cells = [f"M{v} {models[v]['median_ms'] / m1['median_ms']:.2f} (paper {PAPER_MS[v] / PAPER_MS['1']:.2f})"
                     for v in VARIANTS if v in models]
            print(f"  runtime / Model 1{' (compiled)' if comp else ''}: " + ", ".join(cells))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="1,2,3,4,avgpool", help="of 1,2,3,4,avgpool")
    p.add_argument("--backbones", default="b", help="of ti,s,b,l,h")
    p.add_argument("--patch", type=int, default=16, choices=(14, 16))
    p.add_argument("--frames", default="32", help="comma-separated frame counts")
    p.add_argument("--size", default="224", help="comma-separated square frame sizes")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--dtype", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    p.add_argument("--mode", default="infer,train", help="infer and/or train (one SGD step)")
    p.add_argument("--compile", default="off,on", help="off and/or on (torch.compile)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--hf", default=",".join(HF_ATTENTION),
                   help="transformers attention implementations to compare with Model 1 ('' for none)")
    p.add_argument("--kv-heads", type=int, help="grouped-query attention for tubelet's models")
    p.add_argument("--grad-checkpointing", action="store_true", help="training steps recompute blocks")
    p.add_argument("--min-repeat-ms", type=float, default=50.0, help="calls per repeat are chosen to last this long")
    p.add_argument("--matmul-n", type=int, help="size of the matmul that measures the device's rate "
                   "(default 8192 on CUDA, 2048 on CPU)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    p.add_argument("--quick", action="store_true",
                   help="well under a minute on two CPU cores: ViViT-S, 8 frames, 112 px, batch 1, fp32 inference, "
                        "eager, beside transformers sdpa and eager, 1 thread, 1 warm-up, 3 repeats, no memory call")
    add_run_args(p, warmup=5, repeats=20)
    args = p.parse_args(argv)
    if args.quick:
        args.backbones, args.frames, args.size, args.batch, args.dtype = "s", "8", "112", "1", "fp32"
        args.mode, args.compile, args.hf, args.no_memory = "infer", "off", "sdpa,eager", True
        args.warmup, args.repeats, args.min_repeat_ms = 1, 3, 0.0
        args.matmul_n, args.threads = args.matmul_n or 512, args.threads or 1
    args.variants = parse_list(args.variants)
    args.hf = parse_list(args.hf)
    args.compile = parse_list(args.compile)
    device, env = start(args)
    rates = {d: matmul_rate(device, common.DTYPES[d], args.matmul_n) for d in ("bf16", "fp32")}
    for d, r in rates.items():
        print(f"measured {d} matmul rate: {r['tflops']:.3f} TFLOP/s ({r['n']}^3, best of 5)")
    print(f"MFU = achieved / the {mfu_dtype(rates)} rate (the faster)")
    rows = []
    for backbone in parse_list(args.backbones):
        for frames in parse_list(args.frames, int):
            for size in parse_list(args.size, int):
                for batch in parse_list(args.batch, int):
                    for dtype in parse_list(args.dtype):
                        for mode in parse_list(args.mode):
                            rows += run_cell(args, device, env, rates, backbone, frames, size, batch, dtype, mode)
    write_json(args.out, {"environment": env, "matmul_rate": rates, "mfu_dtype": mfu_dtype(rates), "rows": rows})


if __name__ == "__main__":
    main()
