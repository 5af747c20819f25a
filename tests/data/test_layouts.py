"""Every dataset layout as it is downloaded, with its real file names: detected, read, trained on
for a few steps and evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tubelet.data import build_datasets
from tubelet.data.formats import AnnotationError
from tubelet.data.layouts import detect_layout

from .train_helpers import CLIP, train_and_evaluate
from .video_helpers import write_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Two different short H.264 clips to copy under the real names."""
    folder = tmp_path_factory.mktemp("layout_clips")
    return [write_video(folder / "a", "h264", frames=8, width=32, height=24),
            write_video(folder / "b", "h264", frames=6, width=24, height=32)]


def _put(clips, path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clips[k % 2], path)


def _train_eval(data, **kwargs):
    train, val = build_datasets(data, clip=CLIP, **kwargs)
    result = train_and_evaluate(train, val)
    assert len(result["losses"]) == 3 and all(l == l and l > 0 for l in result["losses"])
    assert sorted(result["scored"]) == list(range(len(val))) and not result["skipped"]
    assert result["logits"].shape == (len(val), sum(train.num_classes))
    return train, val


KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"
K_ROWS = [("abseiling", "---QUuC4vJs", 84, 94), ("air drumming", "--nQbRBEz2s", 104, 114),
          ('passing American football (in game)', "-5Ch_oWmmKs", 0, 10)]


def _kinetics_csv(path: Path, split: str, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'"{label}",{yid},{s},{e},{split}' for label, yid, s, e in rows]
    path.write_text(KINETICS_HEADER + "\n".join(lines) + "\n")


def test_kinetics_cvdf_layout(tmp_path, clips):
    """The CVDF mirror of Kinetics-400: annotations/{train,val,test}.csv, videos in train/ and val/
    with no label folders, named <youtube_id>_<start:06d>_<end:06d>.mp4."""
    root = tmp_path / "k400"
    train_rows = K_ROWS + [(l, y + "x", s, e) for l, y, s, e in K_ROWS]
    _kinetics_csv(root / "annotations" / "train.csv", "train", train_rows)
    _kinetics_csv(root / "annotations" / "val.csv", "val", K_ROWS)
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\nabc,0,10,test\n")
    for k, (label, yid, s, e) in enumerate(train_rows):
        _put(clips, root / "train" / f"{yid}_{s:06d}_{e:06d}.mp4", k)
    for k, (label, yid, s, e) in enumerate(K_ROWS):
        _put(clips, root / "val" / f"{yid}_{s:06d}_{e:06d}.mp4", k)
    layout = detect_layout(root)
    assert (layout.name, layout.train.name, layout.val.name) == ("kinetics", "train.csv", "val.csv")
    train, val = _train_eval(root)
    assert train.class_names == (("abseiling", "air drumming", "passing American football (in game)"),)
    assert (len(train), len(val)) == (6, 3)


def test_kinetics_700_label_folders(tmp_path, clips):
    """Kinetics-600/700 from the official downloader: train.csv / validate.csv at the top, videos in
    <split>/<label>/ (the CSV says "validate", the folder may be val/)."""
    root = tmp_path / "kinetics700_2020"
    rows = K_ROWS + [(l, y + "y", s, e) for l, y, s, e in K_ROWS]
    _kinetics_csv(root / "train.csv", "train", rows)
    _kinetics_csv(root / "validate.csv", "validate", K_ROWS)
    for k, (label, yid, s, e) in enumerate(rows):
        _put(clips, root / "train" / label / f"{yid}_{s:06d}_{e:06d}.mp4", k)
    for k, (label, yid, s, e) in enumerate(K_ROWS):
        _put(clips, root / "val" / label / f"{yid}_{s:06d}_{e:06d}.mp4", k)
    train, val = _train_eval(root)
    assert {r.path.parent.name for r in val.records} == {label for label, *_ in K_ROWS}


SSV2_LABELS = {"Holding something next to something": "0", "Pushing something from left to right": "1",
               "Putting something on a surface": "2"}
SSV2_ITEMS = [
    {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
     "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks"]},
    {"id": "42326", "label": "pushing a pen from left to right",
     "template": "Pushing [something] from left to right", "placeholders": ["a pen"]},
    {"id": "100904", "label": "putting a cup on a surface",
     "template": "Putting [something] on a surface", "placeholders": ["a cup"]},
    {"id": "3", "label": "holding a box next to a bag",
     "template": "Holding [something] next to [something]", "placeholders": ["a box", "a bag"]},
]


def _ssv2(root: Path, clips, items=SSV2_ITEMS) -> None:
    root.mkdir(parents=True)
    (root / "something-something-v2-labels.json").write_text(json.dumps(SSV2_LABELS))
    (root / "something-something-v2-train.json").write_text(json.dumps(items))
    (root / "something-something-v2-validation.json").write_text(json.dumps(items[:3]))
    (root / "something-something-v2-test.json").write_text(json.dumps([{"id": "9"}]))
    for k, item in enumerate(items):
        _put(clips, root / "20bn-something-something-v2" / f"{item['id']}.webm", k)


