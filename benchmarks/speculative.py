"""Speculative sampling on a real pair: plain autoregressive sampling vs tubelet's speculative
sampling vs transformers' assisted generation, same target, same draft, held-out prompts.

    PYTHONPATH=src python benchmarks/speculative.py --target smollm2 --draft truncated:2 \
        --corpus '/root/.pyenv/versions/3.11.7/lib/python3.11/*.py' --prompts 3 --new-tokens 32

Prompts are the first tokens of held-out files of the corpus (every 10th file, the files
`tubelet draft distill` holds out). Prints a table and writes JSON. Wall-clock numbers are
labelled with the device; on a shared CPU they move with the machine's load (reported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.distill import corpus_files
from tubelet.generate.loading import load_model
from tubelet.models.decoder import to_llama_state_dict


class CallCounter:
    """Counts forward calls of a module (for transformers' generate)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def hf_copy_of_draft(draft, target_config):
    """The tubelet draft as a transformers LlamaForCausalLM, for assisted generation."""
    from transformers import LlamaForCausalLM
    cfg = target_config.__class__.from_dict({**target_config.to_dict(),
                                             "num_hidden_layers": draft.cfg.num_layers,
                                             "tie_word_embeddings": False})
    cfg.quantization_config = None
    model = LlamaForCausalLM(cfg).eval()
    model.load_state_dict(to_llama_state_dict(draft))
    return model


def device_label() -> str:
    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name()})"
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="smollm2")
    ap.add_argument("--draft", default="truncated:2")
    ap.add_argument("--corpus", default="/root/.pyenv/versions/3.11.7/lib/python3.11/*.py")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--temperatures", default="0,1")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers' generate")
    ap.add_argument("--out", default="benchmarks/speculative.json")
    args = ap.parse_args(argv)

    target = load_model(args.target, with_tokenizer=True)
    draft = load_model(args.draft, target=target)
    tok = target.tokenizer
    _, held = corpus_files(args.corpus)
    prompts = []
    for f in held:
        ids = tok(f.read_text(errors="replace")).input_ids
        if len(ids) >= args.prompt_tokens:
            prompts.append(ids[:args.prompt_tokens])
        if len(prompts) == args.prompts:
            break
    hf_draft = None if args.no_hf else hf_copy_of_draft(draft.model, target.model.config)
    counter = CallCounter(target.model)
    rows = []
    for temp in [float(t) for t in args.temperatures.split(",")]:
        sampling = Sampling(temperature=temp)
        for method in ["autoregressive", "speculative"] + ([] if args.no_hf else ["hf_plain", "hf_assisted"]):
            tokens, seconds, calls, acc = 0, 0.0, 0, []
            stats = None
            for i, ids in enumerate(prompts):
                counter.calls = 0
                start = time.perf_counter()
                if method == "autoregressive":
                    out = autoregressive_generate(target.lm, [ids], args.new_tokens, sampling=sampling, seed=i)
                    n = len(out.tokens[0])
                elif method == "speculative":
                    out = speculative_generate(target.lm, draft.lm, [ids], args.new_tokens, k=args.k,
                                               sampling=sampling, seed=i)
                    n = len(out.tokens[0])
                    acc.append(out.stats)
                else:
                    gen_kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                      do_sample=temp > 0, pad_token_id=tok.eos_token_id)
                    if temp > 0:
                        gen_kwargs.update(temperature=temp, top_k=0, top_p=1.0)
                    if method == "hf_assisted":
                        hf_draft.generation_config.num_assistant_tokens = args.k
                        hf_draft.generation_config.num_assistant_tokens_schedule = "constant"
                        hf_draft.generation_config.assistant_confidence_threshold = 0.0
                        gen_kwargs["assistant_model"] = hf_draft
                    torch.manual_seed(i)
                    with torch.no_grad():
                        seq = target.model.generate(torch.tensor([ids]), **gen_kwargs)
                    n = seq.shape[1] - len(ids)
                seconds += time.perf_counter() - start
                tokens += n
                calls += counter.calls
            row = {"method": method, "temperature": temp, "k": args.k if "spec" in method or "assist" in method else 0,
                   "prompts": len(prompts), "new_tokens": tokens, "seconds": seconds,
                   "tokens_per_second": tokens / seconds, "target_calls_per_token": calls / tokens,
                   "load_average": os.getloadavg()[0]}
            if acc:
                accepted = sum(s.accepted for s in acc)
                tested = sum(s.tested for s in acc)
                row["acceptance_rate"] = accepted / tested
                row["tokens_per_step"] = sum(s.generated for s in acc) / sum(s.row_steps for s in acc)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"target": args.target, "draft": args.draft, "device": device_label(),
              "corpus": args.corpus, "held_out_files": [str(f) for f in held[:args.prompts]],
              "prompt_tokens": args.prompt_tokens, "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.target} target, {args.draft} draft, K={args.k}, {len(prompts)} held-out prompts x "
          f"{args.new_tokens} tokens, {result['device']}")
    print(f"{'method':<16}{'T':>4}{'tokens/s':>10}{'target calls/token':>20}{'acceptance':>12}{'tokens/step':>13}")
    for r in rows:
        print(f"{r['method']:<16}{r['temperature']:>4g}{r['tokens_per_second']:>10.2f}"
              f"{r['target_calls_per_token']:>20.3f}{r.get('acceptance_rate', float('nan')):>12.3f}"
              f"{r.get('tokens_per_step', float('nan')):>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
