"""The recipe's schedule and weight averaging."""

import math

import pytest
import torch

from tubelet.train.optim import EMA, learning_rate


def test_linear_warmup_then_cosine_to_the_minimum():
    lr = [learning_rate(s, base=0.1, total=100, warmup=10) for s in range(100)]
    assert lr[0] == pytest.approx(0.01) and lr[9] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lr[:10], lr[1:10]))  # rising during warm-up
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))  # falling after it
    mid = 10 + 45
    assert lr[mid] == pytest.approx(0.05, abs=1e-9)  # halfway through the cosine
    assert learning_rate(100, base=0.1, total=100, warmup=10, minimum=0.001) == pytest.approx(0.001)


def test_no_warmup_starts_at_the_base_rate():
    assert learning_rate(0, base=0.5, total=10, warmup=0) == pytest.approx(0.5)
    assert learning_rate(5, base=0.5, total=10, warmup=0) == pytest.approx(0.25 * (1 + math.cos(math.pi / 2)))


def test_ema_moves_towards_the_weights():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, before + 0.1, atol=1e-6)
