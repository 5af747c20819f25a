"""Distil a small tubelet decoder (the draft) from a target causal LM on a text corpus.

The draft starts as a copy of the target's first layers (same tokenizer, embedding, final norm
and head) and learns to match the target's next-token distributions: the loss is the cross
entropy from the target's top-k distribution (renormalised) to the draft's softmax taken over
the tokens that appear in any top-k of the batch (a sampled softmax: the full 49k-way head is
the dominant cost on a CPU), or with ``loss="tv"`` the total variation between the two, which
is what acceptance at T = 1 depends on (:func:`sparse_divergence`); ``round_loss`` gives the
rounds below their own (tv is for a draft that is already close: from the start it trained a
feature draft to less acceptance than kl). The embedding / head stay frozen; the blocks and
final norm train.

A feature draft (:class:`~tubelet.models.decoder.FeatureDraftModel`, EAGLE) learns the same way
from the target's features: the labels also keep the target's final hidden states (bfloat16,
1,152 bytes a token for SmolLM2), and :func:`feature_distill_loss` trains it at the two depths
it drafts at (after the target's feature, after its own).

A run has stages, each ending with a held-out acceptance report:

1. **label**: the target runs once over ``label_tokens`` tokens of the corpus (its forward
   pass is by far the most expensive part); its top-k log-probabilities are stored on disk
   (:class:`LabelStore`: shards of token ids, top-k ids and float16 log-probabilities);
2. **train**: ``steps`` minibatches drawn from those labels, warm-up then cosine decay, the
   matrix products in bfloat16 where ``train_precision`` says so (weights and optimiser float32);
3. **round r** (``rounds`` of them): the draft continues prompts from the corpus by sampling at
   temperature 1 (on-policy, as in DistillSpec / GKD); for a feature draft, which cannot write
   without its target, the target writes, which is the text the draft meets when decoding. The
   target labels what was written, and the draft trains ``round_steps`` more steps on half
   round, half corpus batches.

Several corpora (code and English, say) are read in turn, so that a small one gives as many
labels as a large one until it has all been read (:func:`mixed_chunks`).

With an output folder everything is kept there and a run can stop at any moment:
``labels/`` (shards written whole, so at most one shard of labelling is lost),
``checkpoints/`` (the draft, its optimiser, the sampling generator and the report, every
``checkpoint_minutes`` and at the end of each stage), the current draft (``config.json`` +
``model.safetensors``), the target's probability of each token summed over the labels
(``token_mass.safetensors``: which tokens a reduced draft vocabulary ``vocab:N`` keeps), the
draft temperature to decode with (``sampling.json``, below) and ``distill.json`` after each stage.
``resume=True`` continues from there: labelled tokens are not labelled again, and a resumed run
trains exactly as one that was never stopped.

``max_minutes`` bounds the whole run: a labelling batch or a training step starts only if
the longest one so far still ends in time, with the time of the final evaluation kept aside;
labelling takes at most ``label_share`` of the time left while training is still to come.
Evaluation on held-out files reports what decoding will see: the expected acceptance rate of
sampling at temperature 1, sum_x min(p(x), q(x)), and the greedy agreement; where the labelling
target is a tubelet decoder, also the acceptance on the second half of the held-out sequences
as the target rewrites it at temperature 1 (``acceptance_t1_written``). On that text (on the
held-out files where there is none) each report also gives the acceptance with the draft's logits
divided by each of :data:`DRAFT_TEMPERATURES`: a draft distilled to the target's distributions
spreads its mass where it is unsure, and a temperature below 1 accepts more. The best is saved
with the draft, which decodes with it (:class:`~tubelet.generate.drafts.ModelDraft`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from ..errors import GenerateError
from ..fileio import atomic_write, dumps_json, write_text_atomic
from ..models.decoder import Decoder, FeatureDraftModel
from .drafts import save_draft_sampling

LABELS = "labels"
LABELS_META = "meta.json"
CORPUS_LIST = "corpus.txt"  # beside it: the files the corpus digest covers, "size<TAB>path" a line
LABELS_FORMAT = "tubelet-distill-labels"
CORPUS = "corpus"  # the pool of labels of corpus text; rounds add "round-1", "round-2", ...
# what each recorded property of the labels is called on the command line
SETTING = {"target": "--target", "precision": "--label-precision", "seq_len": "--seq-len", "top_k": "--top-k",
           "seed": "--seed", "corpus": "the files of --corpus", "features": "--kind"}
FEATURE_LOSS_WEIGHT = 0.1  # of the regression of a feature draft's features, beside sparse_divergence
LOSSES = ("kl", "tv")  # of sparse_divergence
DRAFT_TEMPERATURES = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1)  # tried on held-out text after each stage


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
    label_share: float = 0.5  # of the time left while training is to come, at most for labelling
    lr: float = 1e-3
    top_k: int = 32
    eval_chunks: int = 8
    seed: int = 0
    rounds: int = 0  # rounds on written text after the corpus stage
    round_tokens: int = 8192  # tokens per round the target labels, half of them written
    round_steps: int = 100
    round_lr: float = 3e-4
    loss: str = "kl"  # what training minimises (LOSSES)
    round_loss: str | None = None  # the rounds' loss; None: ``loss``
    shard_tokens: int = 65536  # labels per file on disk
    checkpoint_minutes: float = 5.0
    train_precision: str = "fp32"  # "bf16": matrix products in bfloat16 (autocast), weights in float32


# ------------------------------------------------------------------------------- the corpus
def corpus_files(pattern: str | Sequence[str], holdout_every: int = 10) -> tuple[list[Path], list[Path]]:
    """Files matching a glob (``**`` allowed) or the ``.py`` files under a folder, split into
    (train, held-out): every ``holdout_every``-th file in sorted order is held out. Several
    patterns (code and English, say) are split each on its own, so each keeps a held-out tenth."""
    parts = corpus_parts([pattern] if isinstance(pattern, str) else pattern, holdout_every)
    return [f for t, _ in parts for f in t], [f for _, h in parts for f in h]


def corpus_parts(patterns: Sequence[str | Sequence[str]], holdout_every: int = 10
                 ) -> list[tuple[list[Path], list[Path]]]:
    """(train, held-out) files of each pattern, as :func:`corpus_files` splits them. A pattern may
    be a list of globs, files and folders (a glob the shell expanded): their files form one corpus."""
    parts = []
    for pattern in patterns:
        group = [pattern] if isinstance(pattern, str) else list(pattern)
        found = set()
        for one in group:
            path = Path(one)
            found.update(path.rglob("*.py") if path.is_dir() else map(Path, glob.glob(one, recursive=True)))
        files = sorted(f for f in found if f.is_file() and f.stat().st_size > 0)
        if len(files) < 2:
            named = group[0] if len(group) == 1 else f"{group[0]} and {len(group) - 1} more"
            raise FileNotFoundError(f"{named}: found {len(files)} text files; need at least 2 "
                                    "(some for training, some held out)")
        held = files[::holdout_every]
        held_set = set(held)
        parts.append(([f for f in files if f not in held_set], held))
    return parts


def token_chunks(files: Sequence[Path], tokenize: Callable[[str], list[int]], seq_len: int,
                 seed: int, max_chars: int = 20000) -> Iterator[Tensor]:
    """Endless (seq_len,) chunks of token ids from randomly ordered files."""
    rng = random.Random(seed)
    while True:
        yield from _one_pass(files, tokenize, seq_len, rng, max_chars)


def _one_pass(files: Sequence[Path], tokenize: Callable[[str], list[int]], seq_len: int, rng: random.Random,
              max_chars: int = 20000) -> Iterator[Tensor]:
    """The chunks of every file once, files in random order (at most ``max_chars`` of each, from a
    random place)."""
    order = list(files)
    rng.shuffle(order)
    for f in order:
        text = f.read_text(errors="replace")
        if len(text) > max_chars:
            start = rng.randrange(len(text) - max_chars)
            text = text[start:start + max_chars]
        ids = tokenize(text)
        for i in range(0, len(ids) - seq_len + 1, seq_len):
            yield torch.tensor(ids[i:i + seq_len])


def mixed_chunks(groups: Sequence[Sequence[Path]], tokenize: Callable[[str], list[int]], seq_len: int,
                 seed: int) -> Iterator[Tensor]:
    """Endless chunks taken in turn from each group of files (one group per corpus), so that a small
    corpus is not drowned by a large one, yet nothing is taken twice before every group has been
    read once: a group that has given all its files waits for the others, then all start again.
    With one group, the chunks of :func:`token_chunks`."""
    rngs = [random.Random(seed + 7919 * i) for i in range(len(groups))]
    while True:
        passes = [_one_pass(g, tokenize, seq_len, rng) for g, rng in zip(groups, rngs)]
        while passes:
            for it in list(passes):
                chunk = next(it, None)
                if chunk is None:
                    passes.remove(it)
                else:
                    yield chunk


def corpus_digest(files: Sequence[Path]) -> str:
    """A short digest of which files (paths and sizes) a run labels: a resumed run must see the same."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f}\0{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def trained_files(folder: str | Path) -> set[str] | None:
    """The files a draft distilled in ``folder`` trained on (its labels' :data:`CORPUS_LIST`), or
    None when it does not list them (a run from before the list, or a draft from elsewhere)."""
    listing = Path(folder) / LABELS / CORPUS_LIST
    if not listing.is_file():
        return None
    return {line.partition("\t")[2] for line in listing.read_text().splitlines() if line}


