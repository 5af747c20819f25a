"""Caption files of every supported format, several captions per video, and what is wrong with bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tubelet.captions import CaptionedVideo, read_captions
from tubelet.data.synth import write_mp4
from tubelet.errors import DataError


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> bytes:
    """The bytes of a real 4-frame H.264 MP4, copied to every video name the tests need."""
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    write_mp4(path, np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), fps=4)
    return path.read_bytes()


def _videos(root: Path, names: list[str], data: bytes) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_plain_csv_groups_several_rows_per_video(tmp_path, mp4):
    _videos(tmp_path, ["a.mp4", "clips/b.mp4"], mp4)
    (tmp_path / "caps.csv").write_text('video,caption\na.mp4,A dog runs.\nclips/b.mp4,"a cat, sleeping"\n'
                                       "a.mp4,a dog is running\n")
    videos = read_captions(tmp_path / "caps.csv")
    assert videos == [CaptionedVideo(tmp_path / "a.mp4", ["A dog runs.", "a dog is running"], None),
                      CaptionedVideo(tmp_path / "clips/b.mp4", ["a cat, sleeping"], None)]
    assert videos.format == "csv" and videos.missing == []


def test_plain_json_with_caption_or_captions_and_a_videos_root(tmp_path, mp4):
    _videos(tmp_path / "store", ["a.mp4", "b.webm"], mp4)
    (tmp_path / "caps.json").write_text(json.dumps([
        {"video": "a.mp4", "captions": ["one", "two"], "split": "train"},
        {"video": "b.webm", "caption": "three", "split": "val"},
        {"video": "a.mp4", "caption": "four", "split": "train"}]))
    videos = read_captions(tmp_path / "caps.json", videos_root=tmp_path / "store")
    assert [(v.path.name, v.captions, v.split) for v in videos] == [
        ("a.mp4", ["one", "two", "four"], "train"), ("b.webm", ["three"], "val")]


def test_msrvtt_finds_videos_in_trainvalvideo_beside_the_annotations(tmp_path, mp4):
    _videos(tmp_path / "TrainValVideo", ["video0.mp4", "video1.mp4"], mp4)
    (tmp_path / "train_val_annotation").mkdir()
    info = {"info": {}, "videos": [{"video_id": "video0", "split": "train", "category": 9},
                                   {"video_id": "video1", "split": "validate"}],
            "sentences": [{"video_id": "video1", "caption": "a man sings", "sen_id": 0},
                          {"video_id": "video0", "caption": "cars race", "sen_id": 1},
                          {"video_id": "video1", "caption": "someone is singing", "sen_id": 2}]}
    (tmp_path / "train_val_annotation" / "train_val_videodatainfo.json").write_text(json.dumps(info))
    videos = read_captions(tmp_path / "train_val_annotation" / "train_val_videodatainfo.json")
    assert videos.format == "msrvtt"
    assert [(v.path, v.captions, v.split) for v in videos] == [
        (tmp_path / "TrainValVideo" / "video1.mp4", ["a man sings", "someone is singing"], "validate"),
        (tmp_path / "TrainValVideo" / "video0.mp4", ["cars race"], "train")]
    # the videos flat in the root given
    _videos(tmp_path / "flat", ["video0.mp4", "video1.mp4"], mp4)
    videos = read_captions(tmp_path / "train_val_annotation" / "train_val_videodatainfo.json", tmp_path / "flat")
    assert {v.path.parent for v in videos} == {tmp_path / "flat"}


def test_vatex_finds_each_video_by_its_id_with_any_extension(tmp_path, mp4):
    _videos(tmp_path, ["Ptf_2VRj-V0_000122_000132.mkv", "abc_000001_000011.mp4", "notes.txt"], mp4)
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps([
        {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["A woman dances.", "a woman is dancing"],
         "chCap": ["..."]},
        {"videoID": "abc_000001_000011", "enCap": ["a boy jumps"]}]))
    videos = read_captions(tmp_path / "vatex_validation_v1.0.json")
    assert videos.format == "vatex"
    assert [(v.path.name, len(v.captions), v.split) for v in videos] == [
        ("Ptf_2VRj-V0_000122_000132.mkv", 2, "validate"), ("abc_000001_000011.mp4", 1, "validate")]


def test_webvid_caption_is_the_name_column(tmp_path, mp4):
    _videos(tmp_path, ["000001_000050/1066692580.mp4", "000001_000050/21179416.mp4"], mp4)
    (tmp_path / "results_2M_train.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "1066692580,https://x/1.mp4,PT00H00M15S,000001_000050,Aerial shot of a winter forest\n"
        '21179416,https://x/2.mp4,PT00H00M10S,000001_000050,"Waves, slow motion"\n')
    videos = read_captions(tmp_path / "results_2M_train.csv")
    assert videos.format == "webvid"
    assert [(v.path.name, v.captions, v.split) for v in videos] == [
        ("1066692580.mp4", ["Aerial shot of a winter forest"], "train"),
        ("21179416.mp4", ["Waves, slow motion"], "train")]


def test_missing_videos_are_named_and_counted_or_skipped(tmp_path, mp4):
    _videos(tmp_path, ["v0.mp4"], mp4)
    rows = "".join(f"v{i}.mp4,caption {i}\n" for i in range(6))
    (tmp_path / "caps.csv").write_text("video,caption\n" + rows)
    with pytest.raises(DataError, match=r"5 of 6 videos do not exist .*v1\.mp4, .*v2\.mp4, .*v3\.mp4, "
                                        r"\.\.\. \(check --root, or pass --missing skip"):
        read_captions(tmp_path / "caps.csv")
    videos = read_captions(tmp_path / "caps.csv", missing="skip")
    assert [v.path.name for v in videos] == ["v0.mp4"]
    assert videos.missing == [str(tmp_path / f"v{i}.mp4") for i in range(1, 6)]


@pytest.mark.parametrize("name, text, message", [
    ("caps.csv", "video,text\na.mp4,x\n", r"caps\.csv, line 1: missing column\(s\) caption"),
    ("caps.csv", "video,caption\na.mp4,\n", r"caps\.csv, line 2: expected a caption"),
    ("caps.csv", "video,caption\n,a dog\n", r"caps\.csv, line 2: the video column is empty"),
    ("caps.csv", "video,caption,split\na.mp4,x,train\na.mp4,y,test\n", r"line 3: video .* split 'test'"),
    ("caps.csv", "video,caption\n", r"no captions"),
    ("caps.json", '[{"video": "a.mp4"', r"caps\.json, line 1: not valid JSON"),
    ("caps.json", '[{"video": "a.mp4", "captions": []}]', r"item 1: 'captions' must be a non-empty list"),
    ("caps.json", '[{"path": "a.mp4"}]', r"item 1: expected an object with 'video'"),
    ("caps.json", '{"a": 1}', r"expected a JSON list"),
    ("info.json", '{"videos": [{"video_id": "video0"}], "sentences": [{"video_id": "video9", "caption": "x"}]}',
     r"sentences item 1: video_id 'video9' is not one of"),
    ("vatex.json", '[{"videoID": "a_1_2", "enCap": []}]', r"item 1: expected an object with 'videoID'"),
    ("webvid.csv", "videoid,page_dir,name\n1,d,x\n", r"missing column\(s\) contentUrl, duration"),
    ("caps.txt", "a.mp4 a dog\n", r"cannot tell the caption format"),
])
def test_malformed_files_name_the_file_and_what_is_wrong(tmp_path, mp4, name, text, message):
    _videos(tmp_path, ["a.mp4"], mp4)
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        read_captions(tmp_path / name)


def test_a_folder_is_read_through_its_caption_file(tmp_path, mp4):
    with pytest.raises(DataError, match="no caption file in the folder"):
        read_captions(tmp_path)
    _videos(tmp_path, ["a.mp4"], mp4)
    (tmp_path / "captions.csv").write_text("video,caption,split\na.mp4,x,train\n")
    assert read_captions(tmp_path)[0].split == "train"
    with pytest.raises(DataError, match="missing must be"):
        read_captions(tmp_path, missing="ignore")
