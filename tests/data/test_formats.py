"""Annotation readers: every format, and errors that name the file and line."""

from __future__ import annotations

import json

import pytest

from tubelet.data.formats import (AnnotationError, detect_format, parse_timestamp, read_annotations,
                                  read_class_names)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder(tmp_path):
    for cls, name in [("b_cat", "1.mp4"), ("a_dog", "2.mp4"), ("a_dog", "sub/3.webm")]:
        _touch(tmp_path / cls / name)
    ann = read_annotations(tmp_path)
    assert ann.format == "folder" and ann.class_names == [["a_dog", "b_cat"]]
    assert sorted((r.id, r.label) for r in ann.records) == [("a_dog/2.mp4", 0),
                                                             ("a_dog/sub/3.webm", 0), ("b_cat/1.mp4", 1)]


def test_list_file_and_errors(tmp_path):
    _touch(tmp_path / "v" / "a b.mp4")
    _touch(tmp_path / "v" / "c.mp4")
    good = tmp_path / "train.txt"
    good.write_text("# path label\nv/a b.mp4 1\n\nv/c.mp4 0  # comment\n")
    ann = read_annotations(good)
    assert ann.format == "list" and [r.label for r in ann.records] == [1, 0]
    assert ann.records[0].path == tmp_path / "v" / "a b.mp4"  # spaces in paths are kept
    named = tmp_path / "named.txt"
    named.write_text("v/c.mp4 dog\n")
    assert read_annotations(named, class_names=["cat", "dog"]).records[0].label == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("v/c.mp4 0\nv/c.mp4\n")
    with pytest.raises(AnnotationError, match=r"bad.txt, line 2: expected '<path> <label>'"):
        read_annotations(bad)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("v/c.mp4 0\nv/c.mp4 horse\n")
    with pytest.raises(AnnotationError, match=r"unknown.txt, line 2: unknown label 'horse'"):
        read_annotations(unknown, class_names=["cat", "dog"])
    missing = tmp_path / "missing.txt"
    missing.write_text("v/c.mp4 0\nv/gone.mp4 1\n")
    with pytest.raises(AnnotationError, match=r"missing.txt, line 2: video .*gone.mp4 does not exist"):
        read_annotations(missing)
    assert len(read_annotations(missing, missing="skip").records) == 1


def test_kinetics(tmp_path):
    _touch(tmp_path / "train" / "abseiling" / "---QUuC4vJs_000084_000094.mp4")
    _touch(tmp_path / "air drumming" / "--nQbRBEz2s_000104_000114.mp4")
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   "abseiling,---QUuC4vJs,84,94,train\nair drumming,--nQbRBEz2s,104,114,train\n")
    assert detect_format(csv) == "kinetics"
    ann = read_annotations(csv)
    assert ann.class_names == [["abseiling", "air drumming"]]
    assert [(r.id, r.label) for r in ann.records] == [("---QUuC4vJs_000084_000094", 0),
                                                      ("--nQbRBEz2s_000104_000114", 1)]
    csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,---QUuC4vJs,84,94,train\n"
                   "zumba,xyz,1,11,train\n")
    with pytest.raises(AnnotationError, match=r"train.csv, line 3: unknown label 'zumba'"):
        read_annotations(csv, class_names=["abseiling", "air drumming"])


def test_ssv2(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something from left to right": "1",
                                                      "Holding something": "0"}))
    _touch(tmp_path / "78687.webm")
    _touch(tmp_path / "42326.webm")
    items = [{"id": "78687", "label": "holding a cup", "template": "Holding [something]",
              "placeholders": ["a cup"]},
             {"id": "42326", "label": "pushing a pen from left to right",
              "template": "Pushing [something] from left to right", "placeholders": ["a pen"]}]
    (tmp_path / "train.json").write_text(json.dumps(items))
    ann = read_annotations(tmp_path / "train.json")
    assert ann.format == "ssv2" and [r.label for r in ann.records] == [0, 1]
    assert ann.class_names[0][1] == "Pushing something from left to right"
    items[1]["template"] = "Juggling [something]"
    (tmp_path / "validation.json").write_text(json.dumps(items))
    with pytest.raises(AnnotationError, match=r"validation.json, item 2: unknown label 'Juggling something'"):
        read_annotations(tmp_path / "validation.json")


def test_epic_two_labels_and_segments(tmp_path):
    _touch(tmp_path / "P01" / "videos" / "P01_01.MP4")
    header = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
              "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
              "all_nouns,all_noun_classes\n")
    csv = tmp_path / "EPIC_100_train.csv"
    csv.write_text(header + 'P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,'
                   'open door,open,3,door,8,[\'door\'],[8]\n'
                   'P01_01_1,P01,P01_01,00:00:02.629,00:01:04.00,00:01:05.10,3840,3906,'
                   'take cup,take,0,cup,13,[\'cup\'],[13]\n')
    assert detect_format(csv) == "epic"
    ann = read_annotations(csv)
    assert [r.label for r in ann.records] == [(3, 8), (0, 13)]
    assert ann.records[1].start == pytest.approx(64.0) and ann.records[1].end == pytest.approx(65.1)
    assert ann.class_names[0][3] == "open" and ann.class_names[1][13] == "cup"
    assert ann.num_classes == [4, 14]
    (tmp_path / "EPIC_100_verb_classes.csv").write_text("id,key,instances,category\n0,take,[],x\n1,put,[],x\n")
    (tmp_path / "EPIC_100_noun_classes.csv").write_text("id,key,instances,category\n0,tap,[],x\n")
    with pytest.raises(AnnotationError, match=r"EPIC_100_train.csv, line 2: unknown verb_class 3"):
        read_annotations(csv)
    assert parse_timestamp("01:02:03.5") == pytest.approx(3723.5)


def test_class_names_files(tmp_path):
    (tmp_path / "a.txt").write_text("cat\ndog\n")
    (tmp_path / "b.txt").write_text("1 dog\n0 cat\n")
    (tmp_path / "c.json").write_text('{"dog": "1", "cat": "0"}')
    assert read_class_names(tmp_path / "a.txt") == read_class_names(tmp_path / "b.txt") == \
        read_class_names(tmp_path / "c.json") == ["cat", "dog"]


def test_undetectable_csv(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(AnnotationError, match="cannot tell the CSV format"):
        detect_format(csv)