def corpus_change(before: Sequence[str], now: Sequence[str]) -> str:
    """What differs between two listings of :data:`CORPUS_LIST` ("size<TAB>path" lines), in words,
    with a few paths of each kind."""
    def sizes(lines: Sequence[str]) -> dict[str, str]:
        return {path: size for size, _, path in (line.partition("\t") for line in lines if line)}
    old, new = sizes(before), sizes(now)
    kinds = [("added", sorted(set(new) - set(old))), ("removed", sorted(set(old) - set(new))),
             ("changed size", sorted(p for p in set(old) & set(new) if old[p] != new[p]))]
    told = [f"{len(paths)} {kind} (e.g. {', '.join(paths[:3])})" for kind, paths in kinds if paths]
    said = "; ".join(told) or "the same files in another order"
    if any("site-packages" in p or "dist-packages" in p for _, paths in kinds for p in paths):
        said += (". A glob over the Python installation (the standard library's **/*.py) also matches "
                 "site-packages, which pip install changes")
    return said


@contextlib.contextmanager
def quiet_mixed_norms() -> Iterator[None]:
    """Under bf16 autocast an RMSNorm gets bf16 inputs and its float32 weight, and torch warns
    that it cannot use its fused kernel; the unfused one gives the same result, so the warning,
    which reads like a fault, is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight", category=UserWarning)
        yield


# ------------------------------------------------------------------------------- labels
def target_topk(target: Callable[[Tensor], Tensor], x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The target's top-k next-token log-probabilities at every position: (logp, ids) (B, L, k),
    log-probabilities under the full softmax (their exp sums to the mass the top-k hold)."""
    with torch.no_grad():
        logp = target(x).float().log_softmax(-1)
        values, ids = logp.topk(k, dim=-1)
    return values, ids


