"""Distillation stages: labels kept on disk, checkpoints that resume exactly, on-policy rounds."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from tubelet.errors import GenerateError
from tubelet.generate import distill as distill_module
from tubelet.generate.distill import (DRAFT_TEMPERATURES, DistillConfig, best_draft_temperature, corpus_files, distill,
                                      evaluate, learning_rate, sparse_divergence)
from tubelet.generate.loading import truncated_draft
from tubelet.models.decoder import Decoder, DecoderConfig
from tubelet.train.state import read_state

pytestmark = pytest.mark.usefixtures("one_thread")


def chars(text: str) -> list[int]:
    return [min(ord(c), 127) for c in text]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(12):
        (folder / f"f{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i * 7}\n" * 30)
    return corpus_files(str(folder))


def target_model() -> Decoder:
    torch.manual_seed(0)
    target = Decoder(DecoderConfig(vocab_size=128, dim=32, num_layers=3, num_heads=4, num_kv_heads=2,
                                   mlp_dim=48, tie_embeddings=False)).eval()
    with torch.no_grad():
        target.head.weight.mul_(10.0)
    return target


class Counting:
    """The target, counting the tokens it is asked to label."""

    def __init__(self, model: Decoder) -> None:
        self.model, self.tokens = model, 0

    def __call__(self, x):
        self.tokens += x.numel()
        return self.model(x)


CFG = dict(seq_len=32, batch_size=4, steps=30, label_tokens=1024, lr=3e-3, top_k=8, eval_chunks=2,
           shard_tokens=512)


def run(corpus, out, target, resume=False, label_target=None, **changes):
    train, held = corpus
    draft = truncated_draft(target, 1)
    report = distill(draft, target, chars, train, held, DistillConfig(**{**CFG, **changes}), log=lambda m: None,
                     out=out, resume=resume, label_target=label_target, meta={"target": "toy"},
                     about={"target": "toy", "layers": 1})
    return draft, report


@contextlib.contextmanager
def interrupted_at_step(step: int, loss: str, monkeypatch):
    """Ctrl-C in the distillation's ``step``-th training step (its loss function ``loss`` raises)."""
    real, calls = getattr(distill_module, loss), []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(distill_module, loss, interrupted)
    try:
        yield
    finally:
        monkeypatch.setattr(distill_module, loss, real)


def test_labels_on_disk_are_the_targets_top_k(corpus, tmp_path):
    target = target_model()
    run(corpus, tmp_path / "d", target, steps=1)
    shards = sorted((tmp_path / "d" / "labels").glob("corpus-*.safetensors"))
    assert len(shards) == 2  # 1024 tokens in shards of 512
    for shard in shards:
        t = load_file(str(shard))
        assert t["tokens"].shape == (16, 32) and t["ids"].shape == t["logprobs"].shape == (16, 32, 8)
        with torch.no_grad():
            top = target(t["tokens"].long()).log_softmax(-1).topk(8, dim=-1)
        assert torch.equal(t["ids"].long(), top.indices)
        torch.testing.assert_close(t["logprobs"].float(), top.values, atol=2e-2, rtol=2e-3)  # float16


def test_ctrl_c_keeps_the_steps_and_a_resumed_run_trains_exactly_as_an_unbroken_one(corpus, tmp_path, monkeypatch):
    target = target_model()
    whole, _ = run(corpus, tmp_path / "whole", target)

    with interrupted_at_step(13, "sparse_distill_loss", monkeypatch), pytest.raises(KeyboardInterrupt):
        run(corpus, tmp_path / "broken", target)
    assert (tmp_path / "broken" / "checkpoints" / "step-0000012").is_dir()  # the 12 steps taken
    broken_seconds = read_state(tmp_path / "broken" / "checkpoints" / "step-0000012")["report"]["seconds"]
    labeller = Counting(target)
    resumed, report = run(corpus, tmp_path / "broken", target, resume=True, label_target=labeller)
    assert labeller.tokens == 0  # the labels on disk were used, not made again
    assert report["finished"] and report["steps"] == 30
    assert report["seconds"] > broken_seconds > 0  # the time before the stop counts
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_used_folder_needs_resume_and_resume_needs_the_same_settings(corpus, tmp_path):
    target = target_model()
    run(corpus, tmp_path / "d", target, steps=2)
    with pytest.raises(GenerateError, match="--resume"):
        run(corpus, tmp_path / "d", target, steps=2)
    with pytest.raises(GenerateError, match="top_k=8, not 4"):
        run(corpus, tmp_path / "d", target, resume=True, steps=2, top_k=4)


