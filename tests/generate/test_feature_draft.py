"""Feature drafts (EAGLE): a draft that reads the target's final hidden states. Its output is
the target's (greedy path, distribution), its cache is what reading every token with the
target's features gives, and its distillation keeps those features with the labels."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tubelet.errors import GenerateError
from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.distill import DistillConfig, distill
from tubelet.generate.drafts import FeatureDraft
from tubelet.generate.loading import Loaded, LoadError, load_draft
from tubelet.generate.lossless import TARGET_TABLE, V, ToyLM, joint_test, marginal_tests
from tubelet.generate.models import FeatureLM, Features, TubeletLM, extend_last
from tubelet.models.decoder import Decoder, DecoderConfig, FeatureDraftModel, FoldedInput

from .test_distill import CFG, chars, corpus, target_model  # noqa: F401 (corpus is a fixture)
from .test_drafts import REPEATING, generate
from .test_lossless import N_BATCH, P_MIN

pytestmark = pytest.mark.usefixtures("one_thread")


def target_and_draft(seed: int = 1) -> tuple[Decoder, FeatureDraftModel]:
    """A toy target whose greedy path varies, and a feature draft that agrees with it only in part."""
    torch.manual_seed(seed)
    target = Decoder(DecoderConfig(vocab_size=40, dim=32, num_layers=3, num_heads=4, num_kv_heads=2, mlp_dim=64,
                                   tie_embeddings=False)).eval()
    with torch.no_grad():
        for p in target.parameters():
            p.mul_(8.0 if p.ndim > 1 else 1.0)
    draft = FeatureDraftModel.from_target(target, 1)
    with torch.no_grad():
        draft.fc.weight.add_(torch.randn_like(draft.fc.weight) * 0.05)
    return target, draft.eval()


PROMPTS = [[1, 2, 3, 4, 9, 12], [5, 6], [7]]


@pytest.mark.parametrize("alternatives", [(), (3, 1)], ids=["chain", "tree"])
@pytest.mark.parametrize("k", [1, 3])
def test_greedy_with_a_feature_draft_is_the_targets_greedy_path(k, alternatives):
    target, draft = target_and_draft()
    greedy = Sampling(0.0)
    plain = autoregressive_generate(TubeletLM(target), PROMPTS, 30, sampling=greedy).tokens
    lm = TubeletLM(target)
    out = speculative_generate(lm, FeatureDraft(FeatureLM(draft, lm)), PROMPTS, 30, k=k, sampling=greedy,
                               alternatives=alternatives)
    assert out.tokens == plain
    assert 0 < out.stats.accepted < out.stats.drafted  # it proposed, and was sometimes wrong
    assert (out.stats.alternatives_accepted > 0) == bool(alternatives)  # a candidate was taken


def head_rows(model: torch.nn.Module) -> list[int]:
    """The rows each call of ``model.head`` multiplies, recorded as they happen."""
    rows: list[int] = []
    model.head.register_forward_hook(lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    return rows


class OnlyExtend:
    """A CausalLM with ``extend`` alone (a plug-in written to the protocol)."""

    def __init__(self, lm: TubeletLM) -> None:
        self.lm, self.vocab_size = lm, lm.vocab_size

    def extend(self, tokens, num_valid):
        return self.lm.extend(tokens, num_valid)


@pytest.mark.parametrize("kind", ["decoder", "decoder keeping features", "feature draft", "protocol only"])
def test_extend_last_gives_the_last_rows_of_extend_with_one_head_row_per_sequence(kind):
    target, draft = target_and_draft()
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    num_valid = torch.tensor([4, 2, 1])

    def lm():
        t = TubeletLM(target)
        t.reset(3)
        t.keep_features = kind == "decoder keeping features"
        if kind == "feature draft":
            t.keep_features = True
            t.extend(tokens, num_valid)
            f = FeatureLM(draft, t)
            f.reset(3)
            f.observe(t.lengths)
            return f
        return OnlyExtend(t) if kind == "protocol only" else t

    full, last = lm(), lm()
    expected = full.extend(tokens, num_valid)[torch.arange(3), num_valid - 1]
    model = draft if kind == "feature draft" else target
    rows = head_rows(model)
    got = extend_last(last, tokens, num_valid)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    inner = getattr(last, "lm", last)
    assert inner.lengths.tolist() == getattr(full, "lm", full).lengths.tolist() == [4, 2, 1]
    assert rows == ([3 * 4] if kind == "protocol only" else [3])  # the head ran on each row's last token only
    if kind == "decoder keeping features":  # a feature draft still reads every token's feature
        assert last.last_features.hidden.shape == (3, 4, target.cfg.dim)


def test_a_drafting_call_after_the_first_is_the_general_call_without_its_lookups():
    target, draft = target_and_draft()
    lm = TubeletLM(target)
    lm.reset(2)
    lm.keep_features = True
    lm.extend(torch.tensor([[1, 2], [5, 0]]), torch.tensor([2, 1]))  # every token but each row's last
    general = FeatureLM(draft, lm)
    general.reset(2)
    general.observe(lm.lengths)
    extend_last(general, torch.tensor([[1, 2, 3], [5, 6, 0]]), torch.tensor([3, 2]))
    own = copy.deepcopy(general)
    for token, num_valid in (([[7], [9]], [1, 1]), ([[8], [0]], [1, 0]), ([[4], [2]], [1, 1])):
        token, num_valid = torch.tensor(token), torch.tensor(num_valid)
        expected, got = extend_last(general, token, num_valid), own.extend_own(token, num_valid)
        torch.testing.assert_close(got[num_valid > 0], expected[num_valid > 0], rtol=1e-6, atol=1e-6)
        for name in ("lengths", "predicted_at", "true", "known"):
            assert getattr(own, name).tolist() == getattr(general, name).tolist(), name
        torch.testing.assert_close(own.predicted, general.predicted)
    assert own.lengths.tolist() == [6, 4]


def test_a_folded_input_layer_computes_what_fc_does(tmp_path):
    _, draft = target_and_draft()
    tokens = torch.tensor([[3, 9, 27], [1, 0, 39]])
    previous = torch.randn(2, 3, draft.cfg.dim)
    expected = draft(tokens, previous)
    folded = draft.fold_input()
    assert isinstance(folded.fc, FoldedInput) and folded.fc.table.shape == (40, draft.cfg.dim)
    torch.testing.assert_close(folded(tokens, previous), expected, rtol=1e-5, atol=1e-5)
    assert folded.fold_input().fc is folded.fc  # folding twice changes nothing
    with pytest.raises(ValueError, match="before folding"):
        folded.save(tmp_path / "folded")


class KeepingFeatureLM(FeatureLM):
    """Wrong: keeps the tokens it read with its own predicted features once they are accepted."""

    def crop(self, lengths):
        self.true = torch.maximum(self.true, torch.minimum(self.lengths, lengths))
        super().crop(lengths)


@pytest.mark.parametrize("alternatives", [(), (2, 1)], ids=["chain", "tree"])
@pytest.mark.parametrize("lm_class,right", [(FeatureLM, True), (KeepingFeatureLM, False)])
def test_the_drafts_cache_is_every_token_read_with_the_targets_features(lm_class, right, alternatives):
    target, draft = target_and_draft()
    lm = TubeletLM(target)
    feature_lm = lm_class(draft, lm)
    worst = []

    def check(rows):
        for r in range(rows.batch_size):
            n = int(feature_lm.lengths[r])
            assert n <= int(rows.lengths[r]) - 1
            if n == 0:
                continue
            x = rows.buffer[r:r + 1, :n]
            with torch.no_grad():
                f = target.features(rows.buffer[r:r + 1, :int(rows.lengths[r])])
                previous = torch.cat([torch.zeros_like(f[:, :1]), f[:, :-1]], dim=1)[:, :n]
                cache = draft.new_cache(1)
                draft.features(x, previous, cache)
            keys = feature_lm.cached(r)[0][0]
            worst.append(float((keys - cache.rows(0)[0][0]).abs().max()))

    out = speculative_generate(lm, FeatureDraft(feature_lm), PROMPTS, 30, k=3, sampling=Sampling(1.0), seed=3,
                               on_step=check, alternatives=alternatives)
    assert out.stats.accepted > 0 and worst
    assert (out.stats.alternatives_accepted > 0) == bool(alternatives)
    assert (max(worst) < 1e-4) == right, max(worst)


class FeaturedToyLM(ToyLM):
    """The toy target of the distribution tests, with "features": its log-probabilities (padded to D)."""

    D = 8

    def __init__(self, table):
        super().__init__(table)
        self.keep_features, self.last_features = False, None

    def extend(self, tokens, num_valid):
        start = self.lengths.clone()
        logits = super().extend(tokens, num_valid)
        hidden = torch.nn.functional.pad(logits.float().clamp(min=-30.0), (0, self.D - V))
        self.last_features = Features(start, hidden, num_valid)
        return logits


def toy_feature_draft():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=V, dim=FeaturedToyLM.D, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=16)
    model = FeatureDraftModel(cfg, torch.randn(V, cfg.dim), torch.randn(V, cfg.dim) * 2).eval()
    with torch.no_grad():  # the draft leans on the target's log-probabilities: it agrees in part
        model.fc.weight[:, cfg.dim:].add_(torch.eye(cfg.dim) * 2)
    return FeatureDraft(FeatureLM(model, FeaturedToyLM(TARGET_TABLE)))


def generate_featured(k, sampling, n, prompt, seed):
    draft = toy_feature_draft()
    gen = speculative_generate(draft.lm.target, draft, [prompt] * n, 5, k=k, sampling=sampling, seed=seed)
    return torch.tensor(gen.tokens), gen.stats


@pytest.mark.parametrize("sampling,k", [(Sampling(1.0), 3), (Sampling(0.8, top_k=4, top_p=0.9), 2)],
                         ids=["T1-K3", "T0.8-top4-p0.9-K2"])
def test_a_feature_draft_samples_from_the_target(sampling, k):
    tokens, stats = generate_featured(k, sampling, N_BATCH, REPEATING, seed=7 * k)
    r = joint_test(tokens, sampling, REPEATING)
    assert r["impossible"] == 0 and r["p"] > P_MIN and r["tv"] < r["tv_max"], r
    marginals = marginal_tests(tokens, sampling, REPEATING)
    assert min(marginals) > P_MIN / len(marginals), marginals
    assert 0 < stats.accepted < stats.drafted


def test_the_first_step_is_the_targets_alone():
    draft = toy_feature_draft()
    out = speculative_generate(draft.lm.target, draft, [REPEATING] * 4, 1, k=3, sampling=Sampling(1.0))
    assert out.stats.target_calls == 1 and out.stats.drafted == 0 and draft.lm.calls == 0


def run_features(corpus, out, target, resume=False, **changes):  # noqa: F811 (corpus)
    train, held = corpus
    draft = FeatureDraftModel.from_target(target, 1)
    report = distill(draft, target, chars, train, held, DistillConfig(**{**CFG, **changes}), log=lambda m: None,
                     out=out, resume=resume, meta={"target": "toy"}, about={"target": "toy", "layers": 1})
    return draft, report


def test_distilled_feature_draft_keeps_the_targets_features_and_learns(corpus, tmp_path):  # noqa: F811
    from safetensors.torch import load_file
    target = target_model()
    draft, report = run_features(corpus, tmp_path / "d", target, steps=60)
    shard = load_file(str(tmp_path / "d" / "labels" / "corpus-00000.safetensors"))
    with torch.no_grad():
        f = target.features(shard["tokens"].long())
    assert shard["features"].dtype == torch.bfloat16
    torch.testing.assert_close(shard["features"].float(), f, atol=0.05, rtol=0.01)
    assert report["after"]["acceptance_t1"] > report["before"]["acceptance_t1"] + 0.02, report["stages"]
    assert "acceptance_t1_depth2" in report["after"]
    saved = json.loads((tmp_path / "d" / "config.json").read_text())
    assert saved["model"] == "feature-draft"
    # a resumed run finds the same draft, without the target's embedding and head in its files
    again = FeatureDraftModel.load(tmp_path / "d", target.embed.weight.detach(), target.head.weight.detach())
    for name, value in draft.trained_state().items():
        assert torch.equal(value, again.trained_state()[name]), name
    _, resumed = run_features(corpus, tmp_path / "d", target, resume=True, steps=60)
    assert resumed["finished"] and resumed["steps"] == 60


def test_a_feature_round_trains_on_what_the_target_wrote(corpus, tmp_path):  # noqa: F811
    from safetensors.torch import load_file
    target = target_model()
    _, report = run_features(corpus, tmp_path / "a", target, steps=10, rounds=1, round_tokens=256, round_steps=5)
    assert [s["stage"] for s in report["stages"]] == ["start", "train", "round 1"]
    assert report["steps"] == 15 and report["round_tokens"] == 256
    t = load_file(str(tmp_path / "a" / "labels" / "round-1-00000.safetensors"))
    tokens = t["tokens"].long()
    texts = [p.read_text() for p in corpus[0]]
    assert all(any("".join(map(chr, row[:16].tolist())) in text for text in texts) for row in tokens)
    # the second half: the target's own samples at T = 1 (the draft cannot write without it)
    wrote = autoregressive_generate(TubeletLM(target), tokens[:4, :16].tolist(), 16, sampling=Sampling(1.0),
                                    seed=[[0, 1, 0, b] for b in range(4)])
    assert wrote.tokens == tokens[:4, 16:].tolist()
    with torch.no_grad():
        f = target.features(tokens)
    torch.testing.assert_close(t["features"].float(), f, atol=0.05, rtol=0.01)
    assert all(0.0 < s["acceptance_t1_written"] <= 1.0 for s in report["stages"])


def test_a_feature_run_refuses_the_labels_of_a_decoder_run(corpus, tmp_path):  # noqa: F811
    from .test_distill import run
    target = target_model()
    run(corpus, tmp_path / "d", target, steps=2)
    with pytest.raises(GenerateError, match="features=None, not True"):
        run_features(corpus, tmp_path / "d", target, resume=True, steps=2)


def test_load_draft_reads_a_feature_draft_with_its_options(corpus, tmp_path):  # noqa: F811
    target = target_model()
    run_features(corpus, tmp_path / "d", target, steps=2)
    loaded = Loaded(TubeletLM(target), target, None)
    draft = load_draft(f"{tmp_path / 'd'},vocab:16,fp32", loaded)
    assert isinstance(draft, FeatureDraft) and draft.lm.target is loaded.lm and loaded.lm.keep_features
    assert draft.lm.model.head.weight.shape == (16, 32) and len(draft.vocab) == 16
    out = speculative_generate(loaded.lm, draft, [[1, 2, 3]], 12, k=2, sampling=Sampling(0.0))
    assert out.tokens == autoregressive_generate(TubeletLM(target), [[1, 2, 3]], 12, sampling=Sampling(0.0)).tokens
    from tubelet.generate.int8 import Int8Linear
    int8 = load_draft(f"{tmp_path / 'd'},int8", loaded).lm.model  # fc folded: a table, and its feature half in int8
    assert isinstance(int8.fc, FoldedInput) and int8.fc.table.dtype == torch.bfloat16
    assert isinstance(int8.fc.feature, Int8Linear)
    assert isinstance(int8.head, Int8Linear) and isinstance(int8.blocks[0].mlp.down, Int8Linear)
    other = Decoder(DecoderConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, num_kv_heads=2, mlp_dim=48))
    with pytest.raises(LoadError, match="64"):
        load_draft(str(tmp_path / "d"), Loaded(TubeletLM(other), other, None))
    weights = tmp_path / "d" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(LoadError, match="cannot load this feature draft"):
        load_draft(str(tmp_path / "d"), loaded)


def test_ctrl_c_in_a_feature_run_resumes_exactly(corpus, tmp_path, monkeypatch):  # noqa: F811
    from .test_distill import interrupted_at_step
    target = target_model()
    whole, _ = run_features(corpus, tmp_path / "whole", target)
    with interrupted_at_step(13, "feature_distill_loss", monkeypatch), pytest.raises(KeyboardInterrupt):
        run_features(corpus, tmp_path / "broken", target)
    assert (tmp_path / "broken" / "checkpoints" / "step-0000012").is_dir()
    resumed, report = run_features(corpus, tmp_path / "broken", target, resume=True)
    assert report["finished"] and report["steps"] == CFG["steps"]
    for name, value in whole.trained_state().items():
        assert torch.equal(value, resumed.trained_state()[name]), name


def test_bf16_training_of_a_feature_draft_does_not_warn_about_its_norms(corpus, tmp_path):  # noqa: F811
    """Under bf16 autocast the draft's norms get bf16 inputs and float32 weights; torch's warning
    that its fused kernel cannot take them reads like a fault and is not shown."""
    import warnings
    target = target_model()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _, report = run_features(corpus, tmp_path / "d", target, steps=3, train_precision="bf16")
    assert report["steps"] == 3
    assert not [w for w in shown if "Mismatch dtype" in str(w.message)], [str(w.message) for w in shown]