@dataclass
class Labels:
    """The target's top-k at every position of ``tokens`` (N, L): ``ids`` and ``logprobs`` (N, L, k),
    and for a feature draft its final hidden states ``features`` (N, L, D), bfloat16."""

    tokens: Tensor
    ids: Tensor
    logprobs: Tensor
    features: Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, pick: Tensor, device: torch.device) -> Labels:
        """The rows ``pick`` on ``device`` (the labels stay in host memory)."""
        features = None if self.features is None else self.features[pick].to(device)
        return Labels(self.tokens[pick].to(device), self.ids[pick].to(device), self.logprobs[pick].to(device),
                      features)

    @staticmethod
    def cat(parts: Sequence[Labels]) -> Labels:
        features = None if parts[0].features is None else torch.cat([p.features for p in parts])
        return Labels(torch.cat([p.tokens for p in parts]), torch.cat([p.ids for p in parts]),
                      torch.cat([p.logprobs for p in parts]), features)


def _listing(files: Sequence[Path]) -> list[str]:
    return [f"{f.stat().st_size}\t{f}" for f in files]


class LabelStore:
    """Labels by pool (``corpus``, ``round-1``, ...), in memory and, with a folder, on disk.

    On disk: ``meta.json`` (what was labelled how: a resumed run must match it) and
    ``{pool}-{n:05d}.safetensors`` shards, each written whole: ``tokens`` (N, L) int32,
    ``ids`` (N, L, k) int32, ``logprobs`` (N, L, k) float16, for a feature draft ``features``
    (N, L, D) bfloat16. Rows are buffered and written
    every ``shard_tokens`` tokens and by :meth:`flush`."""

    def __init__(self, folder: Path | None, meta: dict[str, Any], shard_tokens: int = 65536,
                 files: Sequence[Path] = (), corpus_changed: bool = False) -> None:
        """``files``: those ``meta["corpus"]`` digests, listed in :data:`CORPUS_LIST` so that a resume
        on other files says which; ``corpus_changed``: take labels of other files than ``files``
        (``changed`` then says what differs, and the folder records ``files`` from now on)."""
        self.folder, self.meta, self.shard_tokens = folder, meta, shard_tokens
        self.pools: dict[str, list[Labels]] = {}
        self.buffer: dict[str, list[Labels]] = {}
        self.changed: str | None = None
        if folder is None:
            return
        meta_path = folder / LABELS_META
        if meta_path.is_file():
            try:
                saved = json.loads(meta_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise GenerateError(f"cannot read {meta_path} ({e}); delete {folder} to label again") from None
            listing = folder / CORPUS_LIST
            for key, value in meta.items():
                if saved.get(key) == value:
                    continue
                if key == "corpus" and corpus_changed:
                    before = listing.read_text().splitlines() if listing.is_file() else []
                    self.changed = corpus_change(before, _listing(files)) if before else "not listed before"
                    continue
                if key == "corpus" and listing.is_file():
                    raise GenerateError(
                        f"{folder} holds labels of other files than --corpus matches now: "
                        f"{corpus_change(listing.read_text().splitlines(), _listing(files))}. Resume with "
                        f"the files of {listing}, add --corpus-changed to go on with the files as they are "
                        "now (the labels on disk are kept), or start a new --out")
                raise GenerateError(
                    f"{folder} holds labels made with {key}={saved.get(key)!r}, not {value!r} "
                    f"({SETTING.get(key, key)}): resume with the same settings, or start a new --out")
            for shard in sorted(folder.glob("*.safetensors")):
                self.pools.setdefault(shard.name.rsplit("-", 1)[0], []).append(self._read(shard))
            if self.changed is not None:  # the files from now on
                write_text_atomic(listing, "".join(line + "\n" for line in _listing(files)))
                write_text_atomic(meta_path, dumps_json({**saved, "corpus": meta["corpus"]}, indent=1) + "\n")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / CORPUS_LIST, "".join(line + "\n" for line in _listing(files)))
            write_text_atomic(meta_path, dumps_json({"format": LABELS_FORMAT, **meta}, indent=1) + "\n")

    @staticmethod
    def _read(path: Path) -> Labels:
        try:
            t = load_file(str(path))
            labels = Labels(t["tokens"].long(), t["ids"].long(), t["logprobs"], t.get("features"))
        except (OSError, SafetensorError, KeyError) as e:
            raise GenerateError(f"cannot read the labels in {path} ({e}); delete that file and resume: "
                                "its rows are labelled again") from None
        n, L = labels.tokens.shape
        features = labels.features
        if labels.ids.shape[:2] != (n, L) or labels.logprobs.shape != labels.ids.shape or \
                (features is not None and features.shape[:2] != (n, L)):
            raise GenerateError(f"{path}: tokens {tuple(labels.tokens.shape)}, ids {tuple(labels.ids.shape)} "
                                f"and logprobs {tuple(labels.logprobs.shape)} do not fit together; "
                                "delete that file and resume")
        return labels

    def rows(self, pool: str) -> int:
        return sum(len(p) for p in self.pools.get(pool, []) + self.buffer.get(pool, []))

    def tokens(self, pool: str) -> int:
        return self.rows(pool) * self.meta["seq_len"]

    def total_tokens(self) -> int:
        return sum(self.tokens(p) for p in set(self.pools) | set(self.buffer))

    def add(self, pool: str, labels: Labels) -> None:
        self.buffer.setdefault(pool, []).append(labels)
        if sum(len(p) for p in self.buffer[pool]) * self.meta["seq_len"] >= self.shard_tokens:
            self.flush(pool)

    def flush(self, pool: str | None = None) -> None:
        for name in [pool] if pool else list(self.buffer):
            parts = self.buffer.pop(name, [])
            if not parts:
                continue
            shard = Labels.cat(parts)
            self.pools.setdefault(name, []).append(shard)
            if self.folder is not None:
                index = len(self.pools[name]) - 1
                tensors = {"tokens": shard.tokens.int().contiguous(), "ids": shard.ids.int().contiguous(),
                           "logprobs": shard.logprobs.half().contiguous()}
                if shard.features is not None:
                    tensors["features"] = shard.features.to(torch.bfloat16).contiguous()
                atomic_write(self.folder / f"{name}-{index:05d}.safetensors",
                             lambda tmp: save_file(tensors, tmp, metadata={"pool": name}))

    def pool(self, *names: str) -> Labels | None:
        parts = [p for n in names for p in self.pools.get(n, [])]
        return Labels.cat(parts) if parts else None

    def token_mass(self, pool: str, vocab_size: int) -> Tensor:
        """(V,) the target's top-k probabilities summed per token over the pool's labels."""
        mass = torch.zeros(vocab_size, dtype=torch.float64)
        for part in self.pools.get(pool, []) + self.buffer.get(pool, []):
            mass.index_add_(0, part.ids.flatten(), part.logprobs.flatten().double().exp())
        return mass


