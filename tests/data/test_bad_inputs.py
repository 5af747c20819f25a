"""A corpus of bad inputs: no traceback, each bad file named once, the good ones used, and the same
skip count whatever the batch size and number of workers."""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from tubelet.cli import main
from tubelet.data import ClipConfig, build_datasets, make_loader

from .video_helpers import write_video

CLIP = ClipConfig(num_frames=4, stride=1, size=16, views=2, crops=1)


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _one_pixel(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 1
        stream.pix_fmt = "yuv444p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((1, 1, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, set[str], set[str]]:
    """Class folders ``good`` / ``bad`` / ``mixed``: (root, bad file paths, good file paths)."""
    root = tmp_path_factory.mktemp("corpus")
    a, b = root / "walking", root / "café à midi"
    a.mkdir(), b.mkdir()
    good = [write_video(a / "plain", "h264", frames=12),
            write_video(a / "name with spaces", "h264", frames=10),
            write_video(b / "vidéo_ñandú_視頻", "vp9", frames=9),
            write_video(b / "two_frames", "h264", frames=2),
            _one_pixel(b / "one_pixel.mp4")]
    source = good[0].read_bytes()
    moov = source.index(b"moov")
    broken_moov = bytearray(source)
    broken_moov[moov + 4:moov + 64] = bytes(range(60))
    rng = np.random.default_rng(0)
    bad = {a / "zero_bytes.mp4": b"",
           a / "truncated.mp4": source[:len(source) // 8],
           b / "text.mp4": b"this is not a video\n" * 40,
           b / "random.mkv": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
           a / "broken_moov.mp4": bytes(broken_moov)}
    for path, data in bad.items():
        path.write_bytes(data)
    bad_paths = set(bad) | {_audio_only(b / "audio_only.mp4")}
    (a / "dangling.mp4").symlink_to(root / "gone" / "nowhere.mp4")
    bad_paths.add(a / "dangling.mp4")
    (a / "notes.txt").write_text("shot on a phone\n")
    (root / "empty class").mkdir()
    return root, {str(p) for p in bad_paths}, {str(p) for p in good}


@pytest.mark.parametrize("train", [False, True])
def test_bad_files_named_once_at_any_batch_size(corpus, train):
    root, bad, good = corpus
    train_set, _ = build_datasets(root, clip=CLIP)
    dataset = train_set if train else build_datasets(root, root, clip=CLIP)[1]
    assert {str(r.path) for r in dataset.records} == bad | good  # notes.txt is no record
    assert dataset.left_out() == {str(root / "walking" / "notes.txt"):
                                  "not a video file (by its extension); ignored"}
    assert dataset.annotations.empty_classes == ["empty class"]
    for batch_size, workers in [(1, 0), (2, 0), (4, 0), (4, 2)]:
        loader = make_loader(dataset, batch_size=batch_size, workers=workers, seed=0,
                             persistent_workers=False)
        loader.sampler.drop_last = False  # every item, to compare with evaluation
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(loader)
        used = {str(dataset.records[i].path) for b in batches if b["video"] is not None
                for i in b["index"].tolist()}
        assert used == good, (batch_size, workers)
        report = loader.skip_report
        assert set(report.files) == bad and report.count == len(bad), (batch_size, workers)
        named = [w for w in caught if "cannot decode" in str(w.message)]
        assert sorted(str(w.message).split(":")[0][len("cannot decode "):] for w in named) == sorted(bad)
        listed = [p for b in batches for p, _ in b["skipped"]]
        if not train:  # evaluation batches carry every skipped file, even from all-bad batches
            assert sorted(listed) == sorted(bad), (batch_size, workers)
    assert "dangling symbolic link" in report.files[str(root / "walking" / "dangling.mp4")]
    assert "no video stream" in report.files[str(root / "café à midi" / "audio_only.mp4")]


def test_second_pass_reports_the_same_files(corpus):
    root, bad, _ = corpus
    dataset = build_datasets(root, root, clip=CLIP)[1]
    loader = make_loader(dataset, batch_size=3, workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(loader)
        list(loader)
    assert set(loader.skip_report.files) == bad  # this pass's files, each once
    assert len([w for w in caught if "cannot decode" in str(w.message)]) == len(bad)  # warned once


def test_inspect_names_each_bad_file_once(corpus, capsys):
    root, bad, good = corpus
    assert main(["data", "inspect", str(root)]) == 0
    out = capsys.readouterr().out
    for path in bad:
        assert out.count(path) == 1, path
    assert f"{len(bad)} file(s) cannot be decoded" in out
    assert "ignored (not a video file): " + str(root / "walking" / "notes.txt") in out
    assert "empty class folder: empty class" in out
    assert "Traceback" not in out
