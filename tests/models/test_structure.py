"""Which tokens each attention mixes, found by perturbing one token and watching the outputs."""

import torch

from tubelet.models import Attention, ViViTConfig
from tubelet.models.blocks import FactorisedSelfAttentionBlock

T, S, D = 3, 4, 16


def moved(fn, x, t0, s0):
    """(T, S) mask of output tokens that change when input token (t0, s0) changes."""
    y = fn(x)
    x2 = x.clone()
    x2[0, t0 * S + s0] += torch.randn(D)
    return ((fn(x2) - y).abs().amax(-1) > 1e-6)[0].view(T, S)


def expected(t0=None, s0=None):
    m = torch.zeros(T, S, dtype=torch.bool)
    if t0 is not None:
        m[t0, :] = True
    if s0 is not None:
        m[:, s0] = True
    return m


def test_model3_spatial_attention_mixes_one_frame_and_temporal_one_location():
    torch.manual_seed(0)
    cfg = ViViTConfig(kind="factorised_self_attention", classifier="gap", hidden_size=D, num_heads=2,
                      mlp_dim=32, num_layers=1, num_frames=2 * T, image_size=(32, 32), patch_size=16)
    block = FactorisedSelfAttentionBlock(cfg).eval()
    x = torch.randn(1, T * S, D)
    with torch.no_grad():
        assert torch.equal(moved(lambda z: block._space(z, T, S), x, 1, 2), expected(t0=1))
        assert torch.equal(moved(lambda z: block._time(z, T, S), x, 1, 2), expected(s0=2))
        # The whole block (space then time, then a per-token MLP) reaches the frame and then
        # every location's time line: all of frame 1's locations spread over time.
        assert moved(lambda z: block(z, (T, S)), x, 1, 2).all()


def test_model4_time_heads_see_one_location_and_space_heads_one_frame():
    torch.manual_seed(0)
    attn = Attention(D, 4).eval()
    x = torch.randn(1, T * S, D)
    half = 2 * (D // 4)
    for silence, want in ((slice(half, None), expected(s0=2)), (slice(0, half), expected(t0=1))):
        with torch.no_grad():
            attn.proj.weight.normal_()
            attn.proj.weight[:, silence] = 0  # keep only the time heads, then only the space heads
            got = moved(lambda z: attn(z, grid=(T, S)), x, 1, 2)
        assert torch.equal(got, want), (silence, got)
