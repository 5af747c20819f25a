"""Distil a small tubelet decoder (the draft) from a target causal LM on a text corpus.

The draft starts as a copy of the target's first layers (same tokenizer, embedding, final norm
and head) and learns to match the target's next-token distributions: the loss is the cross
entropy from the target's top-k distribution (renormalised) to the draft's softmax taken over
the tokens that appear in any top-k of the batch (a sampled softmax: the full 49k-way head is
the dominant cost on a CPU). The embedding / head stay frozen; the blocks and final norm train.
The target is run once over ``label_tokens`` tokens of the corpus (its forward pass is by far
the most expensive part) and its top-k kept; the draft then trains for ``steps`` minibatches
drawn from those labels. ``max_minutes`` bounds the whole run (both evaluations, labelling and
training): a labelling batch or a training step starts only if it is expected to end in time,
with the time of the final evaluation kept aside.
Evaluation on held-out files reports what decoding will see: the expected acceptance rate of
sampling at temperature 1, sum_x min(p(x), q(x)), and the greedy agreement.
"""

from __future__ import annotations

import glob
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import GenerateError
from ..models.decoder import Decoder


class Budget:
    """A wall-clock deadline that loops check before each step: a step starts only when the
    longest step seen so far still fits before ``deadline - reserve``."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.start = clock()
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - self.clock()

    def steps(self, until: float) -> Iterator[None]:
        """Yield while the next step is expected to end before the time ``until``."""
        longest = 0.0
        while True:
            begin = self.clock()
            if begin + longest > until:
                return
            yield
            longest = max(longest, self.clock() - begin)


@dataclass
class DistillConfig:
    seq_len: int = 128
    batch_size: int = 4
    steps: int = 300
    label_tokens: int = 16384
    max_minutes: float = 8.0  # the whole run: evaluations, labelling and training
    label_share: float = 0.5  # of the time left for labelling + training, at most for labelling
    lr: float = 1e-3
    top_k: int = 32
    eval_chunks: int = 8
    seed: int = 0


def corpus_files(pattern: str, holdout_every: int = 10) -> tuple[list[Path], list[Path]]:
    """Files matching a glob (``**`` allowed) or under a folder, split into (train, held-out):
    every ``holdout_every``-th file in sorted order is held out."""
    path = Path(pattern)
    files = sorted(path.rglob("*.py")) if path.is_dir() else sorted(map(Path, glob.glob(pattern, recursive=True)))
    files = [f for f in files if f.is_file() and f.stat().st_size > 0]
    if len(files) < 2:
        raise FileNotFoundError(f"{pattern}: found {len(files)} text files; need at least 2 "
                                "(some for training, some held out)")
    held = files[::holdout_every]
    held_set = set(held)
    return [f for f in files if f not in held_set], held


def token_chunks(files: Sequence[Path], tokenize: Callable[[str], list[int]], seq_len: int,
                 seed: int, max_chars: int = 20000) -> Iterator[Tensor]:
    """Endless (seq_len,) chunks of token ids from randomly ordered files."""
    rng = random.Random(seed)
    order = list(files)
    while True:
        rng.shuffle(order)
        for f in order:
            text = f.read_text(errors="replace")
            if len(text) > max_chars:
                start = rng.randrange(len(text) - max_chars)
                text = text[start:start + max_chars]
            ids = tokenize(text)
            for i in range(0, len(ids) - seq_len + 1, seq_len):
                yield torch.tensor(ids[i:i + seq_len])


def target_topk(target: Callable[[Tensor], Tensor], x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The target's top-k next-token distribution at every position: (probs, ids) (B, L, k)."""
    with torch.no_grad():
        values, ids = target(x).float().topk(k, dim=-1)
    return values.softmax(-1), ids


def sparse_distill_loss(draft: Decoder, x: Tensor, q_top: Tensor, ids: Tensor) -> Tensor:
    """Cross entropy from the target's top-k distribution to the draft's softmax over the
    tokens in the batch's top-k sets."""
    candidates, where = ids.unique(return_inverse=True)  # (C,), (B, L, k) index into candidates
    h = draft.features(x)  # (B, L, D)
    logits = h @ draft.head.weight[candidates].T  # (B, L, C)
    logp = logits.log_softmax(-1).gather(-1, where)
    return -(q_top * logp).sum(-1).mean()