# ------------------------------------------------------------------------------- training
def sparse_distill_loss(draft: Decoder, x: Tensor, logp_top: Tensor, ids: Tensor, loss: str = "kl") -> Tensor:
    """:func:`sparse_divergence` of the draft's next-token distributions from the target's top-k."""
    return sparse_divergence(draft.features(x), draft.head.weight, logp_top, ids, loss)


def sparse_divergence(h: Tensor, head: Tensor, logp_top: Tensor, ids: Tensor, loss: str = "kl") -> Tensor:
    """How far the draft's softmax over the tokens in the batch's top-k sets (hidden states h
    (B, L, D) under the head's rows (V, D)) is from the target's top-k at each position, by
    ``loss`` (:data:`LOSSES`):

    - ``"kl"``: cross entropy from the target's top-k distribution, renormalised (the forward KL
      up to a constant);
    - ``"tv"``: the L1 distance between the two over the target's top-k tokens and, as one more
      outcome, everything else (the target's mass outside its top-k), i.e. twice the total
      variation of that coarser distribution: one minus the total variation is the acceptance
      rate at T = 1, which this loss raises directly (as DistillSpec, Zhou et al. 2023, notes)."""
    candidates, where = ids.unique(return_inverse=True)  # (C,), (B, L, k) index into candidates
    logits = h @ head[candidates].T  # (B, L, C)
    logp = logits.log_softmax(-1).gather(-1, where)
    if loss == "kl":
        return -(logp_top.float().softmax(-1) * logp).sum(-1).mean()
    if loss != "tv":
        raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    p, q = logp_top.float().exp(), logp.float().exp()
    return ((p - q).abs().sum(-1) + (p.sum(-1) - q.sum(-1)).abs()).mean()


def shifted(features: Tensor) -> Tensor:
    """(B, L, D) features -> the feature of the token before each one (zeros for the first)."""
    return torch.cat([torch.zeros_like(features[:, :1]), features[:, :-1]], dim=1)


