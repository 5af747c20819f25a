"""The sampler is deterministic, shards exactly, and resumes mid-epoch; the loader times waits."""

from __future__ import annotations

import shutil

import torch

from tubelet.data.dataset import ClipConfig, build_datasets
from tubelet.data.loader import ClipSampler, make_loader


def test_sampler_deterministic_per_epoch_and_resumable():
    sampler = ClipSampler(50, shuffle=True, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    assert first == list(ClipSampler(50, shuffle=True, seed=3, epoch=2))
    assert all(epoch == 2 for _, epoch in first) and sorted(i for i, _ in first) == list(range(50))
    sampler.set_epoch(3)
    assert [i for i, _ in sampler] != [i for i, _ in first]
    sampler.set_epoch(2, skip=20)
    assert list(sampler) == first[20:] and len(sampler) == 30


def test_sharding_training_and_evaluation():
    train = [list(ClipSampler(10, shuffle=True, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    assert [len(t) for t in train] == [3, 3, 3]
    assert len({i for t in train for i, _ in t}) == 9  # no duplicates, one item dropped
    padded = [list(ClipSampler(10, shuffle=True, rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in padded] == [4, 4, 4]
    evaluation = [ClipSampler(10, shuffle=False, rank=r, world_size=3) for r in range(3)]
    seen = [i for s in evaluation for i, _ in s]
    assert sorted(seen) == list(range(10))  # every video exactly once, no padding
    assert [len(s) for s in evaluation] == [4, 3, 3]


def test_loader_with_workers_times_waits_and_resumes(tmp_path, videos):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            shutil.copy(videos["h264"], tmp_path / cls / f"{k}.mp4")
    train, _ = build_datasets(tmp_path, clip=ClipConfig(num_frames=4, stride=2, size=16), seed=0)
    loader = make_loader(train, batch_size=2, workers=2, seed=0, persistent_workers=True)
    assert loader.loader.pin_memory == torch.cuda.is_available()
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 3
    assert all(b["data_wait"] >= 0 and b["video"].shape == (2, 4, 16, 16, 3) for b in batches)
    loader.set_epoch(1, skip=2)  # resume after one batch of 2: the same remaining batches
    resumed = list(loader)
    assert len(resumed) == 2
    for a, b in zip(batches[1:], resumed):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["video"], b["video"])
