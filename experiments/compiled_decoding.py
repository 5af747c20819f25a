"""Experiment: tubelet's float32 decoder with each decoding call compiled whole (inductor).

What it tries: a KV cache of fixed capacity whose calls read no tensor value from Python (its
span is the capacity, its mask always made from the slots), so that ``torch.compile`` of
``Decoder.features`` is one graph per shape regime instead of a graph break in every layer; with
frozen weights and inductor's C++ GEMM templates (``benchmarks/row_products.py``). Plain greedy
decoding, eager and compiled, round-robin; a one-token call and c_v(K) (a call on K + 1 tokens
over a one-token call) for each; the greedy tokens of both compared. Not yet part of the library:
the cache here is the experiment's (a subclass of :class:`~tubelet.models.attention.KVCache`).

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
from tubelet.generate.loading import cpu_flags, load_model  # noqa: E402
from tubelet.generate.models import TubeletLM, _last  # noqa: E402
from tubelet.models.attention import KVCache  # noqa: E402

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the arguments and run the command.\"\"\"\n"


class FixedKVCache(KVCache):
    """A KVCache whose buffers are allocated ahead (:meth:`reserve`, outside the compiled call) and
    whose calls attend over the whole capacity with a mask: no ``int()`` of a tensor, no buffer
    grown inside a call. Stale slots past a row's length are masked as in KVCache."""

    def reserve(self, n: int, heads: int, head_dim: int, dtype: torch.dtype) -> None:
        need = int(self.lengths.max()) + n
        capacity = 0 if self.keys[0] is None else self.keys[0].shape[2]
        if capacity >= need:
            return
        grown = max(need, 2 * capacity, 256)
        B = self.lengths.shape[0]
        for i in range(len(self.keys)):
            k, v = (torch.zeros(B, heads, grown, head_dim, dtype=dtype) for _ in range(2))
            if self.keys[i] is not None:
                k[:, :, :capacity], v[:, :, :capacity] = self.keys[i], self.values[i]
            self.keys[i], self.values[i] = k, v

    def span(self) -> int:
        return self.keys[0].shape[2]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(k.shape[0])[:, None]
        self.keys[layer][rows, :, self.slots] = k.transpose(1, 2).to(self.keys[layer].dtype)
        self.values[layer][rows, :, self.slots] = v.transpose(1, 2).to(self.values[layer].dtype)
        return self.keys[layer], self.values[layer]

    def attention_mask(self) -> torch.Tensor:
        return self.causal_mask()


class CompiledLM(TubeletLM):
    """TubeletLM on a FixedKVCache, its features and head through ``torch.compile``."""

    def __init__(self, model, compiled: bool = True) -> None:
        super().__init__(model)
        c = model.cfg
        self.kv = (c.num_kv_heads, c.head_dim, model.embed.weight.dtype)
        self.reset(1)
        self.features_fn, self.head_fn = model.features, model.head
        if compiled:
            use_cpp_gemm()
            self.features_fn = torch.compile(model.features, dynamic=True)
            self.head_fn = torch.compile(model.head, dynamic=True)

    def reset(self, batch_size: int) -> None:
        self.cache = FixedKVCache(len(self.model.blocks), batch_size, self.device)

    @torch.no_grad()
    def extend(self, tokens, num_valid, tree=None):
        return self.head_fn(self._features(tokens, num_valid, tree))

    @torch.no_grad()
    def extend_last(self, tokens, num_valid):
        return self.head_fn(_last(self._features(tokens, num_valid), num_valid))

    def _features(self, tokens, num_valid, tree=None):
        self.calls += 1
        self.cache.reserve(tokens.shape[1], *self.kv)
        return self.features_fn(tokens, self.cache, num_valid, tree=tree)


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
    p.add_argument("--new-tokens", type=int, default=32, help="tokens each plain decoding run writes (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds (default 3)")
    p.add_argument("--k-max", type=int, default=4, help="the largest K whose verification is timed (default 4)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", help="write the timings and the environment as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.target, with_tokenizer=True)
    prompt = loaded.tokenizer(PROMPT).input_ids
    lms = {"eager": TubeletLM(loaded.model)}
    start = time.perf_counter()
    lms["compiled"] = CompiledLM(loaded.model)
    _, reference = decode(lms["eager"], prompt, args.new_tokens)
    _, tokens = decode(lms["compiled"], prompt, args.new_tokens)  # compiles one-token calls
    for n in range(2, args.k_max + 2):  # and the calls on several tokens
        call_seconds(lms["compiled"], prompt, reference, n)
    compile_seconds = time.perf_counter() - start
    print(f"compiled in {compile_seconds:.0f} s; greedy tokens the same: {tokens == reference}", flush=True)
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
    print(f"compiled over eager: {rows[1]['tokens_per_second'] / rows[0]['tokens_per_second']:.2f}x plain decoding")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "target": args.target, "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
            "torch": torch.__version__, "load_average": os.getloadavg()[0], "compile_seconds": compile_seconds,
            "greedy_tokens_same": tokens == reference, "rows": rows}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
