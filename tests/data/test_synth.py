"""The built-in motion dataset: deterministic, readable, and impossible without temporal order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tubelet.data import build_datasets
from tubelet.data.dataset import ClipConfig
from tubelet.data.decode import read_frames
from tubelet.data.synth import CLASSES, PAIRS, SynthConfig, builtin_dataset, generate, render, render_scene

SMALL = SynthConfig(seed=5, videos_per_class=2, val_videos_per_class=1, size=32, frames=12)


def test_reversed_class_is_the_same_video_backwards():
    config = SynthConfig(seed=5, size=32, frames=12, event_order=True)
    assert config.classes[:len(CLASSES)] == CLASSES and len(config.pairs) == len(PAIRS) + 1
    for pair in range(len(config.pairs)):
        forward = render(2 * pair, np.random.default_rng(11), config)
        backward = render(2 * pair + 1, np.random.default_rng(11), config)
        assert np.array_equal(forward[::-1], backward)
        assert not np.array_equal(forward, backward)


def test_the_object_mask_follows_the_object():
    """The masks locate the object: its centre moves as the class says (left, up; in the reversed
    class the other way), it covers what the frames changed, and the facts name what was drawn."""
    config = SynthConfig(seed=5, size=32, frames=12, distractors=0, noise=0)
    for label, axis, sign in ((0, 1, -1), (1, 1, 1), (2, 0, -1), (3, 0, 1)):
        scene = render_scene(label, np.random.default_rng(label), config)
        assert scene.masks.shape == scene.frames.shape[:3] and scene.masks.max() <= 1
        assert np.array_equal(scene.frames, render(label, np.random.default_rng(label), config))
        weight = scene.masks.sum(axis=(1, 2))
        assert (weight > 5).all()
        centre = [np.argwhere(m > 0.5).mean(axis=0)[axis] for m in scene.masks]
        assert sign * (centre[-1] - centre[0]) > 0.2 * config.size, (label, centre)
        # a pixel the object never covers keeps the background's value in every frame
        still = scene.masks.max(axis=0) == 0
        assert np.ptp(scene.frames.astype(int), axis=0)[still].max() <= 1
        assert scene.facts["reversed"] == bool(label % 2) and scene.facts["kind"] in ("digit", "photo")


def test_the_tone_fact_is_the_objects():
    """"bright" is a bright object on a dark background (what a caption says of the object)."""
    config = SynthConfig(seed=5, size=32, frames=4, distractors=0, noise=0)
    tones = set()
    for seed in range(6):
        scene = render_scene(0, np.random.default_rng(seed), config)
        grey, inside = scene.frames[0].mean(axis=-1), scene.masks[0] > 0.9
        brighter = grey[inside].mean() > grey[scene.masks[0] == 0].mean()
        assert scene.facts["tone"] == ("bright" if brighter else "dark"), seed
        tones.add(scene.facts["tone"])
    assert tones == {"bright", "dark"}


def test_generate_writes_a_readable_deterministic_dataset(tmp_path):
    out = generate(tmp_path / "a", SMALL, progress=False, workers=1)
    meta = json.loads((out / "metadata.json").read_text())
    assert [c["name"] for c in meta["classes"]] == CLASSES
    assert meta["classes"][1]["reverse"] == "moving left" and meta["pairs"][0] == [0, 1]
    assert (out / "classes.txt").read_text().splitlines() == CLASSES
    train, val = build_datasets(out, clip=ClipConfig(num_frames=8, stride=1, size=32, views=2, crops=1))
    assert (len(train), len(val)) == (2 * len(CLASSES), len(CLASSES))
    assert train.class_names == (tuple(CLASSES),)
    video = next(r.path for r in train.records if r.label == 3)
    assert video.parent.name == "moving down" and video.name.endswith("_000000_000002.mp4")  # 12 frames at 8 fps
    frames = read_frames(video, range(12))
    assert frames.shape == (12, 32, 32, 3)
    expected = render(3, np.random.default_rng([5, 0, 3, int(video.name[3:8])]), SMALL)
    assert np.abs(frames.astype(int) - expected).mean() < 6  # H.264 at crf 18: close, not exact
    again = generate(tmp_path / "b", SMALL, progress=False, workers=2)  # workers do not matter
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)  # byte-identical
    with pytest.raises(FileExistsError, match="not empty"):
        generate(out, SMALL, progress=False)
    assert val[0]["video"].shape == (2, 8, 32, 32, 3)


def test_event_order_pair_is_written_as_classes_10_and_11(tmp_path):
    config = SynthConfig(seed=2, videos_per_class=1, val_videos_per_class=0, size=16, frames=8, event_order=True)
    assert config.digest() != SynthConfig(seed=2, videos_per_class=1, val_videos_per_class=0, size=16,
                                          frames=8).digest()
    out = generate(tmp_path / "d", config, progress=False, workers=1)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["pairs"][-1] == [10, 11] and meta["classes"][10]["reverse"] == "bobbing then swaying"
    assert (out / "classes.txt").read_text().splitlines() == config.classes
    assert len((out / "train.csv").read_text().splitlines()) == 1 + 12
    with pytest.raises(ValueError, match="8 with event_order"):
        SynthConfig(frames=6, event_order=True)


def test_the_event_order_pair_can_have_its_own_number_of_training_videos(tmp_path):
    config = SynthConfig(seed=2, videos_per_class=1, val_videos_per_class=1, size=16, frames=8,
                         event_order=True, order_videos_per_class=3)
    plain = SynthConfig(seed=2, videos_per_class=1, val_videos_per_class=1, size=16, frames=8, event_order=True)
    assert config.digest() != plain.digest()
    assert plain.digest() == SynthConfig(seed=2, videos_per_class=1, val_videos_per_class=1, size=16, frames=8,
                                         event_order=True, order_videos_per_class=None).digest()
    out = generate(tmp_path / "e", config, progress=False, workers=1)
    labels = [line.split(",")[0] for line in (out / "train.csv").read_text().splitlines()[1:]]
    assert [labels.count(name) for name in config.classes] == [1] * 10 + [3, 3]
    assert len((out / "validate.csv").read_text().splitlines()) == 1 + 12  # validation unchanged
    with pytest.raises(ValueError, match="needs event_order"):
        SynthConfig(order_videos_per_class=3)


# 16 and 17 frames give excursions of 5 frames (an even width would pause at the peak, a third run)
@pytest.mark.parametrize("frames", [16, 17])
def test_no_two_frame_window_spans_both_events_of_the_event_order_pair(frames):
    """Sway and bob each move the object; between them it rests, so no window of two frames at
    stride 1 or 2 (the tubelets of the default recipe) sees part of both excursions."""
    config = SynthConfig(size=32, frames=frames, noise=0, distractors=0, event_order=True)
    for label in (10, 11):
        for i in range(6):
            video = render(label, np.random.default_rng([3, label, i]), config).astype(int)
            moving = np.flatnonzero(np.abs(np.diff(video, axis=0)).sum((1, 2, 3)) > 0)  # steps t -> t+1
            runs = np.split(moving, np.flatnonzero(np.diff(moving) > 1) + 1)
            assert len(runs) == 2, moving  # two excursions, rest before, between and after
            assert runs[1][0] - runs[0][-1] >= 2, moving  # steps f and f+1 are never one of each


def test_builtin_dataset_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TUBELET_CACHE", str(tmp_path))
    config = SynthConfig(seed=1, videos_per_class=1, val_videos_per_class=0, size=16, frames=4)
    first = builtin_dataset(config, progress=False, workers=1)
    assert first.parent == tmp_path and first.name == f"synth-{config.digest()}"
    stamp = (first / "metadata.json").stat().st_mtime_ns
    assert builtin_dataset(config, progress=False) == first
    assert (first / "metadata.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folders left


# -- an order-blind baseline is at chance on every reversed pair; frame differences are not -----
def _clips(split: int, per_class: int, config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    grey = np.array([0.299, 0.587, 0.114], np.float32)
    clips = [render(label, np.random.default_rng([99, split, label, i]), config) @ grey / 255
             for label in range(len(config.classes)) for i in range(per_class)]
    labels = np.repeat(np.arange(len(config.classes)), per_class)
    return np.stack(clips).astype(np.float32), labels  # (N, T, H, W), (N,)


def mean_frame_features(clips: np.ndarray) -> np.ndarray:
    """Order-blind: the mean frame, pooled 4x4. (N, T, H, W) -> (N, H/4 * W/4)."""
    n, t, h, w = clips.shape
    return clips.mean(1).reshape(n, h // 4, 4, w // 4, 4).mean((2, 4)).reshape(n, -1)


def affine_motion(clips: np.ndarray) -> np.ndarray:
    """A global affine motion fit per pair of consecutive frames (brightness constancy,
    I_t + v . grad I = 0 with v = a + B x) -> translation x, y, divergence and curl.
    (N, T, H, W) -> (N, T-1, 4)."""
    n, t, h, w = clips.shape
    gy, gx = np.gradient(clips, axis=(2, 3))
    gx, gy = (gx[:, 1:] + gx[:, :-1]) / 2, (gy[:, 1:] + gy[:, :-1]) / 2
    it = np.diff(clips, axis=1)  # (N, T-1, H, W): the frame differences
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) - np.float32(h / 2)
    a = np.stack([gx, gy, xs * gx, ys * gx, xs * gy, ys * gy], -1).reshape(n, t - 1, -1, 6)
    ata = np.einsum("ntpi,ntpj->ntij", a, a) + 1e-3 * np.eye(6, dtype=np.float32)
    atb = np.einsum("ntpi,ntp->nti", a, -it.reshape(n, t - 1, -1))
    p = np.linalg.solve(ata, atb[..., None])[..., 0]  # (N, T-1, 6): a_x a_y b11 b12 b21 b22
    return np.stack([p[..., 0], p[..., 1], p[..., 2] + p[..., 5], p[..., 4] - p[..., 3]], -1)


def frame_difference_features(clips: np.ndarray) -> np.ndarray:
    """Each a function of one pair of frames, averaged over time (a bag of local motions): the
    affine motion and the change of edge energy. (N, T, H, W) -> (N, 5)."""
    gy, gx = np.gradient(clips, axis=(2, 3))
    edges = (gx ** 2 + gy ** 2).mean((2, 3))  # (N, T)
    return np.concatenate([affine_motion(clips).mean(1), 100 * np.diff(edges, axis=1).mean(1, keepdims=True)], 1)


def motion_axis_sequence(clips: np.ndarray) -> np.ndarray:
    """Ordered: at each step, how much more the motion is horizontal than vertical. (N, T-1)."""
    motion = np.abs(affine_motion(clips))
    return motion[..., 0] - motion[..., 1]


def linear_probe(train_x, train_y, test_x, test_y) -> float:
    """Test accuracy of a ridge-regression linear classifier (one-hot targets, closed form)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.tensor((train_x - mu) / sd, dtype=torch.float64)
    b = torch.tensor((test_x - mu) / sd, dtype=torch.float64)
    a, b = (torch.cat([m, torch.ones(len(m), 1, dtype=m.dtype)], 1) for m in (a, b))  # bias
    classes = sorted(set(train_y.tolist()))
    onehot = torch.tensor([[float(v == c) for c in classes] for v in train_y.tolist()], dtype=a.dtype)
    weight = torch.linalg.solve(a.T @ a + 1.0 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ onehot)
    predicted = torch.tensor(classes)[(b @ weight).argmax(1)]
    return (predicted == torch.as_tensor(test_y)).double().mean().item()


