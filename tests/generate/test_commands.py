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
    args = parse(["draft", "distill", "--target", "smollm2", "--layers", "1", "--corpus", "c", "--out",
                  str(tmp_path / "d"), "--threads", "-1"])
    with pytest.raises(UsageError, match="--threads must be >= 1"):
        args.func(args)
    args = parse(["draft", "distill", "--target", "smollm2", "--layers", "1", "--kind", "features",
                  "--rounds", "-1", "--corpus", "c", "--out", str(tmp_path / "d")])
    with pytest.raises(UsageError, match="--rounds must be >= 0"):
        args.func(args)
    assert (args.loss, args.corpus_changed) == ("kl", False)
    args = parse(["draft", "distill", "--target", "t", "--layers", "1", "--corpus", "c", "--out", "o", "--resume",
                  "--loss", "tv", "--corpus-changed"])
    assert (args.loss, args.corpus_changed) == ("tv", True)
    args = parse(["draft", "distill", "--target", "t", "--layers", "1", "--corpus", "c", "--out", "o",
                  "--corpus-changed"])
    with pytest.raises(UsageError, match="--corpus-changed goes with --resume"):
        args.func(args)
    with pytest.raises(SystemExit):
        parse(["draft", "distill", "--target", "t", "--layers", "1", "--corpus", "c", "--out", "o", "--loss", "l2"])
    args = parse(["draft", "distill", "--target", "t", "--layers", "1", "--corpus", "c", "--out", "o",
                  "--round-loss", "tv"])  # no --rounds: the round loss would go unused
    with pytest.raises(UsageError, match="--round-loss tv is the loss of the rounds, and --rounds is 0"):
        args.func(args)


def test_an_unquoted_corpus_glob_the_shell_expanded_is_one_corpus(tmp_path, monkeypatch):
    """``--corpus src/*.py`` unquoted reaches tubelet as the files themselves: they were refused as
    unrecognized arguments; they are now one corpus, and each --corpus still its own."""
    from tubelet.generate.distill import corpus_parts

    for kind, count in (("code", 12), ("text", 10)):
        (tmp_path / kind).mkdir()
        for i in range(count):
            (tmp_path / kind / f"{i:02d}.txt").write_text(f"{kind} {i}\n")
    code = sorted(str(f) for f in (tmp_path / "code").iterdir())
    args = parse(["draft", "distill", "--target", "t", "--layers", "1", "--corpus", *code,
                  "--corpus", str(tmp_path / "text" / "*.txt"), "--out", str(tmp_path / "o")])
    assert args.corpus == [code, [str(tmp_path / "text" / "*.txt")]]
    def target_next(*args, **kwargs):  # the corpus was read: the target loads next
        raise UsageError("the corpus was accepted")

    monkeypatch.setattr(commands, "_load", target_next)
    with pytest.raises(UsageError, match="the corpus was accepted"):
        args.func(args)
    (train_code, held_code), (train_text, held_text) = corpus_parts([code, str(tmp_path / "text" / "*.txt")])
    assert len(train_code) + len(held_code) == 12 and [f.name for f in held_code] == ["00.txt", "10.txt"]
    assert len(train_text) + len(held_text) == 10 and [f.name for f in held_text] == ["00.txt"]
    with pytest.raises(FileNotFoundError, match="and 1 more: found 0 text files"):
        corpus_parts([[str(tmp_path / "none1"), str(tmp_path / "none2")]])


def test_train_precision_follows_the_devices_faster_precision(tmp_path, monkeypatch):
    draft = Decoder.load(tiny(tmp_path))
    assert parse(["draft", "distill", "--target", "t", "--layers", "1", "--corpus", "c", "--out", "o"]
                 ).train_precision == "auto"
    for fast, expected in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        monkeypatch.setattr("tubelet.generate.loading.draft_dtype", lambda device, fast=fast: fast)
        assert commands.chosen_precision(draft, "auto") == expected
        assert commands.chosen_precision(draft, "fp32") == "fp32"


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
    assert sum(report["loss"]["train"][-5:]) < sum(report["loss"]["train"][:5])


