"""Reference (scenic, Flax) weights -> tubelet: logits equal the reference's on every fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tubelet.convert.scenic import config_from_scenic, convert_scenic_params, load_scenic, read_scenic_params
from tubelet.models import ConfigError

CASES = ["model1_spatiotemporal_token", "model1_uniform_frame_sampling_token",
         "model2_factorised_encoder_token", "model3_factorised_self_attention_gap",
         "model4_factorised_dot_product_gap"]
TOL = 1e-4


def _case(folder, name):
    cfg = config_from_scenic(json.loads((folder / f"{name}.json").read_text()))
    z = np.load(folder / f"{name}.npz")
    x = torch.from_numpy(z["x"]).permute(0, 4, 1, 2, 3)  # (B, T, H, W, C) -> (B, C, T, H, W)
    return cfg, z, x, torch.from_numpy(z["logits"])


@pytest.mark.parametrize("name", CASES)
def test_npz_mapping_matches_reference_logits(scenic_fixtures, name):
    cfg, z, x, ref = _case(scenic_fixtures, name)
    params = {k[len("params/"):]: z[k] for k in z.files if k.startswith("params/")}
    model = load_scenic(params, cfg)
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() < TOL


@pytest.mark.parametrize("name", CASES)
def test_msgpack_checkpoint_matches_reference_logits(scenic_fixtures, name):
    cfg, _, x, ref = _case(scenic_fixtures, name)
    model = load_scenic(scenic_fixtures / f"{name}.msgpack", cfg)
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() < TOL


def test_msgpack_and_npz_hold_the_same_parameters(scenic_fixtures):
    name = CASES[2]
    a = read_scenic_params(scenic_fixtures / f"{name}.msgpack")
    b = read_scenic_params(scenic_fixtures / f"{name}.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_missing_parameter_is_named(scenic_fixtures):
    cfg, z, _, _ = _case(scenic_fixtures, CASES[0])
    params = {k[len("params/"):]: z[k] for k in z.files if k.startswith("params/")}
    del params["Transformer/encoderblock_1/LayerNorm_0/scale"]
    with pytest.raises(ConfigError, match="encoderblock_1/LayerNorm_0/scale.*num_layers=2"):
        convert_scenic_params(params, cfg)


def test_wrong_width_names_tensor_shapes_and_field(scenic_fixtures):
    cfg, _, _, _ = _case(scenic_fixtures, CASES[0])
    with pytest.raises(ConfigError, match=r"mlp\.fc1\.weight.*\(64, 32\).*\(128, 32\).*mlp_dim"):
        load_scenic(scenic_fixtures / f"{CASES[0]}.msgpack", cfg.replace(mlp_dim=128))


def test_checkpoint_of_another_clip_length_is_resized(scenic_fixtures):
    cfg, _, x, _ = _case(scenic_fixtures, CASES[0])
    model = load_scenic(scenic_fixtures / f"{CASES[0]}.msgpack", cfg.replace(num_frames=16))
    assert model.encoder.pos_embed.shape == (1, 1 + 8 * 4 * 4, 32)
    with torch.no_grad():
        assert torch.isfinite(model(x.repeat(1, 1, 2, 1, 1))).all()
