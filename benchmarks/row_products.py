"""What a decoding call's matrix products cost for 1 to a few rows: the numbers behind c_v(K).

A decoding call multiplies one row (plain decoding) or K + 1 rows (the verification of K drafted
tokens) by every block matrix of the model; if K + 1 rows cost about what one row costs,
speculative decoding pays. This times the block matrices of a decoder (tubelet's
``DecoderConfig``, SmolLM2-135M's shapes by default: 30 layers of q, k, v, o, gate, up and down,
weights out of the cache as in a real call) for each row count, round-robin in one run, three ways:

- ``eager``: ``F.linear``, what tubelet's decoder calls today;
- ``onednn``: oneDNN with each weight reordered once (``torch.ops.mkldnn._reorder_linear_weight``);
- ``inductor``: ``torch.compile`` with frozen weights and inductor's C++ GEMM templates
  (``max_autotune`` over ``CPP,ATEN``), compiled once for one row and once for 2+ rows
  (``dynamic=True``); it needs a C++ compiler, and the compile time is printed.

Times are in units of eager's one-row time (one "call" of c_v). On a 2-core AMD EPYC (Zen 3, AVX2),
fp32: eager 2-5 rows cost 1.6-1.9 calls, the inductor kernels 0.76-1.07 (one row 0.70), after a
146 s compile (benchmarks/RESULTS.md).

    python benchmarks/row_products.py --out benchmarks/results/row_products_cpu.json
    python benchmarks/row_products.py --dtype bf16 --methods eager,onednn,inductor
    python benchmarks/row_products.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import common  # noqa: F401  (puts src/ on the path)
from common import environment, parse_list, write_json
from tubelet.models.decoder import DecoderConfig

METHODS = ("eager", "onednn", "inductor")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class BlockMatrices(nn.Module):
    """The linear layers of ``layers`` decoder blocks (no attention, no norms): forward multiplies
    its inputs (rows of width dim, and of width mlp_dim for down) by every one of them."""

    def __init__(self, cfg: DecoderConfig, layers: int, dtype: torch.dtype) -> None:
        super().__init__()
        kv = cfg.num_kv_heads * cfg.head_dim
        shapes = [(cfg.dim, cfg.dim), (kv, cfg.dim), (kv, cfg.dim), (cfg.dim, cfg.dim),
                  (cfg.mlp_dim, cfg.dim), (cfg.mlp_dim, cfg.dim), (cfg.dim, cfg.mlp_dim)]
        self.linears = nn.ModuleList(nn.Linear(i, o, bias=False, dtype=dtype) for _ in range(layers)
                                     for o, i in shapes)

    def forward(self, x: torch.Tensor, wide: torch.Tensor) -> list[torch.Tensor]:
        return [lin(wide if lin.in_features == wide.shape[-1] else x) for lin in self.linears]


class OneDNN(nn.Module):
    """The same products through oneDNN, each weight reordered once into its blocked layout."""

    def __init__(self, m: BlockMatrices) -> None:
        super().__init__()
        self.packed = [(lin.in_features, torch.ops.mkldnn._reorder_linear_weight(lin.weight.detach(), 1))
                       for lin in m.linears]

    def forward(self, x: torch.Tensor, wide: torch.Tensor) -> list[torch.Tensor]:
        return [torch.ops.mkldnn._linear_pointwise(wide if n == wide.shape[-1] else x, w, None, "none", [], "")
                for n, w in self.packed]


def use_cpp_gemm() -> None:
    """Set inductor, for the whole process, to freeze weights as constants, pack them once for its C++
    GEMM templates and pick each product's kernel by timing (also experiments/compiled_decoding.py's).
    Given as ``torch.compile(options=...)`` instead, freezing did not take: the products stayed ATen's."""
    import torch._inductor.config as config

    config.freezing = True
    config.max_autotune = True
    config.max_autotune_gemm_backends = "CPP,ATEN"
    config.autotune_num_choices_displayed = 0  # the table says what was chosen, in effect


