"""`tubelet generate` / `tubelet draft distill`: arguments, user errors, and distillation."""

from __future__ import annotations

import argparse

import pytest
import torch

from tubelet.errors import UsageError
from tubelet.generate import commands
from tubelet.generate.distill import DistillConfig, corpus_files, distill
from tubelet.generate.loading import truncated_draft
from tubelet.models.decoder import Decoder, DecoderConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tubelet")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def tiny(tmp_path, layers: int = 2) -> str:
    torch.manual_seed(0)
    m = Decoder(DecoderConfig(vocab_size=128, dim=32, num_layers=layers, num_heads=4, num_kv_heads=2,
                              mlp_dim=48))
    m.save(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_generate_refuses_bad_settings_with_a_message(tmp_path):
    folder = tiny(tmp_path)
    args = parse(["generate", "--target", folder, "--prompt", "x", "--temperature", "-1"])
    with pytest.raises(UsageError, match="temperature"):
        args.func(args)
    args = parse(["generate", "--target", folder, "--prompt", "x"])
    with pytest.raises(UsageError, match="--tokenizer"):
        args.func(args)
    args = parse(["generate", "--target", str(tmp_path / "nope"), "--prompt", "x"])
    with pytest.raises(UsageError, match="no such file"):
        args.func(args)


def test_distill_arguments_and_a_missing_corpus(tmp_path):
    args = parse(["draft", "distill", "--target", "smollm2", "--layers", "2", "--corpus",
                  str(tmp_path / "none/*.py"), "--out", str(tmp_path / "d")])
    assert args.layers == 2 and args.func is commands.distill_command
    with pytest.raises(UsageError, match="found 0 text files"):
        args.func(args)


def test_truncated_draft_of_a_tubelet_decoder(tmp_path):
    target = Decoder.load(tiny(tmp_path, layers=3))
    draft = truncated_draft(target, 1)
    assert draft.cfg.num_layers == 1
    assert torch.equal(draft.blocks[0].attn.qkv.weight, target.blocks[0].attn.qkv.weight)


def test_distill_trains_the_draft_towards_the_target(tmp_path):
    """Char-level toy corpus; the target is a 3-layer decoder, the draft its first layer."""
    torch.manual_seed(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"f{i}.py").write_text("def f(x):\n    return x + %d\n" % i * 40)
    target = Decoder(DecoderConfig(vocab_size=128, dim=32, num_layers=3, num_heads=4, num_kv_heads=2,
                                   mlp_dim=48, tie_embeddings=False)).eval()
    with torch.no_grad():
        target.head.weight.mul_(20.0)  # peaky, so the one-layer draft starts far from it
    draft = truncated_draft(target, 1)
    train, held = corpus_files(str(corpus))
    assert len(held) == 2 and len(train) == 10
    report = distill(draft, lambda x: target(x), lambda s: [min(ord(c), 127) for c in s], train, held,
                     DistillConfig(seq_len=32, batch_size=4, steps=40, label_tokens=1024, lr=3e-3, top_k=8,
                                   eval_chunks=4), log=lambda m: None)
    assert report["steps"] == 40
    assert report["after"]["acceptance_t1"] > report["before"]["acceptance_t1"]
    assert sum(report["loss"][-5:]) < sum(report["loss"][:5])