def test_a_resume_on_other_files_names_what_changed(corpus, tmp_path):
    """The digest of the corpus files refuses a resume on other files; the listing beside the
    labels says which (a glob over the Python installation matches site-packages, which pip
    install changes between a run and its resume)."""
    target = target_model()
    train, held = corpus
    run(corpus, tmp_path / "d", target, steps=2)
    extra = tmp_path / "lib" / "site-packages" / "new.py"
    extra.parent.mkdir(parents=True)
    extra.write_text("x = 1\n" * 40)
    train[0].write_text(train[0].read_text() + "# one more line\n")
    with pytest.raises(GenerateError) as e:
        run(([*train[1:], extra], held), tmp_path / "d", target, resume=True, steps=2)
    message = str(e.value)
    assert f"1 added (e.g. {extra})" in message and f"1 removed (e.g. {train[0]})" in message
    assert "site-packages, which pip install changes" in message
    with pytest.raises(GenerateError, match=f"1 changed size \\(e.g. {re.escape(str(train[0]))}\\)"):
        run(corpus, tmp_path / "d", target, resume=True, steps=2)


def test_a_resume_on_changed_files_goes_on_when_asked_and_records_the_files_of_now(corpus, tmp_path):
    target = target_model()
    train, held = corpus
    run(corpus, tmp_path / "d", target, steps=2)
    train[0].write_text(train[0].read_text() + "# one more line\n")
    logged = []
    labeller = Counting(target)
    cfg = DistillConfig(**{**CFG, "steps": 2, "rounds": 1, "round_tokens": 256, "round_steps": 3})
    report = distill(truncated_draft(target, 1), target, chars, train, held, cfg, log=logged.append,
                     out=tmp_path / "d", resume=True, label_target=labeller, meta={"target": "toy"},
                     corpus_changed=True)
    assert report["finished"] and report["steps"] == 5
    assert labeller.tokens == 256  # the round's text only: the corpus labels on disk were kept
    assert any("resuming on changed files (1 changed size" in m and str(train[0]) in m for m in logged)
    listing = (tmp_path / "d" / "labels" / "corpus.txt").read_text()
    assert f"{train[0].stat().st_size}\t{train[0]}" in listing  # the files as they are now
    run(corpus, tmp_path / "d", target, resume=True, steps=2, rounds=1, round_tokens=256,
        round_steps=3)  # a later resume needs no flag


def test_a_damaged_label_shard_is_named(corpus, tmp_path):
    target = target_model()
    run(corpus, tmp_path / "d", target, steps=2)
    shard = tmp_path / "d" / "labels" / "corpus-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(GenerateError, match="corpus-00001.safetensors"):
        run(corpus, tmp_path / "d", target, resume=True, steps=2)