@torch.no_grad()
def evaluate(draft: Decoder, target: Callable[[Tensor], Tensor], chunks: Sequence[Tensor]) -> dict:
    """Held-out expected acceptance at T=1 (mean of sum_x min(p, q)) and greedy agreement."""
    accept, agree, n = 0.0, 0.0, 0
    for x in chunks:
        q = target(x[None]).float()[0].softmax(-1)
        p = draft(x[None]).float()[0].softmax(-1)
        accept += float(torch.minimum(p, q).sum(-1).sum())
        agree += float((p.argmax(-1) == q.argmax(-1)).sum())
        n += x.numel()
    return {"acceptance_t1": accept / n, "greedy_agreement": agree / n, "tokens": n}


def distill(draft: Decoder, target: Callable[[Tensor], Tensor], tokenize: Callable[[str], list[int]],
            train: Sequence[Path], held_out: Sequence[Path], cfg: DistillConfig,
            log: Callable[[str], None] = print, budget: Budget | None = None) -> dict:
    """Train ``draft`` in place; returns held-out metrics before and after, and the history.

    ``budget`` (default: ``cfg.max_minutes`` from now) is the deadline of the whole run; pass
    one started earlier to count what came before (loading the models)."""
    budget = budget or Budget(cfg.max_minutes * 60)
    torch.manual_seed(cfg.seed)
    eval_iter = token_chunks(held_out, tokenize, cfg.seq_len, seed=cfg.seed + 1)
    eval_set = [next(eval_iter) for _ in range(cfg.eval_chunks)]
    t = budget.clock()
    before = evaluate(draft.eval(), target, eval_set)
    reserve = budget.clock() - t  # the final evaluation costs the same
    log(f"held-out before: acceptance(T=1) {before['acceptance_t1']:.3f}, "
        f"greedy agreement {before['greedy_agreement']:.3f} on {before['tokens']} tokens")
    for p in draft.parameters():
        p.requires_grad_(False)
    trainable = [p for n, p in draft.named_parameters() if n.startswith(("blocks.", "norm."))]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    # 1. the target labels the corpus once: top-k distributions of (N, seq_len) chunks
    chunks = token_chunks(train, tokenize, cfg.seq_len, seed=cfg.seed)
    xs, qs, ids = [], [], []
    start = budget.clock()
    label_until = start + cfg.label_share * (budget.deadline - reserve - start)
    bar = tqdm(total=cfg.label_tokens, desc="labelling", unit="tok", unit_scale=True, disable=None, leave=False)
    for _ in budget.steps(label_until):
        if len(xs) * cfg.batch_size * cfg.seq_len >= cfg.label_tokens:
            break
        x = torch.stack([next(chunks) for _ in range(cfg.batch_size)])
        q_top, top_ids = target_topk(target, x, cfg.top_k)
        xs.append(x)
        qs.append(q_top.half())
        ids.append(top_ids)
        bar.update(x.numel())
    bar.close()
    if not xs:
        raise GenerateError(f"max_minutes={cfg.max_minutes}: no time left to label a single batch "
                            "after the held-out evaluation; give the run more minutes")
    x_all, q_all, id_all = torch.cat(xs), torch.cat(qs), torch.cat(ids)
    label_seconds = budget.clock() - start
    log(f"target labelled {x_all.numel()} tokens in {label_seconds:.0f}s")
    # 2. the draft trains on minibatches of the labels
    g = torch.Generator().manual_seed(cfg.seed)
    history, start, step = [], budget.clock(), 0
    draft.train()
    bar = tqdm(total=cfg.steps, desc="training", unit="step", disable=None, leave=False)
    for _ in budget.steps(budget.deadline - reserve):
        if step >= cfg.steps:
            break
        pick = torch.randint(0, len(x_all), (cfg.batch_size,), generator=g)
        lr = cfg.lr * min(1.0, (step + 1) / 10) * (1 - step / cfg.steps * 0.9)  # warm-up, decay
        for group in opt.param_groups:
            group["lr"] = lr
        loss = sparse_distill_loss(draft, x_all[pick], q_all[pick].float(), id_all[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        history.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(loss=f"{history[-1]:.3f}")
        if step % 25 == 0 or step == 1:
            bar.clear()
            log(f"step {step}: loss {history[-1]:.3f} ({budget.clock() - start:.0f}s)")
    bar.close()
    train_seconds = budget.clock() - start
    draft.eval()
    for p in draft.parameters():
        p.requires_grad_(True)
    after = evaluate(draft, target, eval_set)
    log(f"held-out after {step} steps on {x_all.numel()} labelled tokens: "
        f"acceptance(T=1) {after['acceptance_t1']:.3f}, greedy agreement {after['greedy_agreement']:.3f}")
    return {"before": before, "after": after, "steps": step, "labelled_tokens": x_all.numel(),
            "label_seconds": label_seconds, "train_seconds": train_seconds,
            "seconds": budget.clock() - budget.start, "loss": history,
            "train_files": len(train), "held_out_files": len(held_out)}