def inductor(m: BlockMatrices):
    use_cpp_gemm()
    return torch.compile(m, dynamic=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--layers", type=int, default=30, help="decoder blocks (default 30, SmolLM2-135M's)")
    p.add_argument("--rows", default="1,2,3,4,5,6,8", help="row counts to time (default 1,2,3,4,5,6,8)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="weights' precision (default fp32)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)} (default: all)")
    p.add_argument("--repeats", type=int, default=7, help="round-robin rounds; the median is reported (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as speculative.py)")
    p.add_argument("--quick", action="store_true", help="2 layers, rows 1 and 2, 2 rounds (the compile dominates)")
    p.add_argument("--out", help="write every timing and the environment as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.rows, args.repeats = 2, "1,2", 2
    try:
        rows, methods = parse_list(args.rows, int), parse_list(args.methods)
    except ValueError:
        rows = []
    if not rows or min(rows) < 1 or 1 not in rows:
        raise SystemExit(f"--rows: positive counts that include 1 (the unit), got {args.rows!r}")
    if unknown := [m for m in methods if m not in METHODS]:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"))
    print(f"command: {env['command']}")
    torch.manual_seed(0)
    cfg, dtype = DecoderConfig(), DTYPES[args.dtype]
    model = BlockMatrices(cfg, args.layers, dtype).eval()
    mib = sum(lin.weight.numel() * lin.weight.element_size() for lin in model.linears) / 2**20
    inputs = {n: (torch.randn(n, cfg.dim, dtype=dtype), torch.randn(n, cfg.mlp_dim, dtype=dtype)) for n in rows}
    calls, compile_s, errors, diffs = {}, {}, {}, {}
    with torch.no_grad():
        reference = {n: model(*inputs[n]) for n in rows}
        for method in methods:
            try:
                calls[method] = {"eager": lambda: model, "onednn": lambda: OneDNN(model),
                                 "inductor": lambda: inductor(model)}[method]()
                compile_s[method], diffs[method] = 0.0, 0.0
                for n in rows:  # the first call of each row count (inductor compiles there)
                    start = time.perf_counter()
                    out = calls[method](*inputs[n])
                    compile_s[method] += time.perf_counter() - start
                    diffs[method] = max(diffs[method], *(float((a.float() - b.float()).abs().max())
                                                         for a, b in zip(out, reference[n])))
            except Exception as e:  # no oneDNN reorder for this dtype, no C++ compiler, ...
                errors[method] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                calls.pop(method, None)
                diffs.pop(method, None)
                print(f"{method}: not timed ({errors[method]})", file=sys.stderr)
        seconds = {(m, n): [] for m in calls for n in rows}
        for r in range(args.repeats):
            for n in rows:
                for method, call in calls.items():
                    start = time.perf_counter()
                    call(*inputs[n])
                    seconds[method, n].append(time.perf_counter() - start)
            print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    unit = statistics.median(seconds["eager", 1]) if "eager" in calls else None
    print(f"{args.layers} layers of {cfg.dim}/{cfg.mlp_dim} block matrices, {args.dtype}, {mib:.0f} MiB, "
          f"{env['device']}; one eager row: "
          + (f"{1000 * unit:.1f} ms" if unit else "not timed") + "; median of "
          f"{args.repeats} in units of it")
    print(f"{'method':<10}" + "".join(f"{'rows=' + str(n):>9}" for n in rows) + f"{'first calls s':>15}"
          + f"{'max |diff|':>12}")
    table = []
    for method in calls:
        medians = {n: statistics.median(seconds[method, n]) for n in rows}
        print(f"{method:<10}" + "".join(f"{medians[n] / unit if unit else 1000 * medians[n]:>9.2f}" for n in rows)
              + f"{compile_s[method]:>15.1f}{diffs[method]:>12.1e}")
        table.append({"method": method, "ms": {str(n): 1000 * medians[n] for n in rows},
                      "calls": {str(n): medians[n] / unit for n in rows} if unit else None,
                      "all_ms": {str(n): [1000 * s for s in seconds[method, n]] for n in rows},
                      "first_calls_seconds": compile_s[method], "max_abs_diff_vs_eager": diffs[method]})
    if not unit:
        print("(milliseconds: eager was not timed, so there is no unit)")
    write_json(args.out, {"environment": env, "layers": args.layers, "dtype": args.dtype, "weights_mib": mib,
                          "rows": table, "errors": errors})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