def test_something_something_v2(tmp_path, clips):
    """The three JSON files and the 20bn-something-something-v2/ folder of .webm videos: once taken
    for a one-class folder dataset (loss 0.0, no validation)."""
    root = tmp_path / "ssv2"
    _ssv2(root, clips)
    assert detect_layout(root).name == "ssv2"
    train, val = _train_eval(root)
    assert train.class_names[0] == tuple(SSV2_LABELS)  # ordered by the labels file's ids
    assert [r.label for r in train.records] == [0, 1, 2, 0]  # placeholders filled from template
    assert train.records[0].path == root / "20bn-something-something-v2" / "78687.webm"


def test_missing_video_names_the_flag(tmp_path, clips):
    root = tmp_path / "ssv2"
    _ssv2(root, clips)
    (root / "20bn-something-something-v2" / "42326.webm").unlink()
    with pytest.raises(AnnotationError, match=r"item 2: video .*42326.webm does not exist .*--missing skip"):
        build_datasets(root, clip=CLIP)
    train, val = build_datasets(root, clip=CLIP, missing="skip")
    assert len(train) == 3 and train.annotations.missing == [str(root / "20bn-something-something-v2" / "42326.webm")]
    assert str(root / "20bn-something-something-v2" / "42326.webm") in train.left_out()


EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
               "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")


def test_epic_kitchens_100(tmp_path, clips):
    """The annotations repository (EPIC_100_train.csv, EPIC_100_validation.csv and the class CSVs)
    beside the downloaded <participant>/videos/<video_id>.MP4 files: two heads."""
    root = tmp_path / "EPIC-KITCHENS"
    ann = root / "epic-kitchens-100-annotations"
    ann.mkdir(parents=True)
    (ann / "EPIC_100_verb_classes.csv").write_text(
        'id,key,instances,category\n0,take,"[\'take\', \'grab\']",retrieve\n1,put,"[\'put\']",leave\n'
        '2,open,"[\'open\']",access\n')
    (ann / "EPIC_100_noun_classes.csv").write_text(
        'id,key,instances,category\n0,tap,"[\'tap\']",appliances\n1,cup,"[\'cup\']",cutlery\n')
    rows = ['P01_01_0,P01,P01_01,00:00:00.10,00:00:00.00,00:00:00.20,0,5,take cup,take,0,cup,1,"[\'cup\']",[1]',
            'P01_01_1,P01,P01_01,00:00:00.20,00:00:00.08,00:00:00.30,2,8,open tap,open,2,tap,0,"[\'tap\']",[0]',
            'P02_03_0,P02,P02_03,00:00:00.00,00:00:00.00,00:00:00.24,0,6,put cup,put,1,cup,1,"[\'cup\']",[1]']
    (ann / "EPIC_100_train.csv").write_text(EPIC_HEADER + "\n".join(rows) + "\n")
    (ann / "EPIC_100_validation.csv").write_text(EPIC_HEADER + rows[1] + "\n")
    _put(clips, root / "P01" / "videos" / "P01_01.MP4", 0)
    _put(clips, root / "P02" / "videos" / "P02_03.MP4", 1)
    assert detect_layout(root).name == "epic"
    train, val = _train_eval(root)
    assert train.head_names == ("verb", "noun") and train.num_classes == [3, 2]
    assert train.class_names == (("take", "put", "open"), ("tap", "cup"))
    assert [r.label for r in train.records] == [(0, 1), (2, 0), (1, 1)]


def test_moments_in_time(tmp_path, clips):
    """Moments_in_Time_Raw: trainingSet.csv / validationSet.csv (no header), moments_categories.txt
    ("name,id"), videos in training/<label>/ and validation/<label>/."""
    root = tmp_path / "Moments_in_Time_Raw"
    root.mkdir()
    (root / "moments_categories.txt").write_text("applauding,0\narresting,1\nasking,2\n")
    train_rows = [("applauding/-0BhDwYxtRA_10.mp4", "applauding"), ("arresting/yt-4o2kq_1.mp4", "arresting"),
                  ("asking/giphy-Gx8y_0.mp4", "asking"), ("applauding/getty-clap_3.mp4", "applauding")]
    (root / "trainingSet.csv").write_text("".join(f"{p},{l},3,0\n" for p, l in train_rows))
    (root / "validationSet.csv").write_text("".join(f"{p},{l},2,1\n" for p, l in train_rows[:2]))
    for k, (p, _) in enumerate(train_rows):
        _put(clips, root / "training" / p, k)
    for k, (p, _) in enumerate(train_rows[:2]):
        _put(clips, root / "validation" / p, k)
    assert detect_layout(root).name == "mit"
    train, val = _train_eval(root)
    assert train.class_names == (("applauding", "arresting", "asking"),)
    assert val.records[0].path == root / "validation" / "applauding" / "-0BhDwYxtRA_10.mp4"