def test_an_on_policy_round_labels_what_the_draft_wrote(corpus, tmp_path):
    target = target_model()
    draft, report = run(corpus, tmp_path / "d", target, rounds=1, round_tokens=256, round_steps=10)
    assert [s["stage"] for s in report["stages"]] == ["start", "train", "round 1"]
    assert report["steps"] == 40 and report["round_tokens"] == 256
    t = load_file(str(tmp_path / "d" / "labels" / "round-1-00000.safetensors"))
    tokens = t["tokens"].long()
    with torch.no_grad():
        top = target(tokens).log_softmax(-1).topk(8, dim=-1)
    assert torch.equal(t["ids"].long(), top.indices)  # the target labelled these tokens
    texts = [p.read_text() for p in corpus[0]]
    prompts = ["".join(map(chr, row[:16].tolist())) for row in tokens]
    written = ["".join(map(chr, row.tolist())) for row in tokens]
    assert all(any(p in text for text in texts) for p in prompts)  # the first half is corpus text
    assert sum(any(w in text for text in texts) for w in written) < len(written) // 2  # the rest, the draft's
    assert all(0.0 < s["acceptance_t1"] <= 1.0 for s in report["stages"])
    assert Decoder.load(tmp_path / "d").cfg == draft.cfg
    on_disk = json.loads((tmp_path / "d" / "distill.json").read_text())  # the report, headed by what the run is
    assert on_disk["layers"] == 1 and [s["stage"] for s in on_disk["stages"]] == ["start", "train", "round 1"]


def test_held_out_acceptance_is_also_measured_on_what_the_target_wrote(corpus, tmp_path):
    target = target_model()
    _, report = run(corpus, tmp_path / "d", target, steps=5)
    assert all(0.0 < s["acceptance_t1_written"] <= 1.0 for s in report["stages"])
    _, labelled_by_a_callable = run(corpus, tmp_path / "c", target, steps=1, label_target=Counting(target))
    assert "acceptance_t1_written" not in labelled_by_a_callable["after"]  # no decoder to write with


def test_evaluate_counts_the_positions_from_first_on(corpus):
    target, draft = target_model(), truncated_draft(target_model(), 1)
    x = torch.randint(0, 128, (2, 32))
    whole, tail = evaluate(draft, target, list(x)), evaluate(draft, target, list(x), first=20)
    assert whole["tokens"] == 64 and tail["tokens"] == 24
    with torch.no_grad():
        p, q = draft(x).softmax(-1)[:, 20:], target(x).softmax(-1)[:, 20:]
    assert tail["acceptance_t1"] == pytest.approx(float(torch.minimum(p, q).sum(-1).mean()), rel=1e-5)
    assert tail["acceptance_t1"] != pytest.approx(whole["acceptance_t1"], rel=1e-4)


def test_a_run_stopped_between_stages_resumes_with_the_next(corpus, tmp_path, monkeypatch):
    target = target_model()

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distill_module.Distillation, "_continue", stop)  # as the round begins
    with pytest.raises(KeyboardInterrupt):
        run(corpus, tmp_path / "d", target, rounds=1, round_tokens=256, round_steps=10)
    monkeypatch.undo()
    _, report = run(corpus, tmp_path / "d", target, resume=True, rounds=1, round_tokens=256, round_steps=10)
    assert [s["stage"] for s in report["stages"]] == ["start", "train", "round 1"]
    assert report["finished"] and report["steps"] == 40


