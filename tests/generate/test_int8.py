"""Int8 drafts: the layer multiplies by its dequantised weight, and a draft with int8 weights keeps
speculative decoding exact (greedy output equal to plain greedy output)."""

from __future__ import annotations

import pytest
import torch

from tubelet.generate import Sampling, autoregressive_generate, speculative_generate
from tubelet.generate.int8 import Int8Linear, quantize_int8
from tubelet.generate.loading import LoadError, load_draft, load_model

from .test_commands import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_int8_linear_multiplies_by_its_rows_rounded_to_int8():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=False)
    q = Int8Linear(linear)
    w = linear.weight.detach()
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() == 127
    step = q.scale.float()[:, None]  # half a step of rounding (a whole one where 127 clamps)
    assert ((q.dequantized() - w).abs() <= step).all()
    assert (q.dequantized() - w).abs().mean() < step.mean() / 3
    x = torch.randn(3, 5, 64)
    expected = x.bfloat16().float() @ q.dequantized().T  # the bf16 input times the dequantised weight
    torch.testing.assert_close(q(x).float(), expected, rtol=2e-2, atol=2e-2)
    assert q(x).shape == (3, 5, 48)
    biased = torch.nn.Linear(64, 48)  # a feature draft's fc has a bias, kept in bfloat16
    torch.testing.assert_close(Int8Linear(biased)(x).float(), x.bfloat16().float() @ Int8Linear(biased).dequantized().T
                               + biased.bias.detach().bfloat16().float(), rtol=2e-2, atol=2e-2)


def test_an_int8_draft_keeps_greedy_output_and_reports_what_it_sampled_from(tmp_path):
    target = load_model(tiny(tmp_path, layers=3))
    draft = load_draft("truncated:2,int8", target)
    layers = [m for m in draft.lm.model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 2 * 5 + 1  # per block: qkv, proj, gate, up, down; and the head
    assert not any(isinstance(m, torch.nn.Linear) for m in draft.lm.model.modules())
    prompt = [5, 9, 17, 5, 9]
    plain = autoregressive_generate(target.lm, [prompt], 16, sampling=Sampling(0)).tokens
    assert speculative_generate(target.lm, draft, [prompt], 16, k=3, sampling=Sampling(0)).tokens == plain
    out = speculative_generate(target.lm, draft, [prompt] * 2, 16, k=3, sampling=Sampling(1.0), seed=[1, 2])
    assert all(len(t) == 16 for t in out.tokens)
    with pytest.raises(LoadError, match="for a draft"):
        load_model(tiny(tmp_path) + ",int8")


def test_quantize_int8_refuses_a_model_off_the_cpu():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False)).to("meta")
    with pytest.raises(ValueError, match="on a CPU"):
        quantize_int8(model)
