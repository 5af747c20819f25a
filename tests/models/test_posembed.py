"""Position-embedding resize on the (t, h, w) grid: identity, CLS row, repetition over time."""

from __future__ import annotations

import torch

from tubelet.models.posembed import infer_grid, repeat_pos_embed_in_time, resize_pos_embed

D = 6


def test_unchanged_grid_is_identity():
    pos = torch.randn(1, 1 + 4 * 3 * 5, D)
    assert resize_pos_embed(pos, (4, 3, 5), (4, 3, 5)) is pos


def test_cls_row_is_kept_and_shapes_follow_the_grid():
    pos = torch.randn(1, 1 + 4 * 3 * 3, D)
    out = resize_pos_embed(pos, (4, 3, 3), (6, 5, 7))
    assert out.shape == (1, 1 + 6 * 5 * 7, D)
    torch.testing.assert_close(out[:, 0], pos[:, 0], rtol=0, atol=0)
    no_cls = resize_pos_embed(pos[:, 1:], (4, 3, 3), (2, 5, 5))
    assert no_cls.shape == (1, 2 * 5 * 5, D)


def test_temporally_repeated_embedding_stays_repeated():
    image = torch.randn(1, 1 + 4 * 4, D)
    pos = repeat_pos_embed_in_time(image, (4, 4), 8)  # (1, 1 + 8*4*4, D)
    for new in [(3, 4, 4), (16, 4, 4), (5, 6, 3)]:
        grid = resize_pos_embed(pos, (8, 4, 4), new)[:, 1:].reshape(new[0], new[1] * new[2], D)
        assert torch.allclose(grid, grid[:1].expand_as(grid), atol=1e-6), new
    # and time-only resizing does not touch the spatial rows
    same_space = resize_pos_embed(pos, (8, 4, 4), (3, 4, 4))[:, 1:].reshape(3, 16, D)
    torch.testing.assert_close(same_space[0], image[0, 1:], atol=1e-6, rtol=0)


def test_linear_in_time_interpolates_between_frames():
    # two token frames with embeddings 0 and 1: upsampling to 4 gives 0, .25, .75, 1 (half-pixel)
    pos = torch.cat([torch.zeros(1, 1, D), torch.ones(1, 1, D)], dim=1)
    out = resize_pos_embed(pos, (2, 1, 1), (4, 1, 1))[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_spatial_resize_round_trips_smooth_embeddings():
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    smooth = torch.stack([ys, xs, ys * xs, ys + xs, ys - xs, ys * 0 + 1], -1).reshape(1, 64, D)
    back = resize_pos_embed(resize_pos_embed(smooth, (1, 8, 8), (1, 16, 16)), (1, 16, 16), (1, 8, 8))
    assert (back - smooth).abs().max() < 0.05


def test_infer_grid():
    assert infer_grid(8 * 4 * 4, (4, 4, 4)) == (8, 4, 4)
    assert infer_grid(4 * 7 * 7, (4, 4, 4)) == (4, 7, 7)
    assert infer_grid(13, (4, 2, 2)) is None
