"""Decoding calls compiled ahead of time (``,compile``): the step that is exported computes what
TubeletLM's calls do (checked eagerly, through cache growth, crops, rows of different lengths and
tree calls), and a package compiled for real decodes as the eager model does, is kept and loaded
again without a compile, and is made again when damaged."""

import pytest
import torch

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.compiled import CompiledLM, DecodingStep, package_path
from tubelet.generate.drafts import ModelDraft
from tubelet.generate.models import TubeletLM
from tubelet.models.decoder import Decoder, DecoderConfig, TokenTree

from .test_feature_draft import target_and_draft


def tiny(layers: int = 2, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(DecoderConfig(vocab_size=50, dim=32, num_layers=layers, num_heads=4, num_kv_heads=2,
                                 mlp_dim=48)).eval()


@torch.no_grad()
def test_the_step_gives_tubelet_lms_logits_through_growth_crops_and_rows_of_different_lengths():
    model = tiny()
    plain, fixed = TubeletLM(model), CompiledLM(model, runner=DecodingStep(model))
    tokens = torch.randint(0, 50, (2, 300))
    for lm in (plain, fixed):
        lm.reset(2)
    # a prompt (row 1 shorter: right padding), calls of 1 and 4 tokens, a crop (a rejected draft), and
    # past the 256 slots the cache starts with (it grows between calls, never inside one)
    for a, b, valid, crop in [(0, 250, [250, 240], None), (250, 251, [1, 1], None), (251, 255, [4, 3], [253, 244]),
                              (253, 260, [7, 7], None), (260, 261, [1, 0], None)]:
        x, valid = tokens[:, a:b], torch.tensor(valid)
        out, ref = fixed.extend(x, valid), plain.extend(x, valid)
        for row, v in enumerate(valid.tolist()):  # padding's logits are meaningless
            assert torch.allclose(out[row, :v], ref[row, :v], atol=1e-5)
        if crop is not None:
            plain.crop(torch.tensor(crop))
            fixed.crop(torch.tensor(crop))
    assert fixed.lengths.tolist() == plain.lengths.tolist() == [261, 251]
    assert fixed.cache.keys[0].shape[2] == 512  # grown by doubling
    for layer in range(2):
        for (k, v), (k_ref, v_ref) in zip(fixed.cache.rows(layer), plain.cache.rows(layer)):
            assert torch.allclose(k, k_ref, atol=1e-5) and torch.allclose(v, v_ref, atol=1e-5)
    x = tokens[:, 270:273]
    assert torch.allclose(fixed.extend_last(x, torch.tensor([3, 2])), plain.extend_last(x, torch.tensor([3, 2])),
                          atol=1e-5)


def test_beam_search_on_the_compiled_step_is_tubelet_lms():
    """Beam search copies rows of the cache (``reorder``): the fixed cache's rows follow."""
    from tubelet.generate.beam import beam_search

    model = tiny(seed=2)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    ref, ref_hypotheses = beam_search(TubeletLM(model), prompts, 12, beams=3)
    out, hypotheses = beam_search(CompiledLM(model, runner=DecodingStep(model)), prompts, 12, beams=3)
    assert out.tokens == ref.tokens
    assert [[h.tokens for h in row] for row in hypotheses] == [[h.tokens for h in row] for row in ref_hypotheses]


@torch.no_grad()
def test_a_tree_call_and_a_move_match_tubelet_lms():
    model = tiny()
    plain, fixed = TubeletLM(model), CompiledLM(model, runner=DecodingStep(model))
    prompt = torch.randint(0, 50, (1, 20))
    # a root and two alternatives after it, each with a child: depth 0 1 1 2 2
    tree = TokenTree(torch.tensor([[0, 1, 1, 2, 2]]), torch.tensor([[[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0],
                                                                      [1, 1, 0, 1, 0], [1, 0, 1, 0, 1]]]).bool())
    candidates = torch.randint(0, 50, (1, 5))
    outs = []
    for lm in (plain, fixed):
        lm.reset(1)
        lm.extend(prompt, torch.tensor([20]))
        outs.append(lm.extend(candidates, torch.tensor([5]), tree))
        lm.move(torch.tensor([22]), torch.tensor([21]))  # the second alternative accepted
        lm.move(torch.tensor([24]), torch.tensor([22]))  # and its child
        lm.crop(torch.tensor([23]))
        outs.append(lm.extend(torch.randint(0, 50, (1, 1), generator=torch.Generator().manual_seed(1)),
                              torch.tensor([1])))
    assert torch.allclose(outs[0], outs[2], atol=1e-5) and torch.allclose(outs[1], outs[3], atol=1e-5)


@pytest.mark.slow
def test_a_compiled_package_decodes_as_the_eager_model_and_is_kept(tmp_path, monkeypatch, capsys):
    """One real compile (without the kernels' timing, ~25 s on two cores): greedy and speculative
    output equal the eager model's; the package is loaded again, not compiled; a damaged one is
    made again."""
    import tubelet.generate.compiled as compiled

    monkeypatch.setenv("TUBELET_CACHE", str(tmp_path))
    model = tiny(layers=1, seed=3)
    lm = CompiledLM(model, quick=True)
    path = package_path(model, quick=True)
    assert path.is_file() and not package_path(model).is_file() and "compiling" in capsys.readouterr().err
    prompts = [[1, 2, 3, 4], [5, 6]]
    greedy = Sampling(temperature=0)
    ref = autoregressive_generate(TubeletLM(model), prompts, 24, sampling=greedy).tokens
    assert autoregressive_generate(lm, prompts, 24, sampling=greedy).tokens == ref
    draft = ModelDraft(TubeletLM(tiny(layers=1, seed=4)))
    assert speculative_generate(lm, draft, prompts, 24, k=3, sampling=greedy).tokens == ref
    assert speculative_generate(lm, draft, prompts, 24, k=3, sampling=greedy, alternatives=(1, 1)).tokens == ref

    good = path.read_bytes()

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")
    monkeypatch.setattr(compiled, "compile_package", no_compile)
    assert autoregressive_generate(CompiledLM(model, quick=True), prompts, 24, sampling=greedy).tokens == ref
    assert "compiling" not in capsys.readouterr().err

    path.write_bytes(good[: len(good) // 3])  # truncated (a disk that filled up, a copy cut short)
    remade = []
    monkeypatch.setattr(compiled, "compile_package", lambda m, p, quick=False: remade.append(p) or p.write_bytes(good))
    assert autoregressive_generate(CompiledLM(model, quick=True), prompts, 24, sampling=greedy).tokens == ref
    assert remade == [path] and "does not load" in capsys.readouterr().err

    other = tiny(layers=1, seed=5)  # other weights: another package
    assert package_path(other, quick=True) != path


def test_each_thread_count_has_its_own_package(tmp_path, monkeypatch):
    """Inductor writes torch's thread count into the kernels it generates (a package compiled on one
    thread never multiplies on two), so a package is kept per thread count."""
    monkeypatch.setenv("TUBELET_CACHE", str(tmp_path))
    model, threads = tiny(layers=1, seed=3), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = package_path(model)
        torch.set_num_threads(2)
        two = package_path(model)
    finally:
        torch.set_num_threads(threads)
    assert one != two and "-t1-" in one.name and "-t2-" in two.name


def test_compile_refuses_what_it_cannot_compile():
    from tubelet.errors import GenerateError
    from tubelet.generate.compiled import check_compilable
    from tubelet.generate.int8 import quantize_int8

    model = tiny()
    assert check_compilable(model) is model
    with pytest.raises(GenerateError, match="int8|Int8"):
        check_compilable(quantize_int8(tiny().to(torch.bfloat16)))
    with pytest.raises(GenerateError, match="tubelet decoder"):
        check_compilable(torch.nn.Linear(2, 2))


def test_only_the_packages_used_last_are_kept(tmp_path):
    import os
    import time

    from tubelet.generate.compiled import KEEP_PACKAGES, _used

    now = time.time()
    paths = [tmp_path / f"decoder-{i}.pt2" for i in range(KEEP_PACKAGES + 2)]
    for age, p in enumerate(paths):
        p.write_bytes(b"x")
        os.utime(p, (now - 100 * age, now - 100 * age))
    old_tmp, new_tmp = tmp_path / ".decoder-9.1.tmp.pt2", tmp_path / ".decoder-9.2.tmp.pt2"
    for p, age in ((old_tmp, 2 * 86400), (new_tmp, 60)):  # a killed compile's leftover; one under way
        p.write_bytes(b"x")
        os.utime(p, (now - age, now - age))
    _used(paths[-1])  # the oldest, used again: kept, and the two used longest ago but it go
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([new_tmp.name, paths[-1].name] + [p.name for p in paths[:KEEP_PACKAGES - 1]])


def test_a_failed_compile_says_so_and_how_to_go_on(tmp_path, monkeypatch):
    import tubelet.generate.compiled as compiled
    from tubelet.errors import GenerateError

    monkeypatch.setenv("TUBELET_CACHE", str(tmp_path))

    def full_disk(model, path, quick=False):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(compiled, "compile_package", full_disk)
    with pytest.raises(GenerateError, match="No space left.*leave out compile"):
        CompiledLM(tiny())


@torch.no_grad()
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "feature draft"])
def test_the_step_exports_as_one_graph_for_any_size(kind):
    """The exported graph (what AOTInductor compiles) computes the eager step's values at sizes other
    than the traced ones; in bf16 the attention's choice of precision no longer fixes the sizes."""
    from tubelet.generate.compiled import causal_tree, export_step, step_of

    model = feature_pair()[1] if kind == "feature draft" else tiny().to(getattr(torch, kind))
    graph = export_step(model).module()
    step = step_of(model)
    layers = len(model.blocks)
    for B, n, capacity in ((1, 1, 256), (3, 4, 96)):
        tokens = torch.randint(0, 40, (B, n))
        depth, visible = causal_tree(B, n)
        kv = [torch.randn(B, 2, capacity, 8) for _ in range(2 * layers)]
        middle = (torch.randn(B, n, 32),) if kind == "feature draft" else (depth, visible)
        args = (tokens, torch.full((B,), n), torch.arange(B) + 7, *middle, torch.arange(n).expand(B, n))
        hidden, logits = graph(*args, [k.clone() for k in kv[:layers]], [v.clone() for v in kv[layers:]])
        hidden_ref, logits_ref = step(*args, kv[:layers], kv[layers:])
        assert torch.allclose(hidden.float(), hidden_ref.float(), atol=1e-5)
        assert torch.allclose(logits.float(), logits_ref.float(), atol=1e-5)


def feature_pair():
    """A toy target and a feature draft of it that agrees in part, folded as decoding uses it."""
    target, draft = target_and_draft()
    return target, draft.fold_input()


@torch.no_grad()
@pytest.mark.parametrize("alternatives", [(), (1, 1)], ids=["chain", "tree"])
def test_a_compiled_feature_draft_over_a_compiled_target_drafts_as_the_eager_ones(alternatives):
    """The feature draft's step (run eagerly, as compiled) over the target's: the same proposals,
    so the same statistics and tokens as FeatureLM over TubeletLM, at T = 1 as greedy."""
    from tubelet.generate.compiled import CompiledFeatureLM, FeatureStep
    from tubelet.generate.drafts import FeatureDraft
    from tubelet.generate.models import FeatureLM

    target, draft = feature_pair()
    prompts = [[1, 2, 3, 4, 9, 12], [5, 6], [7]]
    for sampling in (Sampling(temperature=0), Sampling(temperature=1)):
        outs = []
        for compiled in (False, True):
            lm = CompiledLM(target, runner=DecodingStep(target)) if compiled else TubeletLM(target)
            flm = CompiledFeatureLM(draft, lm, runner=FeatureStep(draft)) if compiled else FeatureLM(draft, lm)
            outs.append(speculative_generate(lm, FeatureDraft(flm), prompts, 20, k=3, sampling=sampling, seed=1,
                                             alternatives=alternatives))
        assert outs[0].tokens == outs[1].tokens
        assert (outs[0].stats.accepted, outs[0].stats.drafted) == (outs[1].stats.accepted, outs[1].stats.drafted)
        assert 0 < outs[1].stats.accepted < outs[1].stats.drafted
