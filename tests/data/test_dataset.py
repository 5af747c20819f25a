"""Items of the dataset: shapes, determinism per (seed, epoch, index), and bad files skipped."""

from __future__ import annotations

import shutil

import pytest
import torch
from .video_helpers import write_video

from tubelet.data.dataset import ClipConfig, build_datasets, load_eval_views
from tubelet.data.decode import read_frames
from tubelet.data.formats import read_annotations
from tubelet.data.loader import TooManySkippedFiles, make_loader

CLIP = ClipConfig(num_frames=8, stride=2, size=32, views=2, crops=3)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, videos):
    """Class folders with 4 good videos and a truncated, a zero-byte and a text file."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "a").mkdir()
    (root / "b").mkdir()
    shutil.copy(videos["h264"], root / "a" / "good1.mp4")
    shutil.copy(videos["vp9"], root / "a" / "good2.webm")
    shutil.copy(videos["mpeg4"], root / "b" / "good3.avi")
    write_video(root / "b" / "good4", "h264", frames=5)  # shorter than a clip: loops
    (root / "a" / "truncated.mp4").write_bytes(videos["h264"].read_bytes()[:700])
    (root / "b" / "empty.mp4").write_bytes(b"")
    (root / "b" / "readme.txt").write_text("these are my videos\n")
    return root


def test_training_item_deterministic_per_seed_epoch_index(mixed_folder):
    train, _ = build_datasets(mixed_folder, clip=CLIP, seed=3)
    index = [r.id for r in train.records].index("a/good1.mp4")
    item = train[(index, 0)]
    assert item["video"].shape == (8, 32, 32, 3) and item["video"].dtype == torch.uint8
    assert item["label"].item() == 0
    again = build_datasets(mixed_folder, clip=CLIP, seed=3)[0][(index, 0)]
    assert torch.equal(item["video"], again["video"])
    others = [train[(index, e)]["video"] for e in range(1, 6)]
    assert any(not torch.equal(item["video"], o) for o in others)  # epochs differ


def test_shuffled_frames_are_the_same_frames_in_another_order(mixed_folder):
    """The order control (--clip.shuffle-frames): each clip holds exactly the frames it would
    hold, in a seeded order; an evaluation item's views all share one order."""
    import dataclasses
    shuffled = dataclasses.replace(CLIP, shuffle_frames=True)
    train, _ = build_datasets(mixed_folder, clip=CLIP, seed=3)
    mixed, _ = build_datasets(mixed_folder, clip=shuffled, seed=3)
    index = [r.id for r in train.records].index("a/good1.mp4")
    plain, other = train[(index, 0)]["video"], mixed[(index, 0)]["video"]
    assert not torch.equal(plain, other)
    key = lambda clip: sorted(frame.flatten().tolist() for frame in clip)  # noqa: E731
    assert key(plain) == key(other)
    assert torch.equal(other, build_datasets(mixed_folder, clip=shuffled, seed=3)[0][(index, 0)]["video"])
    evaluated = build_datasets(mixed_folder, mixed_folder, clip=CLIP, seed=3)[1]
    shuffled_eval = build_datasets(mixed_folder, mixed_folder, clip=shuffled, seed=3)[1]
    views, mixed_views = evaluated[index]["video"], shuffled_eval[index]["video"]  # (V*C, T, H, W, 3)
    order = [next(j for j in range(len(views[0])) if torch.equal(views[0][j], f)) for f in mixed_views[0]]
    assert sorted(order) == list(range(len(order))) and order != sorted(order)
    assert all(torch.equal(mixed_views[v], views[v][order]) for v in range(len(views)))


def test_evaluation_views_and_crops(videos):
    views = load_eval_views(videos["h264"], ClipConfig(num_frames=4, stride=3, size=32, views=2))
    assert views.shape == (6, 4, 32, 32, 3)
    # 20 frames of 64x48, decoded at 42x32: view 0 is frames 0, 3, 6, 9, view 1 starts at 10
    frames = torch.from_numpy(read_frames(videos["h264"], [0, 3, 6, 9, 10], max_short_side=32))
    assert torch.equal(views[0], frames[:4, :, :32])  # left
    assert torch.equal(views[1], frames[:4, :, 5:37])  # centre
    assert torch.equal(views[2], frames[:4, :, 10:])  # right
    assert torch.equal(views[3][0], frames[4, :, :32])  # view 1, left


