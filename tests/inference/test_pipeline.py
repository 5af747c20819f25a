"""tubelet.pipeline agrees with `tubelet predict` on a path, a list, decoded frames, a run folder
and a transformers export; predict answers every good file of a folder holding a damaged one."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch

import tubelet
from tubelet.cli import main
from tubelet.data import read_frames, index_video
from tubelet.errors import DataError
from tubelet.inference import top_labels
from tubelet.models.info import ModelInfo

from .conftest import tiny_model


def predict(capsys, *argv: str) -> tuple[int, list, str]:
    capsys.readouterr()
    status = main(["predict", *map(str, argv), "--json", "--device", "cpu", "--workers", "0"])
    out = capsys.readouterr()
    return status, json.loads(out.out), out.err


def assert_same(pipeline_answer, predict_entry):
    top = predict_entry["heads"][0]["top"]
    assert [a["label"] for a in pipeline_answer] == [t["label"] for t in top]
    assert max(abs(a["score"] - t["score"]) for a, t in zip(pipeline_answer, top)) < 1e-5


def some_videos(videos, n=3):
    return sorted(videos.rglob("*.mp4"))[:n]


def test_a_path_a_list_and_decoded_frames_agree_with_predict(run, videos, capsys):
    classify = tubelet.pipeline(run, device="cpu")
    paths = some_videos(videos)
    status, answers, _ = predict(capsys, run, *paths)
    assert status == 0 and [a["video"] for a in answers] == [str(p) for p in paths]
    assert_same(classify(str(paths[0])), answers[0])
    for got, entry in zip(classify(paths), answers):  # a list: batched over the videos
        assert_same(got, entry)
    frames = read_frames(paths[1], np.arange(index_video(paths[1]).num_frames))  # (T, 32, 32, 3)
    assert_same(classify(frames), answers[1])
    assert_same(classify(torch.from_numpy(frames)), answers[1])
    # the scores are not all alike: the comparison could fail
    assert answers[0]["heads"][0]["top"][0]["score"] > answers[0]["heads"][0]["top"][-1]["score"] + 1e-3


def test_views_crops_and_average_can_be_overridden(run, videos, capsys):
    path = some_videos(videos, 1)[0]
    classify = tubelet.pipeline(run, device="cpu", views=2, crops=1, average="softmax")
    _, answers, _ = predict(capsys, run, path, "--views", "2", "--crops", "1", "--average", "softmax")
    assert_same(classify(path), answers[0])
    _, default, _ = predict(capsys, run, path)
    assert abs(default[0]["heads"][0]["top"][0]["score"] - answers[0]["heads"][0]["top"][0]["score"]) > 1e-6
    assert_same(tubelet.pipeline(run, device="cpu")(path, views=2, crops=1, average="softmax"), answers[0])


def test_a_model_object_a_checkpoint_folder_and_a_transformers_export(run, hf_export, videos, capsys):
    path = some_videos(videos, 1)[0]
    _, answers, _ = predict(capsys, run, path)
    assert_same(tubelet.pipeline(tubelet.load_model(run), device="cpu")(path), answers[0])
    assert_same(tubelet.pipeline(run / "final", device="cpu")(path), answers[0])
    _, exported, _ = predict(capsys, hf_export, path)
    assert_same(tubelet.pipeline(hf_export, device="cpu")(path), exported[0])
    # the export is the same model, its frame stride recorded in config.json: the same answer
    assert tubelet.load_model(hf_export).info.preprocessing.frame_stride == 1
    assert_same(tubelet.pipeline(hf_export, device="cpu")(path), answers[0])


def test_a_folder_with_a_damaged_file_answers_every_good_file(run, videos, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(videos, folder)
    good = sorted(folder.rglob("*.mp4"))
    bad = folder / "moving left" / "broken.mp4"
    bad.write_bytes(good[0].read_bytes()[:300])  # a truncated H.264 file
    (folder / "notes.txt").write_text("not a video\n")  # not a video suffix: ignored in folders
    status, answers, err = predict(capsys, run, folder, "--workers", "2")
    assert status == 1
    assert sorted(a["video"] for a in answers) == sorted(map(str, good))
    lines = [line for line in err.splitlines() if "broken.mp4" in line]
    assert len(lines) == 1 and lines[0].startswith("tubelet predict: skipped cannot decode")
    assert "1 of 11 video(s) could not be read" in err
    with pytest.raises(DataError, match="broken.mp4"):
        tubelet.pipeline(run, device="cpu")([good[0], bad])


def test_globs_list_files_jsonl_and_csv(run, videos, tmp_path, capsys):
    paths = some_videos(videos, 2)
    listing = tmp_path / "videos.txt"
    listing.write_text("# two videos\n" + "\n".join(str(p) for p in paths) + "\n\n")
    _, from_list, _ = predict(capsys, run, listing)
    _, from_glob, _ = predict(capsys, run, f"{videos}/**/*.mp4")
    assert [a["video"] for a in from_list] == list(map(str, paths))
    assert len(from_glob) == 10 and from_glob[0] == from_list[0]
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, paths), "--jsonl", "--top-k", "2", "--workers", "0"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["video"] for entry in lines] == list(map(str, paths))
    assert [t["label"] for t in lines[0]["heads"][0]["top"]] == [t["label"] for t in from_list[0]["heads"][0]["top"][:2]]
    assert main(["predict", str(run), str(paths[0]), "--csv", "--top-k", "3", "--workers", "0"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["label"] for r in rows] == [t["label"] for t in from_list[0]["heads"][0]["top"][:3]]
    assert abs(float(rows[0]["score"]) - from_list[0]["heads"][0]["top"][0]["score"]) < 1e-5
    assert main(["predict", str(run), f"{tmp_path}/nothing-*.mp4", "--workers", "0"]) == 1
    assert "no file matches" in capsys.readouterr().err


def test_two_heads_give_a_list_per_head_and_the_combined_action():
    info = ModelInfo(class_names=[["take", "put"], ["cup", "plate", "knife"]], head_names=["verb", "noun"])
    scores = torch.tensor([2.0, 0.0, 0.0, 1.0, 3.0])
    heads = top_labels(scores, info, (2, 3), k=2)
    assert [h["head"] for h in heads] == ["verb", "noun", "action"]
    verb, noun = scores[:2].softmax(-1), scores[2:].softmax(-1)
    action = heads[2]["top"]
    assert [a["label"] for a in action] == ["take knife", "take plate"]
    assert abs(action[0]["score"] - float(verb[0] * noun[2])) < 1e-6
    assert abs(action[1]["score"] - float(verb[0] * noun[1])) < 1e-6


def test_a_two_head_model_through_the_pipeline(videos):
    model = tiny_model(classes=[["take", "put", "open"], ["cup", "plate"]])
    model.info.head_names = ("verb", "noun")
    got = tubelet.pipeline(model, device="cpu", views=1, crops=1, top_k=2)(some_videos(videos, 1)[0])
    assert list(got) == ["verb", "noun", "action"]
    assert got["action"][0]["label"] == f"{got['verb'][0]['label']} {got['noun'][0]['label']}"
    assert abs(got["action"][0]["score"] - got["verb"][0]["score"] * got["noun"][0]["score"]) < 1e-6


def test_bad_arrays_and_options_are_one_line_errors(run):
    classify = tubelet.pipeline(run, device="cpu")
    with pytest.raises(DataError, match="uint8"):
        classify(np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(tubelet.ConfigError, match="views"):
        tubelet.pipeline(run, device="cpu", views=0)
