"""Generation and distillation on a GPU: every model, cache and label where its target is, and the
same guarantees as on the CPU (greedy output is the target's greedy path; a draft distilled on the
GPU learns). Skipped without CUDA; `benchmarks/run_gpu_speculative.sh` runs them first."""

from __future__ import annotations

import pytest
import torch

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.drafts import FeatureDraft
from tubelet.generate.loading import Loaded, LoadError, load_draft
from tubelet.generate.models import TubeletLM

from .test_distill import corpus, run, target_model  # noqa: F401 (corpus is a fixture)
from .test_feature_draft import PROMPTS, run_features, target_and_draft

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = torch.device("cuda")


def on_gpu(module: torch.nn.Module) -> bool:
    return all(t.device.type == "cuda" for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("draft_spec", ["truncated:1", "truncated:1,bf16", "ngram:2"])
@pytest.mark.parametrize("alternatives", [(), (2, 1)], ids=["chain", "tree"])
def test_greedy_on_a_gpu_is_the_targets_greedy_path(draft_spec, alternatives):
    if draft_spec.startswith("ngram") and alternatives:
        pytest.skip("prompt lookup proposes one continuation")
    target, _ = target_and_draft()
    target = target.to(GPU)
    loaded = Loaded(TubeletLM(target), target, None)
    draft = load_draft(draft_spec, loaded)
    if hasattr(draft, "lm"):
        assert on_gpu(draft.lm.model)
    greedy = Sampling(0.0)
    plain = autoregressive_generate(TubeletLM(target), PROMPTS, 24, sampling=greedy).tokens
    out = speculative_generate(loaded.lm, draft, PROMPTS, 24, k=3, sampling=greedy, alternatives=alternatives)
    assert out.tokens == plain and out.stats.drafted > 0


def test_sampling_on_a_gpu_keeps_each_rows_stream_its_own():
    target, draft = target_and_draft()
    target, draft = target.to(GPU), draft.to(GPU)
    lm = TubeletLM(target)
    from tubelet.generate.models import FeatureLM
    both = speculative_generate(lm, FeatureDraft(FeatureLM(draft, lm)), PROMPTS[:2], 20, k=3,
                                sampling=Sampling(1.0), seed=[11, 12]).tokens
    alone = speculative_generate(lm, FeatureDraft(FeatureLM(draft, lm)), PROMPTS[1:2], 20, k=3,
                                 sampling=Sampling(1.0), seed=[12]).tokens
    assert both[1] == alone[0]


def test_a_draft_distilled_on_a_gpu_learns_and_loads_there(corpus, tmp_path):  # noqa: F811
    target = target_model().to(GPU)
    draft, report = run_features(corpus, tmp_path / "f", target, steps=60, rounds=1, round_tokens=256,
                                 round_steps=5)
    assert on_gpu(draft) and report["finished"]
    assert report["after"]["acceptance_t1"] > report["before"]["acceptance_t1"] + 0.02, report["stages"]
    loaded = Loaded(TubeletLM(target), target, None)
    feature = load_draft(f"{tmp_path / 'f'},vocab:16", loaded)
    assert isinstance(feature, FeatureDraft) and on_gpu(feature.lm.model)
    greedy = Sampling(0.0)
    out = speculative_generate(loaded.lm, feature, [[1, 2, 3]], 12, k=2, sampling=greedy)
    assert out.tokens == autoregressive_generate(TubeletLM(target), [[1, 2, 3]], 12, sampling=greedy).tokens
    decoder, report = run(corpus, tmp_path / "d", target, steps=30)
    assert on_gpu(decoder) and report["finished"]
    assert on_gpu(load_draft(str(tmp_path / "d"), loaded).lm.model)


def test_an_int8_draft_on_a_gpu_is_refused_naming_what_to_use():
    target, _ = target_and_draft()
    target = target.to(GPU)
    with pytest.raises(LoadError, match=r"use bf16 there, or run on the CPU \(--device cpu\)"):
        load_draft("truncated:1,int8", Loaded(TubeletLM(target), target, None))
