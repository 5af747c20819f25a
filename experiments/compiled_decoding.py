"""Experiment: tubelet's float32 decoder with each decoding call compiled whole, two ways.

``aot``: the library's ``,compile`` (:mod:`tubelet.generate.compiled`: the call exported and compiled
by AOTInductor once, kept as a package, loaded afterwards). ``jit``: the same step
(:class:`~tubelet.generate.compiled.DecodingStep` over a cache of fixed capacity) through
``torch.compile`` in the process, as this experiment first did (a compile in every run). Both with
frozen weights and inductor's C++ GEMM (``benchmarks/row_products.py``). Plain greedy decoding,
eager and compiled, round-robin; a one-token call and c_v(K) (a call on K + 1 tokens over a
one-token call) for each; the greedy tokens compared with eager ones.

    python experiments/compiled_decoding.py --out experiments/results/compiled_decoding_epyc_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from row_products import use_cpp_gemm  # noqa: E402

from tubelet.generate import Sampling, autoregressive_generate  # noqa: E402
from tubelet.generate.compiled import CompiledLM, DecodingStep  # noqa: E402
from tubelet.generate.loading import cpu_flags, load_model  # noqa: E402
from tubelet.generate.models import TubeletLM  # noqa: E402

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the arguments and run the command.\"\"\"\n"
METHODS = ("eager", "aot", "jit")


def compiled(model, method: str) -> CompiledLM:
    if method == "aot":
        return CompiledLM(model)
    use_cpp_gemm()
    return CompiledLM(model, runner=torch.compile(DecodingStep(model), dynamic=True))


def decode(lm, prompt: list[int], tokens: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    out = autoregressive_generate(lm, [prompt], tokens, sampling=Sampling(0))
    return tokens / (time.perf_counter() - start), list(out.tokens[0])


@torch.no_grad()
def call_seconds(lm, prompt: list[int], continuation: list[int], n: int) -> float:
    """One call on ``n`` new tokens after the prompt (cropped back after it)."""
    lm.reset(1)
    lm.extend(torch.tensor([prompt]), torch.tensor([len(prompt)]))
    length = lm.lengths.clone()
    x, valid = torch.tensor([continuation[:n]]), torch.tensor([n])
    start = time.perf_counter()
    lm.extend(x, valid)
    seconds = time.perf_counter() - start
    lm.crop(length)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--target", default="smollm2,fp32", help="a tubelet-decoder target (default smollm2,fp32)")
    p.add_argument("--methods", default="eager,aot",
                   help=f"any of {', '.join(METHODS)}, eager first (default eager,aot)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens each plain decoding run writes (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds (default 3)")
    p.add_argument("--k-max", type=int, default=4, help="the largest K whose verification is timed (default 4)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", help="write the timings and the environment as JSON here")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    if methods[0] != "eager" or not set(methods) <= set(METHODS) or len(set(methods)) != len(methods):
        p.error(f"--methods {args.methods}: eager first, then any of {', '.join(METHODS[1:])}")
    torch.set_num_threads(args.threads)
    loaded = load_model(args.target, with_tokenizer=True)
    prompt = loaded.tokenizer(PROMPT).input_ids
    lms, compile_seconds, same = {"eager": TubeletLM(loaded.model)}, {}, {}
    _, reference = decode(lms["eager"], prompt, args.new_tokens)
    for method in methods[1:]:
        start = time.perf_counter()
        lms[method] = compiled(loaded.model, method)
        _, tokens = decode(lms[method], prompt, args.new_tokens)  # a jit compiles one-token calls here
        for n in range(2, args.k_max + 2):  # and the calls on several tokens
            call_seconds(lms[method], prompt, reference, n)
        compile_seconds[method] = time.perf_counter() - start
        same[method] = tokens == reference
        print(f"{method}: ready in {compile_seconds[method]:.0f} s; greedy tokens the same: {same[method]}", flush=True)
    rates, calls = {name: [] for name in lms}, {(name, n): [] for name in lms for n in range(1, args.k_max + 2)}
    for r in range(args.rounds):
        for name, lm in lms.items():
            rate, out = decode(lm, prompt, args.new_tokens)
            rates[name].append(rate)
            if out != reference:
                print(f"round {r + 1}: {name} decoded other tokens", file=sys.stderr)
            for n in range(1, args.k_max + 2):
                calls[name, n].append(call_seconds(lm, prompt, reference, n))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for name in lms:
        one = statistics.median(calls[name, 1])
        row = {"method": name, "tokens_per_second": statistics.median(rates[name]), "all_rates": rates[name],
               "one_token_call_ms": 1000 * one,
               "c_v": {str(k): statistics.median(calls[name, k + 1]) / one for k in range(1, args.k_max + 1)}}
        rows.append(row)
        print(f"{name:<9} {row['tokens_per_second']:6.2f} tokens/s; one-token call {row['one_token_call_ms']:.1f} ms; "
              "c_v(K): " + " ".join(f"{c:.2f}" for c in row["c_v"].values()))
    for row in rows[1:]:
        ratio = row["tokens_per_second"] / rows[0]["tokens_per_second"]
        print(f"{row['method']} over eager: {ratio:.2f}x plain decoding")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "target": args.target, "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
            "torch": torch.__version__, "load_average": os.getloadavg()[0], "ready_seconds": compile_seconds,
            "greedy_tokens_same": same, "rows": rows}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