def feature_distill_loss(draft: FeatureDraftModel, x: Tensor, features: Tensor, logp_top: Tensor,
                         ids: Tensor, loss: str = "kl") -> Tensor:
    """The loss of a feature draft, at two depths: each token entering with the target's feature of
    the token before (the first token a step drafts), then with the draft's own prediction of it
    (the tokens after). At each: :func:`sparse_divergence` by ``loss``, plus ``FEATURE_LOSS_WEIGHT`` times
    the smooth L1 distance to the target's features (EAGLE's regression)."""
    total = 0.0
    previous = shifted(features)
    for _ in range(2):
        h = draft.features(x, previous)
        total = total + sparse_divergence(h, draft.head.weight, logp_top, ids, loss) + \
            FEATURE_LOSS_WEIGHT * torch.nn.functional.smooth_l1_loss(h.float(), features.float())
        previous = shifted(h)
    return total / 2


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps (at most 100), then cosine decay to peak / 10."""
    warmup = max(1, min(100, steps // 20))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def evaluate(draft: Decoder | FeatureDraftModel, target: Callable[[Tensor], Tensor] | Decoder,
             chunks: Sequence[Tensor], first: int = 0, temperatures: Sequence[float] = ()) -> dict:
    """Held-out expected acceptance at T=1 (mean of sum_x min(p, q)) and greedy agreement, over
    the positions from ``first`` on of each chunk.

    A feature draft needs its target as a :class:`Decoder` (for its features); its figures are
    those of the first token a step drafts (the token before entering with the target's
    feature), and ``acceptance_t1_depth2`` that of the tokens after (with the draft's own).
    ``temperatures``: also the acceptance with the draft's logits divided by each (the target's
    are not), in ``acceptance_t1_by_draft_temperature``; for a feature draft the mean of its two
    depths, as a step drafts at both."""
    accept, agree, deeper, n = 0.0, 0.0, 0.0, 0
    tempered = dict.fromkeys(temperatures, 0.0)
    device = next(draft.parameters()).device
    for x in chunks:
        x = x.to(device)
        if isinstance(draft, FeatureDraftModel):
            f = target.features(x[None])
            h = draft.features(x[None], shifted(f))
            q = target.head(f).float()[0, first:].softmax(-1)
            z = [draft.head(h).float()[0, first:], draft(x[None], shifted(h)).float()[0, first:]]
            deeper += float(torch.minimum(z[1].softmax(-1), q).sum(-1).sum())
        else:
            q = target(x[None]).float()[0, first:].softmax(-1)
            z = [draft(x[None]).float()[0, first:]]
        p = z[0].softmax(-1)
        accept += float(torch.minimum(p, q).sum(-1).sum())
        agree += float((p.argmax(-1) == q.argmax(-1)).sum())
        n += len(q)
        for t in tempered:
            tempered[t] += sum(float(torch.minimum((d / t).softmax(-1), q).sum(-1).sum()) for d in z) / len(z)
    out = {"acceptance_t1": accept / n, "greedy_agreement": agree / n, "tokens": n}
    if isinstance(draft, FeatureDraftModel):
        out["acceptance_t1_depth2"] = deeper / n
    if tempered:
        out["acceptance_t1_by_draft_temperature"] = {t: a / n for t, a in tempered.items()}
    return out


def best_draft_temperature(by_temperature: dict[float, float]) -> float:
    """The draft temperature of most acceptance (1.0 unless another gains more than 0.001)."""
    best = max(by_temperature, key=by_temperature.get)
    return best if by_temperature[best] > by_temperature.get(1.0, 0.0) + 1e-3 else 1.0


class Distillation:
    """One run of the stages of the module docstring; :func:`distill` is the entry point."""

    def __init__(self, draft: Decoder | FeatureDraftModel, target: Callable[[Tensor], Tensor] | Decoder,
                 tokenize: Callable[[str], list[int]],
                 train: Sequence[Sequence[Path]], held_out: Sequence[Sequence[Path]], cfg: DistillConfig,
                 log: Callable[[str], None],
                 budget: Budget, out: Path | None, label_target: Callable[[Tensor], Tensor] | None,
                 meta: dict[str, Any], about: dict[str, Any], corpus_changed: bool = False) -> None:
        self.draft, self.target, self.tokenize = draft, target, tokenize
        self.device = next(draft.parameters()).device  # the target's too; labels stay in host memory
        self.label_target = label_target or target
        self.features = isinstance(draft, FeatureDraftModel)  # the labels keep the target's features
        if self.features and not (isinstance(self.label_target, Decoder) and isinstance(target, Decoder)):
            raise GenerateError("a feature draft learns from a target's features: pass the target (and "
                                "label_target) as a tubelet Decoder")
        for name in (cfg.loss, cfg.round_loss or cfg.loss):
            if name not in LOSSES:
                raise GenerateError(f"loss {name!r}: expected one of {', '.join(LOSSES)}")
        self.cfg, self.log, self.budget, self.out = cfg, log, budget, out
        self.train, self.held_out = train, held_out  # one group of files per corpus
        files = [f for g in train for f in g]
        self.store = LabelStore(out / LABELS if out else None, {
            **meta, "seq_len": cfg.seq_len, "top_k": cfg.top_k, "seed": cfg.seed, "corpus": corpus_digest(files),
            **({"features": True} if self.features else {})}, cfg.shard_tokens, files, corpus_changed)
        if self.store.changed:
            log(f"resuming on changed files ({self.store.changed}): the labels on disk are kept, what is "
                "still to label or to write from is read from the files as they are now")
        self.report: dict[str, Any] = {**about, "stages": [], "steps": 0, "seconds_by_stage": {}}
        self.trainable = [p for n, p in draft.named_parameters() if n.startswith(("blocks.", "norm.", "fc."))]
        self.reserve = 0.0  # seconds an evaluation takes, kept aside at the deadline
        self.seconds_before = 0.0
        self.finished = False
        self.latest: dict | None = None  # the last measurement (_measure) of this run

    # ---- stages ----------------------------------------------------------------------------
    def run(self, resume: bool) -> dict:
        torch.manual_seed(self.cfg.seed)
        eval_iter = mixed_chunks(self.held_out, self.tokenize, self.cfg.seq_len, seed=self.cfg.seed + 1)
        self.eval_set = [next(eval_iter) for _ in range(self.cfg.eval_chunks)]
        self.written = self._written()
        state = self._resume() if resume else None
        if not self.report["stages"]:
            self._evaluate("start")
        else:  # resumed: time one held-out sequence to know what the final evaluation costs
            t = self.budget.clock()
            evaluate(self.draft.eval(), self.target, self.eval_set[:1])
            self.reserve = (self.budget.clock() - t) * (len(self.eval_set) + len(self.written))
        stages = [("train", CORPUS, self.cfg.steps, self.cfg.lr)] + [
            (f"round {r}", f"round-{r}", self.cfg.round_steps, self.cfg.round_lr)
            for r in range(1, self.cfg.rounds + 1)]
        done = {s["stage"] for s in self.report["stages"]}
        saved = False
        for i, (name, pool, steps, lr) in enumerate(stages):  # i: the round (0 for the corpus stage)
            if name in done:
                continue
            if not self._label(pool, i):
                break
            resumed = state if state is not None and state["stage"] == name else None
            if not self._train(name, i, pool, steps, lr, resumed):
                break
            self._evaluate(name)
            self._save_draft()
            saved = True
        else:
            self.finished = True
        self.store.flush()
        report = self.report
        final = report["stages"][-1]
        report.update({"finished": self.finished, "before": report["stages"][0], "after": final,
                       "labelled_tokens": self.store.tokens(CORPUS),
                       "round_tokens": sum(self.store.tokens(f"round-{r}") for r in range(1, self.cfg.rounds + 1)),
                       "seconds": self._seconds(),
                       "train_files": sum(map(len, self.train)), "held_out_files": sum(map(len, self.held_out)),
                       "config": asdict(self.cfg)})
        if not self.finished:
            self._evaluate_stopped()
        if not (self.finished and saved):  # also a finished run resumed: its files as this version writes them
            self._save_draft()
        self._write_report()
        return report

    def _written(self) -> list[Tensor]:
        """The held-out chunks with their second half written by the target at temperature 1 (where
        the labelling target is a tubelet decoder): the text a draft meets when decoding."""
        if not isinstance(self.label_target, Decoder) or not self.eval_set:
            return []
        written = []
        for i in range(0, len(self.eval_set), self.cfg.batch_size):  # round 0 of the seeds: no round has it
            x = torch.stack(self.eval_set[i:i + self.cfg.batch_size])
            written += self._continue(x, [[self.cfg.seed, 0, i + b] for b in range(len(x))], self.label_target)
        return written

    def _measure(self) -> dict:
        """:func:`evaluate` on the held-out chunks, and the acceptance on what the target wrote; the
        acceptance by draft temperature on the latter (on the held-out chunks without it)."""
        self.draft.eval()
        written = evaluate(self.draft, self.target, self.written, first=self.cfg.seq_len // 2 - 1,
                           temperatures=DRAFT_TEMPERATURES) if self.written else None
        result = evaluate(self.draft, self.target, self.eval_set, temperatures=() if written else DRAFT_TEMPERATURES)
        if written:
            result["acceptance_t1_written"] = written["acceptance_t1"]
            result["acceptance_t1_by_draft_temperature"] = written["acceptance_t1_by_draft_temperature"]
        return result

    def _evaluate(self, stage: str) -> None:
        t = self.budget.clock()
        result = self._measure()
        self.reserve = max(self.reserve, self.budget.clock() - t)
        result = {"stage": stage, **result, "steps": self.report["steps"],
                  "labelled_tokens": self.store.total_tokens()}
        self.report["stages"].append(result)
        self.latest = result
        written = f" ({result['acceptance_t1_written']:.3f} on what the target wrote)" if self.written else ""
        by_t = result["acceptance_t1_by_draft_temperature"]
        t = best_draft_temperature(by_t)
        tempered = f"; draft temperature {t:g}: {by_t[1.0]:.3f} -> {by_t[t]:.3f}" if t != 1.0 else ""
        self.log(f"held-out after {stage}: acceptance(T=1) {result['acceptance_t1']:.3f}{written}, "
                 f"greedy agreement {result['greedy_agreement']:.3f} on {result['tokens']} tokens{tempered}")
        self._write_report()

    def _evaluate_stopped(self) -> None:
        """At the deadline: how good the draft is now (not a stage: a resumed run goes on)."""
        now = self._measure()
        self.report["after"] = self.latest = {"stage": "stopped", **now, "steps": self.report["steps"]}
        self.log(f"stopped by the time limit: held-out acceptance(T=1) {now['acceptance_t1']:.3f}; "
                 "run again with --resume to go on")

    def _label(self, pool: str, round_no: int) -> bool:
        """Bring ``pool`` to its size (round 0: the corpus), in at most ``label_share`` of the time
        left (training follows); False when the deadline stopped a round's labelling."""
        cfg, store = self.cfg, self.store
        want = cfg.round_tokens if round_no else cfg.label_tokens
        have = store.tokens(pool)
        if have >= want:
            return True
        start = self.budget.clock()
        until = start + cfg.label_share * (self.budget.deadline - self.reserve - start)
        rows = store.rows(pool)
        # a round's prompts: other chunks of the corpus (their first half)
        stream = mixed_chunks(self.train, self.tokenize, cfg.seq_len, seed=cfg.seed + 1000 * round_no)
        for _ in range(rows):  # what earlier runs labelled
            next(stream)
        verb = "labelling" if pool == CORPUS else \
            f"{pool}: the {'target' if self.features else 'draft'} writes, the target labels"
        bar = tqdm(total=want, initial=have, desc=verb, unit="tok", unit_scale=True, disable=None, leave=False)
        tenth, said = max(1, (want - have) // 10), have  # a line per tenth: a log file shows the progress too
        batch_index = rows // cfg.batch_size
        try:
            for _ in self.budget.steps(until):
                if store.tokens(pool) >= want:
                    break
                x = torch.stack([next(stream) for _ in range(cfg.batch_size)])
                if round_no:
                    x = self._continue(x, seed=[[cfg.seed, round_no, batch_index, b] for b in range(len(x))])
                on_device = x.to(self.device)
                if self.features:
                    with torch.no_grad():
                        h = self.label_target.features(on_device)
                    logp, ids = target_topk(lambda _: self.label_target.head(h), on_device, cfg.top_k)
                    store.add(pool, Labels(x, ids.cpu(), logp.half().cpu(), h.to(torch.bfloat16).cpu()))
                else:
                    logp, ids = target_topk(self.label_target, on_device, cfg.top_k)
                    store.add(pool, Labels(x, ids.cpu(), logp.half().cpu()))
                batch_index += 1
                bar.update(x.numel())
                now = store.tokens(pool)
                if now - said >= tenth and now < want:
                    said, rate = now, (now - have) / max(self.budget.clock() - start, 1e-9)
                    left = (want - now) / rate
                    when = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
                    bar.clear()
                    self.log(f"{verb}: {now} of {want} tokens ({rate:.0f} tokens/s, about {when} left)")
        finally:  # also on Ctrl-C: what was labelled is kept
            bar.close()
            store.flush(pool)
        seconds = self.budget.clock() - start
        self._add_seconds(pool, seconds)
        self.log(f"{pool}: {store.tokens(pool)} labelled tokens ({store.tokens(pool) - have} new in {seconds:.0f}s)")
        if store.tokens(pool) < want:
            if store.tokens(pool) == 0:
                raise GenerateError(f"max_minutes={cfg.max_minutes}: no time left to label a single batch "
                                    "after the held-out evaluation; give the run more minutes")
            return round_no == 0  # the corpus stage trains on what it has; a round stops
        return True

    def _continue(self, x: Tensor, seed: list, writer: Decoder | None = None) -> Tensor:
        """Keep the first half of each chunk and let ``writer`` write the rest (temperature 1): by
        default the draft (a decoder draft's on-policy round), the target for a feature draft (it
        cannot write without its target, and with it writes what the target would)."""
        from .autoregressive import autoregressive_generate
        from .models import TubeletLM
        from .sampling import Sampling
        writer = writer or (self.label_target if self.features else self.draft)
        half = x.shape[1] // 2
        out = autoregressive_generate(TubeletLM(writer.eval()), x[:, :half].tolist(), x.shape[1] - half,
                                      sampling=Sampling(temperature=1.0), seed=seed)
        return torch.cat([x[:, :half], torch.tensor(out.tokens, dtype=x.dtype)], dim=1)

    def _train(self, stage: str, index: int, pool: str, steps: int, lr: float, state: dict | None) -> bool:
        """``steps`` optimiser steps on ``pool`` (a round mixes in the corpus); False at the deadline."""
        cfg = self.cfg
        labels = self.store.pool(pool)
        corpus = self.store.pool(CORPUS) if pool != CORPUS else None
        opt = torch.optim.AdamW(self.trainable, lr=lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + index)  # the batches this stage draws
        step = 0
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            g.set_state(state["generator"])
            step = state["step"]
        for p in self.draft.parameters():
            p.requires_grad_(False)
        for p in self.trainable:
            p.requires_grad_(True)
        self.draft.train()
        objective = cfg.loss if pool == CORPUS else cfg.round_loss or cfg.loss
        said = self.report.setdefault("objective", {}).get(stage)  # the loss of each stage (a resume may change it)
        if said is None or not said.endswith(objective):
            self.report["objective"][stage] = objective if said is None else f"{said}, then {objective}"
        bf16 = cfg.train_precision == "bf16"
        start, last_save, losses, drawn = self.budget.clock(), self.budget.clock(), [], g.get_state()
        bar = tqdm(total=steps, initial=step, desc=stage, unit="step", disable=None, leave=False)
        try:
            for _ in self.budget.steps(self.budget.deadline - self.reserve):
                if step >= steps:
                    break
                drawn = g.get_state()  # a step stopped midway is taken again from here
                source = labels
                if corpus is not None and torch.rand((), generator=g) < 0.5:
                    source = corpus
                pick = torch.randint(0, len(source), (cfg.batch_size,), generator=g)
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step, steps, lr)
                batch = source.batch(pick, self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16), quiet_mixed_norms():
                    if self.features:
                        loss = feature_distill_loss(self.draft, batch.tokens, batch.features, batch.logprobs,
                                                    batch.ids, objective)
                    else:
                        loss = sparse_distill_loss(self.draft, batch.tokens, batch.logprobs, batch.ids, objective)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
                opt.step()
                step += 1
                self.report["steps"] += 1
                losses.append(float(loss.detach()))
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if step % 100 == 0 or step == 1:
                    bar.clear()
                    self.log(f"{stage} step {step}: loss {losses[-1]:.3f} ({self.budget.clock() - start:.0f}s)")
                if self.out is not None and self.budget.clock() - last_save >= cfg.checkpoint_minutes * 60:
                    self._checkpoint(stage, step, opt, g)
                    last_save = self.budget.clock()
        except KeyboardInterrupt:  # keep every step taken: --resume goes on from here
            if self.out is not None:
                bar.clear()
                self.log(f"interrupted: saving a checkpoint at {stage} step {step}")
                g.set_state(drawn)
                self._checkpoint(stage, step, opt, g)
            raise
        finally:
            bar.close()
            for p in self.draft.parameters():
                p.requires_grad_(True)
            self.draft.eval()
        self.report.setdefault("loss", {}).setdefault(stage, []).extend(losses)
        self._add_seconds(stage, self.budget.clock() - start)
        if step < steps:
            if self.out is not None:
                self._checkpoint(stage, step, opt, g)
            return False
        if self.out is not None:
            self._checkpoint(stage, step, opt, g, done=True)
        return True

    # ---- files -----------------------------------------------------------------------------
    def _seconds(self) -> float:
        """Seconds of the whole distillation: this run's, and earlier runs' up to their last checkpoint."""
        return self.seconds_before + self.budget.clock() - self.budget.start

    def _add_seconds(self, key: str, seconds: float) -> None:
        by = self.report["seconds_by_stage"]
        by[key] = by.get(key, 0.0) + seconds

    def _checkpoint(self, stage: str, step: int, opt: torch.optim.Optimizer, g: torch.Generator,
                    done: bool = False) -> None:
        from ..train.state import save_checkpoint
        self.store.flush()
        self.report["seconds"] = self._seconds()
        state = {"stage": stage, "step": step, "done": done, "optimizer": opt.state_dict(),
                 "generator": g.get_state(), "report": json.loads(dumps_json(self.report))}
        save_checkpoint(self.out, self.draft, state, self.report["steps"], save=lambda m, d: m.save(d))

    def _resume(self) -> dict | None:
        """Load the latest checkpoint of ``out``: the draft's weights, and the state of the stage it
        was in (None when that stage had ended or there is no checkpoint)."""
        from ..train.state import latest_checkpoint, read_state
        path = latest_checkpoint(self.out) if self.out is not None else None
        if path is None:
            self.log("resume: no checkpoint yet; labels already on disk are kept")
            return None
        state = read_state(path)
        try:
            weights = FeatureDraftModel.load(path, self.draft.embed.weight, self.draft.head.weight) \
                if self.features else Decoder.load(path)
        except (OSError, ValueError, SafetensorError) as e:
            raise GenerateError(f"cannot read the draft in {path} ({e}); delete that checkpoint folder and "
                                "resume from the one before") from None
        if weights.cfg != self.draft.cfg:
            raise GenerateError(f"{path} holds a draft with {weights.cfg.num_layers} layers "
                                f"(dim {weights.cfg.dim}), not this run's {self.draft.cfg.num_layers} "
                                f"(dim {self.draft.cfg.dim}): resume with the same --target and --layers")
        self.draft.load_state_dict(weights.state_dict())  # a feature draft's embedding and head: the same
        self.report = state["report"]
        self.seconds_before = self.report.get("seconds", 0.0)  # what earlier runs spent, to their checkpoint
        self.log(f"resumed from {path} ({state['stage']}, step {state['step']})")
        if state.get("done"):
            if not any(s["stage"] == state["stage"] for s in self.report["stages"]):
                self._evaluate(state["stage"])  # stopped between the stage's last step and its report
            return None
        return state

    def _save_draft(self) -> None:
        """The draft, which tokens its reduced vocabulary should keep (``vocab:N``), and the draft
        temperature of its last report (``DRAFT_SAMPLING``)."""
        from .vocab import save_token_mass
        if self.out is not None:
            self.draft.save(self.out)
            save_token_mass(self.out, self.store.token_mass(CORPUS, self.draft.cfg.vocab_size))
            latest = self.latest or (self.report["stages"] or [{}])[-1]
            by_t = {float(t): a for t, a in latest.get("acceptance_t1_by_draft_temperature", {}).items()}
            save_draft_sampling(self.out, best_draft_temperature(by_t) if by_t else 1.0, by_t)

    def _write_report(self) -> None:
        if self.out is not None:
            write_text_atomic(self.out / "distill.json", dumps_json(self.report, indent=1) + "\n")


