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


# ---------------------------------------------------------------- linear probe, layer-wise decay
def _model(kind="spatiotemporal"):
    import tubelet
    return tubelet.create_model("vivit_micro", kind=kind, num_classes=3, num_frames=4, image_size=32,
                                hidden_size=32, num_layers=3, num_heads=2, mlp_dim=32, temporal_layers=2)


def _optim(**fields):
    from tubelet.config import OptimSection
    return OptimSection(**{"optimizer": "sgd", "lr": 0.1, **fields})


def test_train_only_head_freezes_everything_else_and_trains_the_head():
    from tubelet.train.optim import build_optimizer
    model = _model()
    optimizer = build_optimizer(model, _optim(train_only="head"))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"head.weight", "head.bias"}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.rand(2, 3, 4, 32, 32))[:, 0].sum().backward()  # the head starts at zero: a loss linear in it
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.weight", "head.bias"}


def test_train_only_head_and_norm():
    from tubelet.train.optim import build_optimizer
    model = _model("factorised_encoder")
    build_optimizer(model, _optim(train_only="head,norm"))
    trained = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trained and all(n.startswith("head.") or ".norm" in n or n.startswith("norm") for n in trained)
    assert "spatial.blocks.0.norm1.weight" in trained and "temporal.norm.bias" in trained
    assert "spatial.blocks.0.attn.qkv.weight" not in trained


def test_layer_decay_scales_each_block_and_the_head_trains_at_the_full_rate():
    from tubelet.train.optim import build_optimizer, layer_ids, set_learning_rate
    model = _model("factorised_encoder")  # 3 spatial + 2 temporal blocks: L = 5
    names = [n for n, _ in model.named_parameters()]
    ids, depth = layer_ids(names)
    layer = dict(zip(names, ids))
    assert depth == 5
    assert layer["tokeniser.proj.weight"] == 0 and layer["spatial.blocks.0.attn.qkv.weight"] == 1
    assert layer["temporal.blocks.1.mlp.fc1.weight"] == 5 and layer["head.weight"] == 6
    optimizer = build_optimizer(model, _optim(layer_decay=0.5))
    set_learning_rate(optimizer, 0.1)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert rate[id(params["head.weight"])] == pytest.approx(0.1)
    assert rate[id(params["temporal.blocks.1.mlp.fc1.weight"])] == pytest.approx(0.05)
    assert rate[id(params["spatial.blocks.0.attn.qkv.weight"])] == pytest.approx(0.1 * 0.5 ** 5)
    assert rate[id(params["tokeniser.proj.weight"])] == pytest.approx(0.1 * 0.5 ** 6)
    # weight decay still spares biases and norms
    decay = {id(p): g["weight_decay"] for g in build_optimizer(_model(), _optim(weight_decay=0.1)).param_groups
             for p in g["params"]}
    assert sorted(set(decay.values())) == [0.0, 0.1]


def test_bad_train_only_and_layer_decay_are_config_errors():
    from tubelet.config import RunConfig, validate
    from tubelet.errors import ConfigError
    with pytest.raises(ConfigError, match="optim.train_only"):
        validate(RunConfig().with_values({"optim.train_only": "head,bones"}))
    with pytest.raises(ConfigError, match="optim.layer_decay"):
        validate(RunConfig().with_values({"optim.layer_decay": 1.5}))
    validate(RunConfig().with_values({"optim.train_only": "head,norm", "optim.layer_decay": 0.75}))
