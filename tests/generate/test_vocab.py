"""A reduced draft vocabulary: the spec, the counts it comes from, the reduced output layer, and a
greedy decode through it (the distribution tests are in test_drafts.py)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.drafts import ModelDraft
from tubelet.generate.loading import (DraftOptions, LoadError, draft_dtype, load_draft, load_model,
                                      split_draft_spec)
from tubelet.generate.vocab import BUNDLED, bundled_counts, coverage, most_frequent, reduce_head
from tubelet.models.decoder import Decoder

from .test_commands import CharTokenizer, parse, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_draft_spec_options():
    assert split_draft_spec("truncated:2") == ("truncated:2", DraftOptions())
    assert split_draft_spec("truncated:2,vocab:4096") == ("truncated:2", DraftOptions(4096))
    assert split_draft_spec("runs/d,bf16,vocab:64:/x/*.py") == ("runs/d", DraftOptions(64, "/x/*.py", "bf16"))
    assert split_draft_spec("runs/d,fp32") == ("runs/d", DraftOptions(dtype="fp32"))
    for bad in ("truncated:2,vocab:", "truncated:2,vocab:x", "truncated:2,vocab:0", "truncated:2,fp8"):
        with pytest.raises(LoadError, match="vocab:N|unknown option"):
            split_draft_spec(bad)


def test_most_frequent_and_coverage():
    counts = Counter({5: 10, 3: 10, 9: 1, 0: 4})
    assert most_frequent(counts, 2).tolist() == [3, 5]  # a tie: the smaller id first; sorted ids
    assert most_frequent(counts, 10).tolist() == [0, 3, 5, 9]
    assert coverage(counts, torch.tensor([3, 5])) == 20 / 25


def test_bundled_counts_are_smollm2s_and_refuse_another_vocabulary():
    with np.load(BUNDLED) as f:
        assert int(f["vocab_size"]) == 49152 and "held out" in str(f["source"])
        assert (np.diff(f["counts"].astype(np.int64)) <= 0).all()  # most frequent first
    counts = bundled_counts(49152)
    assert len(counts) > 10000 and coverage(counts, most_frequent(counts, 4096)) > 0.9
    with pytest.raises(ValueError, match="vocab:4096:"):
        bundled_counts(128)


def test_reduced_head_gives_the_kept_columns_of_the_full_logits(tmp_path):
    target = load_model(tiny(tmp_path))
    ids = torch.tensor([0, 7, 31, 100])
    x = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        full = target.model(x)
        reduced = reduce_head(target.model, ids)(x)
    assert reduced.shape == (2, 5, 4) and torch.allclose(reduced, full[..., ids], atol=1e-6)
    assert target.model.embed.weight.shape == (128, 32)  # the input embedding keeps every token
    with pytest.raises(ValueError, match="Linear output layer"):
        reduce_head(torch.nn.Sequential(), ids)


def test_load_draft_with_a_corpus_vocabulary_decodes_the_greedy_tokens(tmp_path):
    target = load_model(tiny(tmp_path, layers=3))
    (tmp_path / "corpus.txt").write_text("abcabc hello " * 20)
    draft = load_draft(f"truncated:2,vocab:8:{tmp_path / 'corpus.txt'}", target, tokenizer=CharTokenizer())
    assert isinstance(draft, ModelDraft) and draft.vocab.tolist() == sorted(map(ord, "abc helo"))
    assert draft.lm.model.head.weight.shape == (8, 32) and draft.vocab_size == 128
    prompt = [ord(c) for c in "abcab"]
    plain = autoregressive_generate(target.lm, [prompt], 12, sampling=Sampling(0)).tokens
    out = speculative_generate(target.lm, draft, [prompt], 12, k=3, sampling=Sampling(0))
    assert out.tokens == plain
    penalised = Sampling(0, repetition_penalty=1.5)  # the draft penalises in its reduced vocabulary too
    plain_penalised = autoregressive_generate(target.lm, [prompt], 12, sampling=penalised).tokens
    assert speculative_generate(target.lm, draft, [prompt], 12, k=3, sampling=penalised).tokens == plain_penalised
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        other = load_draft(f"truncated:2,vocab:8:{tmp_path / 'corpus.txt'},{name}", target, tokenizer=CharTokenizer())
        assert other.lm.model.head.weight.dtype == dtype
        assert speculative_generate(target.lm, other, [prompt], 12, k=3, sampling=Sampling(0)).tokens == plain
    assert draft.lm.model.head.weight.dtype == draft_dtype(torch.device("cpu"))
    with pytest.raises(LoadError, match="no text files"):
        load_draft(f"truncated:2,vocab:8:{tmp_path / 'none'}", target, tokenizer=CharTokenizer())
    with pytest.raises(LoadError, match="SmolLM2's tokenizer"):
        load_draft("truncated:2,vocab:8", target)  # the bundled counts are for another vocabulary
    with pytest.raises(LoadError, match="no options"):
        load_draft("ngram:2,vocab:8", target)


def test_generate_command_with_a_reduced_draft(tmp_path, monkeypatch, capsys):
    from tubelet.generate import commands
    monkeypatch.setattr(commands, "load_tokenizer", lambda spec: CharTokenizer())
    (tmp_path / "corpus.txt").write_text("abcabc " * 20)
    base = ["generate", "--target", tiny(tmp_path, layers=3), "--tokenizer", "chars", "--prompt", "abcabc",
            "--temperature", "0", "--max-new-tokens", "8", "--json"]
    args = parse(base)
    assert args.func(args) == 0
    plain = json.loads(capsys.readouterr().out)
    args = parse(base + ["--draft", f"truncated:1,vocab:16:{tmp_path / 'corpus.txt'}"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == plain["tokens"]


def test_a_distilled_draft_keeps_the_tokens_its_target_predicts_most(tmp_path):
    from tubelet.generate.vocab import TOKEN_MASS, save_token_mass
    target = load_model(tiny(tmp_path, layers=3))
    folder = tmp_path / "draft"
    Decoder(target.model.cfg).save(folder)
    mass = torch.zeros(128)
    mass[[5, 90, 7, 64]] = torch.tensor([3.0, 2.5, 2.0, 0.1])
    save_token_mass(folder, mass)
    assert load_draft(f"{folder},vocab:3", target).vocab.tolist() == [5, 7, 90]
    (tmp_path / "corpus.txt").write_text("abcabc")  # a corpus given overrides the draft's ranking
    counted = load_draft(f"{folder},vocab:3:{tmp_path / 'corpus.txt'}", target, tokenizer=CharTokenizer())
    assert counted.vocab.tolist() == sorted(map(ord, "abc"))
    (folder / TOKEN_MASS).write_bytes(b"not safetensors")
    with pytest.raises(LoadError, match=TOKEN_MASS):
        load_draft(f"{folder},vocab:3", target)
    (folder / TOKEN_MASS).unlink()  # a folder without it: the bundled counts (here: another vocabulary)
    with pytest.raises(LoadError, match="SmolLM2's tokenizer"):
        load_draft(f"{folder},vocab:3", target)