def test_the_tv_loss_is_twice_one_minus_the_acceptance_at_t1():
    """With the whole vocabulary among the batch's top-k sets, the draft's softmax is its full
    distribution q; the tv loss of each position is then 2 (1 - overlap) of the target's top-k
    plus one outcome for the rest, against q grouped the same way: the whole vocabulary's when k = V."""
    g = torch.Generator().manual_seed(0)
    V, k = 12, 4
    h, head = torch.randn(3, 5, 8, generator=g), torch.randn(V, 8, generator=g)
    target = (2 * torch.randn(3, 5, V, generator=g)).log_softmax(-1)
    q = (h @ head.T).softmax(-1)
    whole = target.topk(V, -1)
    acceptance = torch.minimum(target.exp(), q).sum(-1).mean()
    assert float(sparse_divergence(h, head, whole.values, whole.indices, "tv")) == pytest.approx(
        2 * (1 - float(acceptance)), rel=1e-5)
    top = target.topk(k, -1)
    assert len(top.indices.unique()) == V  # every token is in some position's top-k: q is the full softmax
    p_top, q_top = top.values.exp(), q.gather(-1, top.indices)
    overlap = torch.minimum(p_top, q_top).sum(-1) + torch.minimum(1 - p_top.sum(-1), 1 - q_top.sum(-1))
    assert float(sparse_divergence(h, head, top.values, top.indices, "tv")) == pytest.approx(
        2 * (1 - float(overlap.mean())), rel=1e-5)
    kl = sparse_divergence(h, head, top.values, top.indices, "kl")
    assert float(kl) == pytest.approx(float(-(top.values.softmax(-1) * q_top.log()).sum(-1).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="expected one of kl, tv"):
        sparse_divergence(h, head, top.values, top.indices, "l2")


def test_training_with_the_tv_loss_raises_acceptance_and_each_stage_says_its_loss(corpus, tmp_path, monkeypatch):
    target = target_model()
    _, report = run(corpus, tmp_path / "d", target, loss="tv", steps=20)
    assert report["objective"] == {"train": "tv"}
    assert report["after"]["acceptance_t1"] > report["before"]["acceptance_t1"] + 0.05
    _, resumed = run(corpus, tmp_path / "d", target, resume=True, steps=20, rounds=1, round_tokens=256,
                     round_steps=5)  # the round trains with this run's loss, the default kl
    assert resumed["objective"] == {"train": "tv", "round 1": "kl"}
    with interrupted_at_step(5, "sparse_distill_loss", monkeypatch), pytest.raises(KeyboardInterrupt):
        run(corpus, tmp_path / "f", target, steps=10)
    _, switched = run(corpus, tmp_path / "f", target, resume=True, steps=10, loss="tv")
    assert switched["objective"] == {"train": "kl, then tv"}
    with pytest.raises(GenerateError, match="loss 'l2'"):
        run(corpus, tmp_path / "e", target, loss="l2")


def test_the_rounds_train_with_their_own_loss(corpus, tmp_path, monkeypatch):
    """``round_loss``: the corpus stage minimises ``loss``, each round ``round_loss``, and the report
    says so; a wrong name is refused before any labelling."""
    real, used = distill_module.sparse_divergence, []

    def recording(h, head, logp_top, ids, loss="kl"):
        used.append(loss)
        return real(h, head, logp_top, ids, loss)

    monkeypatch.setattr(distill_module, "sparse_divergence", recording)
    _, report = run(corpus, tmp_path / "d", target_model(), steps=6, rounds=1, round_tokens=256, round_steps=4,
                    round_loss="tv")
    assert report["objective"] == {"train": "kl", "round 1": "tv"}
    assert used == ["kl"] * 6 + ["tv"] * 4
    with pytest.raises(GenerateError, match="loss 'l1'"):
        run(corpus, tmp_path / "e", target_model(), rounds=1, round_loss="l1")
    assert not (tmp_path / "e" / "labels").exists()


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    rates = [learning_rate(s, 200, 1.0) for s in range(200)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)  # 10 warm-up steps
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_several_corpora_each_keep_a_held_out_tenth(tmp_path):
    for name, count in (("code", 20), ("text", 10)):
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i:02d}.txt").write_text("x" * (i + 1))
    train, held = corpus_files([str(tmp_path / "code" / "*.txt"), str(tmp_path / "text" / "*.txt")])
    assert [f.parent.name for f in held] == ["code", "code", "text"]
    assert len(train) == 27 and not set(train) & set(held)


