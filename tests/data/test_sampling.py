"""Clip, view and crop index math."""

from __future__ import annotations

import numpy as np
import pytest

from tubelet.data import sampling


def test_training_clip_stays_in_range_and_is_strided():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = sampling.training_clip(8, 2, 10, 60, rng)
        assert idx.min() >= 10 and idx.max() < 60
        assert np.all(np.diff(idx) == 2)
        starts.add(int(idx[0]))
    assert min(starts) == 10 and max(starts) == 60 - 15  # every start in [first, stop - span]


def test_short_video_loops():
    idx = sampling.training_clip(16, 1, 0, 10, np.random.default_rng(0))
    assert idx.tolist() == list(range(10)) + list(range(6))
    views = sampling.evaluation_clips(4, 3, 5, 9, views=2)  # 4 frames, span 10 > 4
    assert views.tolist() == [[5, 8, 7, 6], [5, 8, 7, 6]]


def test_evaluation_views_evenly_spaced_cover_video():
    views = sampling.evaluation_clips(8, 2, 0, 100, views=4)  # span 15
    assert views.shape == (4, 8)
    assert views[0, 0] == 0 and views[-1, -1] == 99
    starts = views[:, 0]
    assert np.all(np.abs(np.diff(starts) - 85 / 3) <= 1)
    one = sampling.evaluation_clips(8, 2, 0, 100, views=1)
    assert one[0, 0] == 42  # a single view is centred


def test_crop_boxes_landscape_and_portrait():
    assert sampling.crop_boxes(224, 398, 224) == [(0, 0, 224, 224), (0, 87, 224, 224),
                                                  (0, 174, 224, 224)]  # left / centre / right
    assert sampling.crop_boxes(398, 224, 224) == [(0, 0, 224, 224), (87, 0, 224, 224),
                                                  (174, 0, 224, 224)]  # top / middle / bottom
    assert sampling.crop_boxes(300, 400, 224, crops=1) == [(38, 88, 224, 224)]
    with pytest.raises(ValueError, match="smaller"):
        sampling.crop_boxes(100, 400, 224)


def test_scale_jitter_box_range():
    rng = np.random.default_rng(0)
    sides = []
    for _ in range(300):
        top, left, h, w = sampling.scale_jitter_box(240, 320, 224, (0.9, 1.33), rng, short_side=256)
        assert h == w and 0 <= top <= 240 - h and 0 <= left <= 320 - w
        sides.append(h)
    # side = 224 * 240 / (f * 256) for f in [0.9, 1.33]: 158 .. 233 pixels
    assert 158 <= min(sides) < 165 and 226 < max(sides) <= 233
    assert sampling.scale_jitter_box(50, 60, 224, (0.5, 0.5), rng, short_side=224)[2] == 50  # clipped


def test_item_seed_depends_on_seed_epoch_index():
    draw = lambda *key: sampling.item_seed(*key).integers(1 << 30)  # noqa: E731
    assert draw(0, 1, 2) == draw(0, 1, 2)
    assert len({draw(0, 1, 2), draw(0, 2, 2), draw(0, 1, 3), draw(1, 1, 2)}) == 4


def test_shard_eval_exactly_once_and_train_padded():
    items = np.arange(10)
    parts = [sampling.shard(items, r, 4, pad=False) for r in range(4)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    padded = [sampling.shard(items, r, 4, pad=True) for r in range(4)]
    assert {len(p) for p in padded} == {3}
    with pytest.raises(ValueError, match="rank 4"):
        sampling.shard(items, 4, 4, pad=False)


def test_non_square_crops_cover_and_spread_along_the_spare_side():
    # a (160, 288) crop of a 4:3 frame: the width limits, so the frame becomes 216 x 288
    assert sampling.cover_shape(480, 640, (160, 288)) == (216, 288)
    assert sampling.cover_shape(720, 1280, (160, 288)) == (162, 288)
    assert sampling.cover_shape(240, 320, 224) == (224, 299)  # square: the short side is the size
    assert sampling.crop_boxes(216, 288, (160, 288)) == [(0, 0, 160, 288), (28, 0, 160, 288),
                                                        (56, 0, 160, 288)]  # room down only
    assert sampling.crop_boxes(160, 300, (160, 288)) == [(0, 0, 160, 288), (0, 6, 160, 288),
                                                        (0, 12, 160, 288)]
    rng = np.random.default_rng(0)
    for _ in range(100):
        top, left, h, w = sampling.scale_jitter_box(480, 640, (160, 288), (0.9, 1.33), rng)
        assert abs(w / h - 288 / 160) < 0.02 and top + h <= 480 and left + w <= 640
    big = sampling.scale_jitter_box(40, 200, (160, 288), (0.5, 0.5), rng)  # shrunk to fit, same shape
    assert big[2] == 40 and abs(big[3] / big[2] - 1.8) < 0.05