def check_out(out: str | Path, resume: bool) -> None:
    """A new run needs an ``out`` without a distillation in it (labels or checkpoints)."""
    if not resume and ((Path(out) / LABELS).exists() or (Path(out) / "checkpoints").exists()):
        raise GenerateError(f"{out} already holds a distillation (labels or checkpoints): pass --resume to "
                            "go on with it, or choose another --out")


def distill(draft: Decoder | FeatureDraftModel, target: Callable[[Tensor], Tensor] | Decoder,
            tokenize: Callable[[str], list[int]],
            train: Sequence[Path] | Sequence[Sequence[Path]], held_out: Sequence[Path] | Sequence[Sequence[Path]],
            cfg: DistillConfig, log: Callable[[str], None] = print, budget: Budget | None = None, *,
            out: str | Path | None = None, resume: bool = False,
            label_target: Callable[[Tensor], Tensor] | None = None,
            meta: dict[str, Any] | None = None, about: dict[str, Any] | None = None,
            corpus_changed: bool = False) -> dict:
    """Train ``draft`` in place through the stages of the module docstring; returns the report:
    held-out metrics after every stage (``stages``, ``before``, ``after``), steps, labelled
    tokens, seconds, losses, and ``finished`` (False when the time limit stopped it).

    ``budget`` (default: ``cfg.max_minutes`` from now) is the deadline of the whole run; pass
    one started earlier to count what came before (loading the models). ``out`` keeps labels,
    checkpoints, the draft and the report on disk; ``resume`` continues a run there.
    ``label_target`` labels the corpus (e.g. the target in bfloat16, faster on a CPU that has
    it), ``target`` measures acceptance; ``meta`` (what the target and labels are) must match
    the labels already in ``out``; ``about`` (what the run is: target, layers, corpus) heads
    the report. ``train`` and ``held_out`` are lists of files, or one list per corpus (as
    :func:`corpus_parts` gives them), read in turn (:func:`mixed_chunks`). A
    :class:`~tubelet.models.decoder.FeatureDraftModel` needs ``target`` and ``label_target`` as
    tubelet Decoders (it learns from their features); its rounds train on what the target writes.
    ``corpus_changed``: resume although the training files differ from those the labels in ``out``
    were made from (their paths or sizes), instead of refusing."""
    budget = budget or Budget(cfg.max_minutes * 60)
    if train and isinstance(train[0], (str, Path)):
        train, held_out = [train], [held_out]
    if out is not None:
        check_out(out, resume)
    run = Distillation(draft, target, tokenize, train, held_out, cfg, log, budget,
                       Path(out) if out is not None else None, label_target, meta or {}, about or {},
                       corpus_changed and resume)
    return run.run(resume)