def test_order_blind_baseline_is_at_chance_on_reversed_pairs():
    """Mean frame: chance on every pair. Time-averaged frame differences (a bag of local motions,
    what an average-pool model over tubelets can see): the five motion pairs, not the event-order
    pair. The ordered sequence of motion axes: the event-order pair."""
    config = SynthConfig(size=32, frames=12, event_order=True)
    train_x, train_y = _clips(0, 16, config)
    test_x, test_y = _clips(1, 12, config)
    order_pair = [p[2] for p in config.pairs].index("sway_bob")
    results = {}
    for name, features in [("mean frame", mean_frame_features),
                           ("frame differences", frame_difference_features),
                           ("motion axis sequence", motion_axis_sequence)]:
        f_train, f_test = features(train_x), features(test_x)
        pair_accuracy = []
        for pair in range(len(config.pairs)):
            tr, te = train_y // 2 == pair, test_y // 2 == pair
            pair_accuracy.append(linear_probe(f_train[tr], train_y[tr], f_test[te], test_y[te]))
        results[name] = pair_accuracy
    motion = [a for pair, a in enumerate(results["frame differences"]) if pair != order_pair]
    # 24 test clips per pair, 144 in all: chance is 0.5 +- 0.1 per pair, +- 0.04 over all pairs
    assert np.mean(results["mean frame"]) < 0.62, results
    assert np.mean(motion) > 0.9, results
    assert results["frame differences"][order_pair] < 0.75, results
    assert results["motion axis sequence"][order_pair] > 0.9, results