@pytest.mark.parametrize("videos_folder", ["UCF-101", "hmdb51"])
def test_ucf101_hmdb51_split_lists(tmp_path, clips, videos_folder):
    """ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt (1-based ids; the test list has no
    label: the class is the folder) beside UCF-101/<Class>/v_<Class>_gNN_cNN.avi."""
    root = tmp_path / "UCF101"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
    train = [f"{c}/v_{c}_g08_c0{k}.avi" for k, c in enumerate(["ApplyEyeMakeup", "ApplyLipstick", "Archery"])]
    (lists / "trainlist01.txt").write_text("".join(f"{v} {i + 1}\r\n" for i, v in enumerate(train)))
    test = [v.replace("_g08_", "_g01_") for v in train]
    (lists / "testlist01.txt").write_text("".join(f"{v}\r\n" for v in test))
    (lists / "trainlist02.txt").write_text("")
    for k, v in enumerate(train + test):
        _put(clips, root / videos_folder / v, k)
    layout = detect_layout(root)
    assert (layout.name, layout.val.name) == ("ucf", "testlist01.txt")
    train_set, val = _train_eval(root)
    assert train_set.class_names == (("ApplyEyeMakeup", "ApplyLipstick", "Archery"),)
    assert [r.label for r in val.records] == [0, 1, 2]


def test_class_folders_and_lists_with_spaces(tmp_path, clips):
    """train/ + val/ class folders; train.txt + val.txt whose class names have spaces (docs/data.md's
    own example) and no classes.txt: the names come from the training list."""
    for split in ("train", "val"):
        for k, cls in enumerate(["air drumming", "abseiling"]):
            _put(clips, tmp_path / "folders" / split / cls / f"clip0{k}.mp4", k)
    assert detect_layout(tmp_path / "folders").name == "folder"
    train, _ = _train_eval(tmp_path / "folders")
    assert train.class_names == (("abseiling", "air drumming"),)

    lists = tmp_path / "lists"
    for k, cls in enumerate(["air drumming", "abseiling", "swipe_down"]):
        _put(clips, lists / "videos" / cls / "clip07.mp4", k)
    (lists / "train.txt").write_text("# path label\nvideos/abseiling/clip07.mp4 abseiling\n"
                                     "videos/air drumming/clip07.mp4 air drumming\n"
                                     "videos/swipe_down/clip07.mp4 swipe_down\n")
    (lists / "val.txt").write_text("videos/air drumming/clip07.mp4 air drumming\n")
    train, val = _train_eval(lists)
    assert train.class_names == (("abseiling", "air drumming", "swipe_down"),)
    assert [r.label for r in train.records] == [0, 1, 2] and val.records[0].label == 1


def test_one_class_or_one_label_is_an_error(tmp_path, clips):
    for k in range(2):
        _put(clips, tmp_path / "one" / "only_class" / f"{k}.mp4", k)
    with pytest.raises(AnnotationError, match=r"1 class\(es\) and 1 distinct label.*at least two"):
        build_datasets(tmp_path / "one", clip=CLIP)
    _put(clips, tmp_path / "same" / "v0.mp4", 0)
    (tmp_path / "same" / "list.txt").write_text("v0.mp4 1\nv0.mp4 1\n")
    with pytest.raises(AnnotationError, match=r"2 class\(es\) and 1 distinct label"):
        build_datasets(tmp_path / "same" / "list.txt", clip=CLIP)


def test_val_split_is_stratified_and_seeded(tmp_path, clips, caplog):
    for cls in ("a", "b", "c"):
        for k in range(10):
            _put(clips, tmp_path / cls / f"{k}.mp4", k)
    train, val = build_datasets(tmp_path, clip=CLIP)
    assert val is None and "--val-split 0.1" in caplog.text
    train, val = build_datasets(tmp_path, clip=CLIP, val_split=0.2, seed=1)
    assert (len(train), len(val)) == (24, 6) and not val.train
    assert sorted(r.label for r in val.records) == [0, 0, 1, 1, 2, 2]  # 2 of each class
    again = build_datasets(tmp_path, clip=CLIP, val_split=0.2, seed=1)[1]
    other = build_datasets(tmp_path, clip=CLIP, val_split=0.2, seed=2)[1]
    assert [r.id for r in again.records] == [r.id for r in val.records]
    assert [r.id for r in other.records] != [r.id for r in val.records]
    assert not {r.id for r in train.records} & {r.id for r in val.records}