def test_acceptance_is_reported_per_tested_and_per_drafted_token():
    from tubelet.generate.stats import Stats
    # K = 4: one step accepted 1 (2 tested, 4 drafted), one accepted 0 (1 tested, 4 drafted)
    s = Stats(k=4, rows=1, target_calls=2, row_steps=2, drafted=8, tested=3, accepted=1, generated=3,
              accepted_histogram=[1, 1, 0, 0, 0])
    assert s.acceptance_rate == pytest.approx(1 / 3) and s.accepted_per_drafted == pytest.approx(1 / 8)
    line = commands.acceptance_line(s)
    assert "0.333 per tested draft token" in line and "0.125 per drafted token" in line
    summary = s.summary()
    assert summary["acceptance_rate"] == pytest.approx(1 / 3)
    assert summary["accepted_per_drafted"] == pytest.approx(1 / 8)


def test_draft_specs_and_threshold(tmp_path):
    from tubelet.generate.drafts import ModelDraft, NGramDraft
    from tubelet.generate.loading import LoadError, load_draft, load_model
    target = load_model(tiny(tmp_path, layers=3))
    ngram = load_draft("ngram:3", target)
    assert isinstance(ngram, NGramDraft) and ngram.max_ngram == 3 and ngram.vocab_size == 128
    truncated = load_draft("truncated:1", target, threshold=0.4)
    assert isinstance(truncated, ModelDraft) and truncated.threshold == 0.4
    for bad in ("ngram:x", "ngram:0"):
        with pytest.raises(LoadError, match="ngram"):
            load_draft(bad, target)
    with pytest.raises(LoadError, match="threshold"):
        load_draft("ngram:2", target, threshold=0.5)
    assert load_draft("truncated:1,temp:0.7", target).temperature == 0.7 and truncated.temperature == 1.0
    for bad in ("truncated:1,temp:0", "truncated:1,temp:x", "truncated:1,temp:"):
        with pytest.raises(LoadError, match="temp:T"):
            load_draft(bad, target)
    args = parse(["generate", "--target", tiny(tmp_path), "--prompt", "x", "--draft-threshold", "0.3"])
    with pytest.raises(UsageError, match="needs a --draft"):
        args.func(args)
    args = parse(["generate", "--target", tiny(tmp_path), "--prompt", "x", "--threads", "-1"])
    with pytest.raises(UsageError, match="--threads"):
        args.func(args)


@pytest.mark.parametrize("draft, message", [("ngram:0", "at least 1"), ("ngram:3,bf16", "no options"),
                                            ("truncated:x", "number of layers"), ("runs/none", "no such file"),
                                            ("truncated:1,int8,compile", "not int8"),
                                            ("truncated:1,vocab:", "vocab:N")])
def test_a_wrong_draft_spec_fails_before_the_target_loads(tmp_path, monkeypatch, draft, message):
    """A target with ``,compile`` takes minutes to load the first time: a typo in --draft is named first."""
    def no_target(*args, **kwargs):
        raise AssertionError("the target was loaded before the draft spec was checked")

    monkeypatch.setattr(commands, "load_model", no_target)
    args = parse(["generate", "--target", tiny(tmp_path), "--prompt", "x", "--draft", draft])
    with pytest.raises(UsageError, match=message):
        args.func(args)


def test_a_distilled_draft_decodes_at_its_saved_temperature_unless_the_spec_gives_one(tmp_path):
    from tubelet.generate.drafts import save_draft_sampling
    from tubelet.generate.loading import LoadError, load_draft, load_model
    target = load_model(tiny(tmp_path / "t", layers=3))
    folder = tiny(tmp_path / "d", layers=1)
    assert load_draft(folder, target).temperature == 1.0  # nothing saved: the draft's own
    save_draft_sampling(folder, 0.85, {0.85: 0.52, 1.0: 0.5})
    assert load_draft(folder, target).temperature == 0.85
    assert load_draft(folder + ",temp:1", target).temperature == 1.0
    (tmp_path / "d" / "tiny" / "sampling.json").write_text('{"draft_temperature": -2}')
    with pytest.raises(LoadError, match="sampling.json"):
        load_draft(folder, target)


