"""Frames read by seeking are bit-identical to those of a full decode, for every codec and file."""

from __future__ import annotations

import numpy as np
import pytest

from tubelet.data.decode import DecodeError, VideoReader, index_video, output_size, read_frames

from .video_helpers import CODECS, full_decode, packet_count, write_empty_tail, write_video


def _check_reads(path, reads):
    reference = full_decode(path)
    index = index_video(path)
    assert index.num_frames == len(reference)
    with VideoReader(path, index) as reader:
        for wanted in reads:
            got = reader.read(wanted)
            assert got.shape == (len(wanted),) + reference[0].shape
            for j, i in enumerate(wanted):
                assert np.array_equal(got[j], reference[i]), f"{path.name}: frame {i} differs"
    return reader


@pytest.mark.parametrize("codec", list(CODECS))
def test_generated_codecs_bit_identical(videos, codec):
    n = index_video(videos[codec]).num_frames
    assert n == 20
    rng = np.random.default_rng(0)
    reads = [np.arange(0, 8), np.arange(12, 20, 2), [19, 3, 3, 11],  # unsorted and repeated
             *(np.sort(rng.choice(n, 5, replace=False)) for _ in range(3))]
    reader = _check_reads(videos[codec], reads)
    assert not reader.sequential, "well-formed files should be read by seeking"


@pytest.mark.parametrize("name, frames, claimed", [("tree.avi", 68, 444), ("cup.mp4", 217, 217),
                                                   ("Megamind_bugy.avi", 270, 270)])
def test_real_files_bit_identical(video_fixtures, name, frames, claimed):
    path = video_fixtures / name
    index = index_video(path)
    assert (index.num_frames, index.claimed_frames) == (frames, claimed)  # tree.avi's metadata lies
    rng = np.random.default_rng(1)
    reads = [np.arange(0, 16, 2), np.sort(rng.choice(frames, 6, replace=False)),
             np.arange(frames - 5, frames)]
    reader = _check_reads(path, reads)
    if name == "Megamind_bugy.avi":  # decoder output order differs from its timestamps
        assert reader.sequential


def test_variable_frame_rate_times(tmp_path):
    pts = [0, 1, 2, 4, 7, 8, 12, 13, 14, 20]
    path = write_video(tmp_path / "vfr", "h264", frames=len(pts), pts=pts)
    index = index_video(path)
    assert np.allclose(index.times, np.array(pts) / 25)
    assert index.frames_between(0.15, 0.5) == (3, 7)  # frames at 0.16, 0.28, 0.32 and 0.48 s
    _check_reads(path, [[0, 4, 9], [5, 6, 7]])


def test_resize_at_decode_time(videos):
    assert output_size(1280, 720, 240) == (426, 240)
    assert output_size(64, 48, 240) == (64, 48)  # never upscales
    frames = read_frames(videos["h264"], [0, 5], max_short_side=24)
    assert frames.shape == (2, 24, 32, 3)


def test_bad_files_raise_decode_error(tmp_path, videos):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(videos["h264"].read_bytes()[:600])
    for path, why in [(empty, "empty"), (text, "not a readable video"), (truncated, "cannot decode")]:
        with pytest.raises(DecodeError, match=why) as err:
            read_frames(path, [0])
        assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError):
        index_video(tmp_path / "missing.mp4")
    with pytest.raises(IndexError, match=r"\[0, 20\)"):
        read_frames(videos["h264"], [20])


def test_last_packet_without_a_frame_shrinks_the_index(tmp_path):
    """The B-frame tail case: 31 packets, 30 frames decode; the index says 30 and every read works."""
    path = write_empty_tail(tmp_path / "tail", frames=30)
    assert packet_count(path) == 31 and len(full_decode(path)) == 30
    index = index_video(path)
    assert index.num_frames == 30
    reader = _check_reads(path, [np.arange(30), [29], np.arange(20, 30, 3), [29, 0]])
    assert not reader.sequential  # the seeking path agrees with the index too
    with VideoReader(path) as r:
        assert np.array_equal(r.read_all(), np.stack(full_decode(path)))


def test_read_all_fills_one_array(videos):
    reference = np.stack(full_decode(videos["h264"]))
    with VideoReader(videos["h264"]) as reader:
        frames = reader.read_all()
    assert frames.shape == reference.shape  # one array, filled in place (no stack of copies)
    assert np.array_equal(frames, reference)