def test_mixed_folder_yields_every_good_clip_and_names_bad_ones(mixed_folder):
    train, _ = build_datasets(mixed_folder, clip=CLIP)
    assert len(train) == 6  # readme.txt is not a video by its extension: ignored, not decoded
    loader = make_loader(train, batch_size=3, workers=0, seed=0)
    loader.set_epoch(0)
    loader.sampler.drop_last = False
    with pytest.warns(RuntimeWarning, match="cannot decode") as caught:
        indices = [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(train.records[i].id for i in indices) == [
        "a/good1.mp4", "a/good2.webm", "b/good3.avi", "b/good4.mp4"]
    names = {"truncated.mp4", "empty.mp4"}
    assert len(caught) == 2 and all(any(n in str(w.message) for n in names) for w in caught)
    assert loader.skip_report.count == 2
    assert all(n in loader.skip_report.summary() for n in names)
    assert list(loader.skip_report.left_out) == [str(mixed_folder / "b" / "readme.txt")]
    assert "readme.txt (not a video file" in loader.skip_report.summary()
    with pytest.warns(RuntimeWarning):
        strict = make_loader(train, batch_size=7, workers=0, skip_limit=0)
        with pytest.raises(TooManySkippedFiles, match="more than the limit of 0"):
            list(strict)


def test_damaged_real_fixture_decodes_cleanly(video_fixtures, tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("Megamind_bugy.avi", "tree.avi", "cup.mp4"):
        (tmp_path / "clips" / name).symlink_to(video_fixtures / name)
    (tmp_path / "list.txt").write_text("clips/Megamind_bugy.avi 0\nclips/tree.avi 1\nclips/cup.mp4 1\n")
    train, val = build_datasets(tmp_path / "list.txt", tmp_path / "list.txt",
                                clip=ClipConfig(num_frames=8, stride=2, size=32, views=2, crops=3))
    for dataset in (train, val):
        for i in range(3):
            item = dataset[(i, 0)]
            assert "skipped" not in item, item
    assert val[(0, 0)]["video"].shape == (6, 8, 32, 32, 3)


def test_dataset_folder_with_splits(tmp_path, videos):
    for split in ("train", "val"):
        for cls in ("x", "y"):
            (tmp_path / split / cls).mkdir(parents=True)
            shutil.copy(videos["h264"], tmp_path / split / cls / "v.mp4")
    train, val = build_datasets(tmp_path, clip=CLIP)
    assert (len(train), len(val), val.train, train.num_classes) == (2, 2, False, [2])
    assert val[0]["video"].shape == (6, 8, 32, 32, 3)


def test_epic_segment_frames(tmp_path):
    path = write_video(tmp_path / "P01_01", "h264", frames=20)
    path.rename(tmp_path / "P01_01.MP4")
    csv = tmp_path / "EPIC_100_train.csv"
    csv.write_text("narration_id,participant_id,video_id,start_timestamp,stop_timestamp,verb,"
                   "verb_class,noun,noun_class\nn0,P01,P01_01,00:00:00.40,00:00:00.60,open,1,door,2\n"
                   "n1,P01,P01_01,00:00:00.00,00:00:00.30,take,0,cup,1\n")
    train, _ = build_datasets(csv, clip=ClipConfig(num_frames=4, stride=1, size=32))
    item = train[(0, 0)]
    assert item["label"].tolist() == [1, 2] and train.head_names == ("verb", "noun")
    assert read_annotations(csv).records[0].start == pytest.approx(0.4)
    # 0.40-0.60 s at 25 fps is frames 10..14; frame i's ground is red 40 + 9 i (video_helpers)
    red = item["video"][..., 0].float().flatten(1).median(1).values  # (T,)
    frame_numbers = ((red - 40) / 9).round()
    assert frame_numbers.min() >= 10 and frame_numbers.max() <= 14, frame_numbers  # (H.264: +-1)


def test_empty_tail_clip_has_one_length_everywhere(tmp_path, capsys):
    """The B-frame tail case (31 packets, 30 frames): training items, evaluation items, predict's
    load_eval_views and `tubelet data inspect` all accept it and agree that it has 30 frames."""
    from tubelet.cli import main
    from tubelet.data.decode import index_video

    from .video_helpers import write_empty_tail
    for cls in ("box", "ball"):
        (tmp_path / cls).mkdir()
        write_empty_tail(tmp_path / cls / "box", frames=30)
    clip = ClipConfig(num_frames=8, stride=4, size=32, views=2, crops=3)  # spans 29 of 30 frames
    train, val = build_datasets(tmp_path, tmp_path, clip=clip)
    assert index_video(train.records[0].path).num_frames == 30
    for epoch in range(4):  # random clips reaching the last frame
        assert "skipped" not in train[(0, epoch)]
    assert val[0]["video"].shape == (6, 8, 32, 32, 3)
    assert torch.equal(load_eval_views(tmp_path / "box" / "box.mp4", clip), val[1]["video"])
    assert main(["data", "inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "frames per video: min 30, median 30, max 30" in out and "0 file(s) cannot be decoded" in out


def test_non_square_clips_train_and_evaluate(tmp_path, videos):
    from .train_helpers import train_and_evaluate
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            shutil.copy(videos["h264"], tmp_path / cls / f"{k}.mp4")
    clip = ClipConfig(num_frames=4, stride=2, size=(16, 32), views=2, crops=3)
    train, val = build_datasets(tmp_path, tmp_path, clip=clip)
    assert train[(0, 0)]["video"].shape == (4, 16, 32, 3)
    views = val[0]["video"]
    assert views.shape == (6, 4, 16, 32, 3)  # 64x48 frames cover 16x32 at 24x32: crops go down
    assert not torch.equal(views[0], views[2])
    result = train_and_evaluate(train, val, steps=2)
    assert len(result["scored"]) == 4 and result["logits"].shape == (4, 2)


def test_eval_dataset_maps_labels_by_the_models_names(tmp_path, videos):
    from tubelet.data import build_eval_dataset
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            shutil.copy(videos["h264"], tmp_path / split / cls / "v.mp4")
    val = build_eval_dataset(tmp_path, class_names=(("dog", "cat"),), clip=CLIP)  # the model's order
    assert not val.train and [(r.path.parent.parent.name, r.path.parent.name, r.label)
                              for r in val.records] == [("val", "cat", 1), ("val", "dog", 0)]
    single = build_eval_dataset(tmp_path / "val", class_names=["dog", "cat"], clip=CLIP)
    assert [r.label for r in single.records] == [1, 0]