class FakeClock:
    """Seconds that pass only when something costs them: 0.25 s per clock read (a training
    step reads it twice) and 2 s per target call."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_distill_stays_within_max_minutes(tmp_path):
    from tubelet.generate.distill import Budget
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"f{i}.py").write_text("x = %d\n" % i * 200)
    torch.manual_seed(0)
    target = Decoder(DecoderConfig(vocab_size=128, dim=16, num_layers=2, num_heads=2, num_kv_heads=1,
                                   mlp_dim=16)).eval()
    clock = FakeClock()

    def slow_target(x):
        clock.now += 2.0
        return target(x)

    train, held = corpus_files(str(corpus))
    cfg = DistillConfig(seq_len=16, batch_size=2, steps=10 ** 6, label_tokens=10 ** 9, max_minutes=1.0,
                        eval_chunks=3)
    budget = Budget(cfg.max_minutes * 60, clock=clock)
    report = distill(truncated_draft(target, 1), slow_target, lambda s: [min(ord(c), 127) for c in s],
                     train, held, cfg, log=lambda m: None, budget=budget)
    assert report["seconds"] <= 60.0 + 0.25, report  # + the clock read that measured it
    assert report["steps"] > 10 and report["labelled_tokens"] >= 2 * 16 * 5, report  # both phases ran
    assert report["seconds"] > 50.0, report  # and the budget was used


class CharTokenizer:
    """Bytes as tokens (a stand-in for a transformers tokenizer)."""

    eos_token_id = 127

    def __call__(self, text: str):
        return argparse.Namespace(input_ids=[min(ord(c), 126) for c in text])

    def decode(self, tokens, skip_special_tokens: bool = False) -> str:
        return "".join(chr(t) for t in tokens if not (skip_special_tokens and t == self.eos_token_id))


def test_generate_json_with_a_draft_and_a_stop_string(tmp_path, monkeypatch, capsys):
    import json
    monkeypatch.setattr(commands, "load_tokenizer", lambda spec: CharTokenizer())
    folder = tiny(tmp_path)
    base = ["generate", "--target", folder, "--tokenizer", "chars", "--prompt", "abcabcabc",
            "--temperature", "0", "--max-new-tokens", "12", "--json", "--threads", "1"]
    args = parse(base)
    assert args.func(args) == 0
    plain = json.loads(capsys.readouterr().out)
    args = parse(base + ["--draft", "ngram:2", "--k", "3"])
    assert args.func(args) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["tokens"] == plain["tokens"] and spec["text"] == plain["text"]  # greedy: the same text
    for key in ("acceptance_rate", "accepted_per_drafted", "drafted", "tested", "accepted",
                "tokens_per_step", "target_calls_per_token", "tokens_per_second"):
        assert key in spec["stats"], key
    # the device it ran on, not a GPU that is merely present (it said the GPU's name while on the CPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "a GPU it did not use")
    args = parse(base + ["--device", "cpu"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["device"] == "cpu"
    monkeypatch.undo()
    monkeypatch.setattr(commands, "load_tokenizer", lambda spec: CharTokenizer())
    stop = plain["text"][3:5]
    args = parse(base + ["--stop", stop])
    assert args.func(args) == 0
    cut = json.loads(capsys.readouterr().out)
    assert cut["text"] == plain["text"][:plain["text"].index(stop)]
    assert cut["tokens"] == plain["tokens"][:len(cut["tokens"])]


def test_end_tokens_join_the_tokenizer_and_the_generation_config():
    from tubelet.generate.loading import Loaded
    model = torch.nn.Linear(1, 1)
    model.generation_config = argparse.Namespace(eos_token_id=[2, 7])
    tok = argparse.Namespace(eos_token_id=7)
    assert commands.end_tokens(tok, Loaded(None, model, tok)) == (7, 2)
    assert commands.end_tokens(argparse.Namespace(), Loaded(None, torch.nn.Linear(1, 1), None)) == ()


def test_generate_prompt_file_stream_and_repetition_penalty(tmp_path, monkeypatch, capsys):
    import json
    monkeypatch.setattr(commands, "load_tokenizer", lambda spec: CharTokenizer())
    base = ["generate", "--target", tiny(tmp_path), "--tokenizer", "chars", "--temperature", "0",
            "--max-new-tokens", "10", "--threads", "1"]

    def run(*extra: str) -> str:
        args = parse(base + list(extra))
        assert args.func(args) == 0
        return capsys.readouterr().out

    singles = [json.loads(run("--prompt", p, "--json")) for p in ("abcabc", "xyz")]
    (tmp_path / "prompts.txt").write_text("abcabc\n\nxyz\n")
    for draft in ([], ["--draft", "ngram:2", "--k", "3"]):  # one batch: each row as when alone (greedy)
        lines = [json.loads(line) for line in run("--prompt-file", str(tmp_path / "prompts.txt"), *draft).splitlines()]
        assert [(x["prompt"], x["text"], x["tokens"]) for x in lines] == \
            [(p, s["text"], s["tokens"]) for p, s in zip(("abcabc", "xyz"), singles)]
    assert run("--prompt", "abcabc", "--stream") == singles[0]["text"] + "\n"
    stop = singles[0]["text"][4:6]
    text = singles[0]["text"]
    assert run("--prompt", "abcabc", "--stream", "--stop", stop) == text[:text.index(stop)] + "\n"
    penalised = json.loads(run("--prompt", "abcabc", "--json", "--repetition-penalty", "3"))
    assert penalised["tokens"] != singles[0]["tokens"]
    assert json.loads(run("--prompt", "abcabc", "--json", "--repetition-penalty", "3", "--draft", "truncated:1",
                          "--k", "3"))["tokens"] == penalised["tokens"]
    (tmp_path / "empty.txt").write_text("\n\n")
    for bad, match in ((["--prompt-file", str(tmp_path / "empty.txt")], "no prompts"),
                       (["--prompt-file", str(tmp_path / "none.txt")], "cannot read"),
                       (["--prompt", "a", "--stream", "--json"], "--stream"),
                       (["--prompt", "a", "--repetition-penalty", "0"], "repetition_penalty")):
        args = parse(base + bad)
        with pytest.raises(UsageError, match=match):
            args.func(args)


def test_target_precision_option(tmp_path):
    from tubelet.generate.loading import LoadError, in_precision, load_model
    from tubelet.generate.models import TubeletLM
    folder = tiny(tmp_path)
    full, half = load_model(folder), load_model(folder + ",bf16")
    assert half.model.embed.weight.dtype == torch.bfloat16 and isinstance(half.lm, TubeletLM)
    in_precision(full, "bf16", folder)  # a copy: the model it was given stays float32
    assert full.model.embed.weight.dtype == torch.float32
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(half.logits(x).float(), full.logits(x), atol=0.05, rtol=0.05)
    with pytest.raises(LoadError, match="vocab"):
        load_model(folder + ",vocab:8")
    with pytest.raises(LoadError, match="unknown"):
        load_model(folder + ",fp16")


def test_compile_in_target_and_draft_specs(tmp_path, monkeypatch, capsys):
    """``,compile`` gives a CompiledLM for a target (a transformers model would be copied in float32)
    and a model draft; what cannot be compiled is refused with the reason. The compile itself is
    replaced by the eager step it would compile (tests/generate/test_compiled.py compiles one)."""
    import json

    import tubelet.generate.compiled as compiled
    from tubelet.generate.drafts import ModelDraft
    from tubelet.generate.loading import LoadError, load_draft, load_model
    monkeypatch.setattr(compiled, "load_step", lambda model, **kw: compiled.DecodingStep(model))
    folder = tiny(tmp_path)
    target = load_model(folder + ",compile")
    assert isinstance(target.lm, compiled.CompiledLM) and target.model.embed.weight.dtype == torch.float32
    assert load_model(folder + ",bf16,compile").model.embed.weight.dtype == torch.bfloat16
    draft = load_draft("truncated:1,fp32,compile", target)
    assert isinstance(draft, ModelDraft) and isinstance(draft.lm, compiled.CompiledLM)
    for bad, match in (("truncated:1,int8,compile", "not int8"), ("ngram:2,compile", "no options")):
        with pytest.raises(LoadError, match=match):
            load_draft(bad, target)
    with pytest.raises(LoadError, match="for a draft"):
        load_model(folder + ",temp:0.5")
    monkeypatch.setattr(commands, "load_tokenizer", lambda spec: CharTokenizer())
    base = ["generate", "--tokenizer", "chars", "--prompt", "abcabcabc", "--temperature", "0",
            "--max-new-tokens", "12", "--json", "--threads", "1"]
    texts = []
    for spec in (folder, folder + ",compile"):
        args = parse(base + ["--target", spec, "--draft", "truncated:1,compile"] if "compile" in spec
                     else base + ["--target", spec])
        assert args.func(args) == 0
        texts.append(json.loads(capsys.readouterr().out)["tokens"])
    assert texts[0] == texts[1]