def test_every_corpus_gives_an_equal_share_of_the_labels_and_of_the_held_out_set(tmp_path):
    """Drawn file by file, 20 code files against 4 English ones would give English a sixth."""
    groups = []
    for name, letter, count in (("code", "c", 20), ("text", "t", 4)):
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i:02d}.txt").write_text(letter * 200)
        groups.append(str(tmp_path / name / "*.txt"))
    parts = distill_module.corpus_parts(groups)
    target = target_model()
    draft = truncated_draft(target, 1)
    report = distill(draft, target, chars, [t for t, _ in parts], [h for _, h in parts],
                     DistillConfig(**{**CFG, "steps": 1, "eval_chunks": 4}), log=lambda m: None,
                     out=tmp_path / "d", meta={"target": "toy"})
    tokens = torch.cat([load_file(str(s))["tokens"] for s in (tmp_path / "d" / "labels").glob("corpus-*")])
    first = tokens[:, 0].tolist()
    assert first.count(ord("c")) == first.count(ord("t")) == len(tokens) // 2
    assert report["held_out_files"] == 3  # 2 of code, 1 of text
    chunks = distill_module.mixed_chunks([h for _, h in parts], chars, 32, seed=1)
    assert [int(next(chunks)[0]) for _ in range(4)] == [ord("c"), ord("t")] * 2


def test_a_small_corpus_is_not_taken_twice_before_a_large_one_is_read_once(tmp_path):
    (tmp_path / "small").write_text("a" * 64)  # 2 chunks of 32
    (tmp_path / "large").write_text("b" * 192)  # 6 chunks
    chunks = distill_module.mixed_chunks([[tmp_path / "small"], [tmp_path / "large"]], chars, 32, seed=0)
    first = "".join(chr(int(next(chunks)[0])) for _ in range(10))
    assert first == "abab" + "bbbb" + "ab"


def test_one_corpus_is_drawn_as_before(corpus):
    train, _ = corpus
    mixed = distill_module.mixed_chunks([train], chars, 32, seed=5)
    plain = distill_module.token_chunks(train, chars, 32, seed=5)
    assert all(torch.equal(next(mixed), next(plain)) for _ in range(20))


def test_training_in_bf16_keeps_float32_weights_and_follows_the_float32_run(corpus, tmp_path):
    target = target_model()
    draft, report = run(corpus, tmp_path / "d", target, train_precision="bf16", steps=60)
    assert all(p.dtype == torch.float32 for p in draft.parameters())
    losses = report["loss"]["train"]
    assert sum(losses[-10:]) < 0.95 * sum(losses[:10])
    fp32, fp32_report = run(corpus, tmp_path / "e", target, steps=60)
    assert not torch.equal(draft.blocks[0].mlp.up.weight, fp32.blocks[0].mlp.up.weight)  # autocast was on
    assert report["after"]["acceptance_t1"] == pytest.approx(fp32_report["after"]["acceptance_t1"], abs=0.01)


def test_the_draft_folder_holds_the_targets_probability_of_each_token(corpus, tmp_path):
    from tubelet.generate.vocab import TOKEN_MASS
    target = target_model()
    run(corpus, tmp_path / "d", target, steps=1)
    mass = load_file(str(tmp_path / "d" / TOKEN_MASS))["mass"].double()
    tokens = torch.cat([load_file(str(s))["tokens"] for s in sorted((tmp_path / "d" / "labels").glob("corpus-*"))])
    with torch.no_grad():  # the target's own top-8 probabilities, summed per token
        top = target(tokens.long()).softmax(-1).topk(8, dim=-1)
    expected = torch.zeros(128, dtype=torch.float64).index_add_(0, top.indices.flatten(),
                                                                top.values.flatten().double())
    torch.testing.assert_close(mass, expected, rtol=2e-3, atol=1e-2)
    assert mass.argsort(descending=True)[:5].tolist() == expected.argsort(descending=True)[:5].tolist()
    (tmp_path / "d" / TOKEN_MASS).unlink()  # a draft distilled before the file existed: --resume writes it
    run(corpus, tmp_path / "d", target, steps=1, resume=True)
    assert torch.equal(load_file(str(tmp_path / "d" / TOKEN_MASS))["mass"].double(), mass)


