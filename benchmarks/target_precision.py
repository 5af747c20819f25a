"""Which target precision to decode with on this CPU: the same model as transformers' float32 model
(``smollm2``), tubelet's decoder in float32 (``smollm2,fp32``) and in bfloat16 (``smollm2,bf16``),
timed round-robin in one run: plain greedy decoding's tokens/s, a one-token call, and the cost of
verifying K drafted tokens (a call on K + 1 tokens) relative to it, c_v(K), which decides whether
speculative decoding can pay (docs/generate.md).

    python benchmarks/target_precision.py --out benchmarks/results/target_precision_cpu.json
    python benchmarks/target_precision.py --quick

Where the CPU lacks bf16 instructions (avx512_bf16, AMX; an AVX2 CPU), bfloat16 products are
emulated: a bf16 call costs about 0.65 one-token calls more per token it carries, and oneDNN's
packed weights (``tubelet.generate.packed``) are not used. The CPU's bf16 instructions are printed
beside the table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import common  # noqa: F401  (puts src/ on the path)
from common import environment, write_json
from speculative import paired_calls
from tubelet.generate import Sampling, autoregressive_generate
from tubelet.generate.loading import LoadError, cpu_flags, load_model
from tubelet.generate.packed import PackedLinear, can_pack

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the arguments and run the command.\"\"\"\n"


def vector_flags() -> list[str]:
    """Which of the instructions that decide these precisions' speed the CPU has."""
    return sorted(cpu_flags() & {"avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16"})


def decode_rate(target, prompt: list[int], tokens: int) -> float:
    """Tokens/s of plain greedy decoding of ``tokens`` tokens after ``prompt``."""
    start = time.perf_counter()
    autoregressive_generate(target.lm, [prompt], tokens, sampling=Sampling(0))
    return tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--targets", default="smollm2;smollm2,fp32;smollm2,bf16",
                   help="target specs separated by ';', the first the one ratios are over "
                        "(default: smollm2;smollm2,fp32;smollm2,bf16)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens each plain decoding run writes (default 64)")
    p.add_argument("--k-max", type=int, default=4, help="the largest K whose verification is timed (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as speculative.py)")
    p.add_argument("--quick", action="store_true", help="8 tokens, K <= 2, 1 round (well under a minute)")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.new_tokens, args.k_max, args.repeats = 8, 2, 1
    for name in ("new_tokens", "k_max", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a positive number")
    torch.set_num_threads(args.threads)
    specs = [spec.strip() for spec in args.targets.split(";") if spec.strip()]
    if not specs:
        raise SystemExit(f"--targets {args.targets!r}: expected target specs separated by ';'")
    env = environment(torch.device("cpu"))
    print(f"command: {env['command']}")
    try:
        targets = {spec: load_model(spec, with_tokenizer=True) for spec in specs}
    except LoadError as e:
        raise SystemExit(f"--targets: {e}") from None
    prompt = targets[specs[0]].tokenizer(PROMPT).input_ids
    sizes = [K + 1 for K in range(1, args.k_max + 1)]
    rates: dict[str, list[float]] = {s: [] for s in specs}
    ones: dict[str, list[float]] = {s: [] for s in specs}
    verify: dict[str, dict[int, list[float]]] = {s: {K: [] for K in range(1, args.k_max + 1)} for s in specs}
    for r in range(args.repeats):  # every target once per round, in an order that rotates
        for spec in specs[r % len(specs):] + specs[:r % len(specs)]:
            target = targets[spec]
            rates[spec].append(decode_rate(target, prompt, args.new_tokens))
            one, costs = paired_calls(target.lm, prompt, sizes, 3)
            ones[spec].append(one)
            for K in verify[spec]:
                verify[spec][K].append(costs[K + 1])
        print(f"round {r + 1}/{args.repeats} done")
    base = statistics.median(rates[specs[0]])
    rows = []
    for spec in specs:
        packed = any(isinstance(m, PackedLinear) for m in targets[spec].model.modules())
        rows.append({"target": spec, "model": type(targets[spec].model).__name__,
                     "dtype": str(next(targets[spec].model.parameters()).dtype).removeprefix("torch."),
                     "packed": packed, "tokens_per_second": statistics.median(rates[spec]),
                     "tokens_per_second_all": rates[spec],
                     "ratio": statistics.median(rates[spec]) / base,
                     "one_token_call_ms": 1e3 * statistics.median(ones[spec]),
                     "verify": {K: statistics.median(v) for K, v in verify[spec].items()}})
    flags = vector_flags()
    print(f"\nplain greedy decoding, {args.new_tokens} tokens, median of {args.repeats} rounds; "
          f"{args.threads} thread(s); CPU flags: {', '.join(flags) or 'unknown'}; "
          f"oneDNN bf16 packing: {'yes' if can_pack(torch.device('cpu')) else 'no'}")
    head = " ".join(f"c_v({K})" for K in range(1, args.k_max + 1))
    print(f"{'target':16s} {'model':18s} {'dtype':9s} {'packed':6s} {'tokens/s':>8s} {'ratio':>6s} "
          f"{'call ms':>7s} {head}")
    for row in rows:
        print(f"{row['target']:16s} {row['model']:18s} {row['dtype']:9s} {'yes' if row['packed'] else 'no':6s} "
              f"{row['tokens_per_second']:8.2f} {row['ratio']:6.2f} {row['one_token_call_ms']:7.1f} "
              + " ".join(f"{row['verify'][K]:6.2f}" for K in range(1, args.k_max + 1)))
    print(f"ratio: tokens/s over {specs[0]}'s; c_v(K): a call on K + 1 tokens over a one-token call "
          "(median over rounds of the median of 3 paired calls)")
    write_json(args.out, {"environment": env, "cpu_flags": flags, "prompt_tokens": len(prompt),
                          "new_tokens": args.new_tokens, "rows": rows})
    return 0



if __name__ == "__main__":
    sys.exit(main())
