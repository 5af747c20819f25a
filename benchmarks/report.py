"""Markdown tables for benchmarks/RESULTS.md from the JSON the benchmark scripts write, so that
no number is copied by hand. Each table is preceded by the device, versions and command.

    python benchmarks/report.py benchmarks/results/throughput_cpu_eager.json benchmarks/results/frame_scaling_cpu.json
"""

from __future__ import annotations

import argparse
import json

from throughput import PAPER_MS, VARIANTS


def header(env: dict) -> list[str]:
    lines = [f"- device: {env['device']}",
             f"- torch {env['torch']}, transformers {env.get('transformers')}, python {env['python']}, "
             f"tubelet commit {env.get('git_commit')}, {env['date']}"]
    if env["device_type"] == "cpu":
        lines.append(f"- load average (1/5/15 min) at the start: {env.get('load_average_1_5_15min')} "
                     "(other processes shared the cores)")
    if "before" in env:
        lines.append(f"- before: {env['before']}; after: the commit above")
    lines.append(f"- command: `{env['command']}`")
    return lines


def ms(r: dict) -> str:
    return f"{r['median_ms']:.1f} [{r['q1_ms']:.1f}-{r['q3_ms']:.1f}]"


def throughput(d: dict) -> list[str]:
    out = header(d["environment"])
    rates = d["matmul_rate"]
    out.append(f"- measured matmul rate: bf16 {rates['bf16']['tflops']:.3f} TFLOP/s, fp32 "
               f"{rates['fp32']['tflops']:.3f} TFLOP/s ({rates['bf16']['n']}^3); MFU = achieved / "
               f"{d.get('mfu_dtype', 'bf16')} rate")
    cells: dict[tuple, list[dict]] = {}
    for r in d["rows"]:
        cells.setdefault((r["backbone"], r["frames"], r["size"], r["batch"], r["dtype"], r["mode"]), []).append(r)
    for (backbone, frames, size, batch, dtype, mode), rows in cells.items():
        out += ["", f"**ViViT-{backbone.upper()}/16x2, {frames} frames, {size} px, batch {batch}, {dtype}, "
                    f"{'inference' if mode == 'infer' else 'training step'}**", "",
                "| implementation | ms per call, median [IQR] | min ms | clips/s | peak MiB | TFLOP/s | MFU "
                "| logits vs tubelet (max rel. diff) | tubelet M1 speed-up over it, median [IQR] |",
                "|---|---|---|---|---|---|---|---|---|"]
        speedups = {}
        for r in rows:
            for name, s in r.get("speedup_vs", {}).items():
                speedups[name] = f"x{s['median']:.2f} [{s['q1']:.2f}-{s['q3']:.2f}]"
        for r in rows:
            if "error" in r:
                out.append(f"| {r['name']} | {r['error']} | | | | | | | |")
                continue
            mem = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            agree = f"{r['max_rel_diff_vs_tubelet']:.1e}" if "max_rel_diff_vs_tubelet" in r else ""
            out.append(f"| {r['name']} | {ms(r)} | {r['min_ms']:.1f} | {r['clips_per_s']:.2f} | {mem} | "
                       f"{r['tflops']:.3f} | {r['mfu']:.1%} | {agree} | {speedups.get(r['name'], '')} |")
        for compiled in (False, True):
            ours = {r["variant"]: r for r in rows if r["impl"] == "tubelet" and r["compiled"] == compiled and "error" not in r}
            if "1" in ours and len(ours) > 1:
                out += ["", f"Runtime relative to Model 1{' (compiled)' if compiled else ''}, beside the paper's "
                            "Table 2 (TPU-v3, ViViT-B, 32 frames, 224 px):", "",
                        "| model | ours ms | ours / Model 1 | paper ms | paper / Model 1 |", "|---|---|---|---|---|"]
                for v in VARIANTS:
                    if v in ours:
                        out.append(f"| {VARIANTS[v][1]} | {ours[v]['median_ms']:.1f} | "
                                   f"{ours[v]['median_ms'] / ours['1']['median_ms']:.2f} | {PAPER_MS[v]} | "
                                   f"{PAPER_MS[v] / PAPER_MS['1']:.2f} |")
    return out


def frame_scaling(d: dict) -> list[str]:
    out = header(d["environment"])
    rows = d["rows"]
    frames = sorted({r["frames"] for r in rows})
    for mode in dict.fromkeys(r["mode"] for r in rows):
        first = next(r for r in rows if r["mode"] == mode)
        out += ["", f"**{'Inference' if mode == 'infer' else 'Training step'}, batch {first['batch']}, "
                    f"{first['dtype']}, {first['size']} px: ms per call median [IQR] / peak MiB**", "",
                "| model | " + " | ".join(f"{f} frames" for f in frames) + " |", "|---" * (len(frames) + 1) + "|"]
        for model in dict.fromkeys(r["model"] for r in rows):
            cells = []
            for f in frames:
                r = next((r for r in rows if r["model"] == model and r["mode"] == mode and r["frames"] == f), None)
                cells.append("" if r is None else r.get("error") or f"{ms(r)} / {r['peak_mib']:.0f}")
            out.append(f"| {model} | " + " | ".join(cells) + " |")
    if d["ceilings"]:
        out += ["", f"**Largest frame count that fits** ({d['ceilings'][0]['criterion']})", "",
                "| model | batch | mode | largest frames | first failing | probes (frames: peak MiB) |",
                "|---|---|---|---|---|---|"]
        for c in d["ceilings"]:
            name = next((r["model"] for r in rows if r["variant"] == c["variant"]), c["variant"])
            largest = f"{c['max_frames']}" + (" (search cap)" if c["capped_at_max_frames"] else "")
            probes = ", ".join(f"{p['frames']}: {p['peak_mib']:.0f}" if p.get("peak_mib") else f"{p['frames']}: {p.get('error')}"
                               for p in c["probes"])
            out.append(f"| {name} | {c['batch']} | {c['mode']} | {largest} | {c['first_failing'] or ''} | {probes} |")
    return out


def compare(d: dict) -> list[str]:
    out = header(d["environment"]) + ["", "| model | precision | mode | before ms, median [IQR] | after ms, median [IQR] "
                                          "| speed-up, median [IQR] of paired rounds | max abs. output diff |",
                                      "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['model']} | {r['dtype']} | {r['mode']} | {ms(r['before'])} | {ms(r['after'])} | "
                   f"x{r['speedup']:.2f} [{r['speedup_q1']:.2f}-{r['speedup_q3']:.2f}] | {r['max_abs_output_diff']:.1e} |")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="JSON written by throughput.py, frame_scaling.py or compare_revisions.py")
    for path in p.parse_args(argv).json:
        d = json.load(open(path))
        kind = throughput if "matmul_rate" in d else frame_scaling if "ceilings" in d else compare
        print(f"<!-- from {path} -->")
        print("\n".join(kind(d)))
        print()


if __name__ == "__main__":
    main()