def test_evaluate_gives_the_acceptance_of_a_tempered_draft(corpus):
    target, draft = target_model(), truncated_draft(target_model(), 1)
    x = torch.randint(0, 128, (2, 32))
    result = evaluate(draft, target, list(x), temperatures=(0.5, 1.0))
    by_t = result["acceptance_t1_by_draft_temperature"]
    assert by_t[1.0] == pytest.approx(result["acceptance_t1"], rel=1e-6)
    with torch.no_grad():  # the draft's logits divided by 0.5, the target's not
        p, q = (draft(x) / 0.5).softmax(-1), target(x).softmax(-1)
    assert by_t[0.5] == pytest.approx(float(torch.minimum(p, q).sum(-1).mean()), rel=1e-5)
    assert by_t[0.5] != pytest.approx(by_t[1.0], rel=1e-3)


def test_best_draft_temperature_needs_a_real_gain_over_1():
    assert best_draft_temperature({0.8: 0.52, 0.9: 0.55, 1.0: 0.50}) == 0.9
    assert best_draft_temperature({0.8: 0.5005, 1.0: 0.5}) == 1.0  # within noise: the draft's own


def test_the_draft_folder_holds_the_draft_temperature_of_most_held_out_acceptance(corpus, tmp_path):
    from tubelet.generate.drafts import DRAFT_SAMPLING, load_draft_temperature
    target = target_model()
    _, report = run(corpus, tmp_path / "d", target, steps=5)
    by_t = {float(t): a for t, a in report["after"]["acceptance_t1_by_draft_temperature"].items()}
    assert set(by_t) == set(DRAFT_TEMPERATURES)
    saved = json.loads((tmp_path / "d" / DRAFT_SAMPLING).read_text())
    assert saved["draft_temperature"] == best_draft_temperature(by_t) == load_draft_temperature(tmp_path / "d")
    (tmp_path / "d" / DRAFT_SAMPLING).write_text("{not json")
    with pytest.raises(ValueError, match=DRAFT_SAMPLING):
        load_draft_temperature(tmp_path / "d")
    assert load_draft_temperature(tmp_path) == 1.0  # a folder without one: the draft's own temperature


def test_resuming_a_run_distilled_before_the_draft_temperature_measures_it(corpus, tmp_path):
    """A finished run's --resume reports its last stage again (the checkpoint precedes that report),
    now with the acceptance by draft temperature, and saves the best."""
    from tubelet.generate.drafts import DRAFT_SAMPLING, load_draft_temperature
    target = target_model()
    run(corpus, tmp_path / "d", target, steps=5)
    expected = load_draft_temperature(tmp_path / "d")
    (tmp_path / "d" / DRAFT_SAMPLING).unlink()
    for state in (tmp_path / "d" / "checkpoints").glob("*/train_state.json"):  # the report as before
        state.write_text(state.read_text().replace('"acceptance_t1_by_draft_temperature"', '"unknown"'))
    logged = []
    train, held = corpus
    distill(truncated_draft(target, 1), target, chars, train, held, DistillConfig(**{**CFG, "steps": 5}),
            log=logged.append, out=tmp_path / "d", resume=True, meta={"target": "toy"})
    assert load_draft_temperature(tmp_path / "d") == expected
    assert any("draft temperature" in line for line in logged) == (expected != 1.0), logged


def test_labelling_says_its_progress_in_lines_a_log_file_keeps(corpus):
    """With stderr not a terminal the progress bar is off: a line per tenth of the labels says
    how far the labelling is, and how fast it goes."""
    train, held = corpus
    logged = []
    distill(truncated_draft(target_model(), 1), target_model(), chars, train, held,
            DistillConfig(**{**CFG, "steps": 1}), log=logged.append)
    lines = [m for m in logged if m.startswith("labelling: ")]
    done = [int(re.match(r"labelling: (\d+) of 1024 tokens \(\d+ tokens/s, about \d+ (min|s) left\)$", m)[1])
            for m in lines]
    assert len(done) == 7 and done == sorted(done) and done[-1] < 1024, logged  # 128 tokens a batch: 1/8 .. 7/8
