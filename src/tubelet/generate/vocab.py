"""A reduced draft vocabulary: the draft predicts only the V' most frequent tokens of a corpus.

The draft's output layer is most of its cost: SmolLM2's head is a 49,152 x 576 matrix, which
made each call of a 2-layer draft 0.24 of a one-token target call. Keeping only the head rows of
the V' most frequent tokens (a few thousand) cuts that layer to V'/V of its cost. The input
embedding stays whole: the context (prompt, the target's tokens) may hold any token, and a
lookup costs the same whatever the number of rows.

The draft then gives probability exactly 0 to every other token, which keeps speculative
sampling exact: a token outside V' is never proposed, and the residual max(0, q - p) of a
rejected step equals the target's q on it, so the target still emits it with its own
probability (see :class:`~tubelet.generate.drafts.ModelDraft`, which samples in the reduced
space and reports p over the full vocabulary).

Which tokens: for a draft made by ``tubelet draft distill``, the ones the target gives the most
probability to over the distillation corpus (``token_mass.safetensors`` in the draft's folder,
summed from the target's top-k labels): what the draft can propose is then as much of the
target's mass as N tokens can hold (on the held-out files of the README's hour-long draft, 4,096
such tokens hold 0.865 of the target's probability on code and 0.844 on English, against 0.813
and 0.767 for the bundled counts).
Otherwise the most frequent tokens of a corpus given by the user (a file, a folder of ``.py``
files or a glob, tokenized by the target's tokenizer), or of the list bundled for SmolLM2's
tokenizer (``tubelet/assets/smollm2_token_counts.npz``, made by ``scripts/token_counts.py`` from
the Python standard library's training files and the machine's licence texts).
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..fileio import atomic_write

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOKEN_MASS = "token_mass.safetensors"  # in a distilled draft's folder
BUNDLED = ASSETS / "smollm2_token_counts.npz"


def count_tokens(texts: Iterable[str], tokenize: Callable[[str], list[int]]) -> Counter:
    """Token id -> number of occurrences over ``texts``."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(tokenize(text))
    return counts


def corpus_texts(corpus: str) -> list[str]:
    """The texts of a file, of every ``.py``/``.txt``/``.md`` file under a folder, or of a glob."""
    path = Path(corpus)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix in (".py", ".txt", ".md", ".rst"))
    else:
        files = sorted(map(Path, glob.glob(corpus, recursive=True)))
    files = [f for f in files if f.is_file()]
    if not files:
        raise FileNotFoundError(f"{corpus}: no text files to count tokens in (give a file, a folder "
                                "or a glob such as '/usr/lib/python3.11/*.py')")
    return [f.read_text(errors="replace") for f in files]


def most_frequent(counts: Counter | dict[int, int], n: int) -> Tensor:
    """The n most frequent token ids (ties: the smaller id first), as a sorted (n',) tensor, n' <= n."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return torch.tensor(sorted(t for t, _ in ranked), dtype=torch.long)


def bundled_counts(vocab_size: int) -> dict[int, int]:
    """The bundled counts (SmolLM2's tokenizer); an error for a target of another vocabulary."""
    with np.load(BUNDLED) as f:
        if int(f["vocab_size"]) != vocab_size:
            raise ValueError(f"{BUNDLED.name} counts tokens of SmolLM2's tokenizer ({int(f['vocab_size'])} "
                             f"tokens), the target has {vocab_size}: give a corpus, e.g. "
                             "'vocab:4096:/usr/lib/python3.11/*.py'")
        return dict(zip(f["ids"].tolist(), f["counts"].tolist()))


def coverage(counts: Counter | dict[int, int], ids: Tensor) -> float:
    """The share of the corpus's tokens that ``ids`` covers: an upper bound on a greedy draft's
    acceptance on text like the corpus."""
    kept = set(ids.tolist())
    total = sum(counts.values())
    return sum(c for t, c in counts.items() if t in kept) / total if total else float("nan")


def reduce_head(model: torch.nn.Module, ids: Tensor) -> torch.nn.Module:
    """Replace the output layer of a tubelet Decoder (``head``) or a transformers causal LM
    (``lm_head``) by its rows ``ids``, in place: logits (..., V) -> (..., V'), column i being
    token ``ids[i]``. A head tied to the embedding is untied (the embedding keeps every row)."""
    name = "head" if hasattr(model, "head") else "lm_head"
    old = getattr(model, name, None)
    if not isinstance(old, torch.nn.Linear) or old.bias is not None:
        raise ValueError(f"{type(model).__name__}: expected a bias-free Linear output layer "
                         f"'head' or 'lm_head' to reduce, got {type(old).__name__}")
    new = torch.nn.Linear(old.in_features, len(ids), bias=False, device=old.weight.device,
                          dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[ids.to(old.weight.device)])  # (V', D) rows of (V, D)
    setattr(model, name, new)
    return model


def save_token_mass(folder: Path, mass: Tensor) -> None:
    """Write (V,) summed target probabilities per token next to a draft (``TOKEN_MASS``)."""
    tensors = {"mass": mass.float().contiguous()}
    atomic_write(Path(folder) / TOKEN_MASS, lambda tmp: save_file(tensors, tmp, metadata={
        "about": "the target's probability of each token summed over the distillation corpus"}))


def load_token_mass(folder: str | Path) -> dict[int, float] | None:
    """Token id -> the target's summed probability, from a distilled draft's folder; None when the
    folder has no ``TOKEN_MASS`` (a draft from elsewhere)."""
    path = Path(folder) / TOKEN_MASS
    if not path.is_file():
        return None
    try:
        mass = load_file(str(path))["mass"]
    except (OSError, SafetensorError, KeyError) as e:
        raise ValueError(f"cannot read {path} ({e}); delete it to rank tokens by the bundled counts, "
                         "or give vocab:N:CORPUS") from None
    return {i: float(m) for i, m in enumerate(mass.tolist()) if m > 0}
