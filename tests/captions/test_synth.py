"""Captions of the built-in dataset: every sentence names the motion, its direction and the event
order, and they read back out of it."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from tubelet.captions import caption_facts, captions_for, facts_correct, read_captions
from tubelet.cli import main
from tubelet.data.synth import PAIRS, SynthConfig, generate, render_scene

CONFIG = SynthConfig(seed=3, size=16, frames=8, event_order=True)
OBJECTS = [{"kind": "digit", "index": 4, "tone": "bright"}, {"kind": "photo", "photo": "cat", "tone": "dark"},
           {"kind": "photo", "photo": "coffee", "tone": "bright"}]


def _facts(motion: str, reversed_: bool, thing: dict) -> dict:
    return dict(thing, motion=motion, reversed=reversed_, distractors=0)


@pytest.mark.parametrize("motion", [pair[2] for pair in CONFIG.pairs])
def test_every_caption_reads_back_to_its_facts(motion):
    rng = np.random.default_rng(0)
    seen = set()
    for thing in OBJECTS:
        for reversed_ in (False, True):
            facts = _facts(motion, reversed_, thing)
            for _ in range(20):  # 100 sentences per class and object: every template and synonym
                captions = captions_for(facts, rng)
                assert len(set(captions)) == 5
                for caption in captions:
                    assert facts_correct(caption, facts), (caption, caption_facts(caption))
                    assert not facts_correct(caption, dict(facts, reversed=not reversed_)), caption
                seen.update(captions)
    assert len(seen) > 100  # varied sentences, not one template


def test_reversed_classes_get_the_opposite_direction_and_the_order_pair_its_order():
    found = {}
    for label in range(len(CONFIG.classes)):
        facts = render_scene(label, np.random.default_rng(label), CONFIG).facts
        found[CONFIG.classes[label]] = caption_facts(captions_for(facts, np.random.default_rng(7), n=1)[0])
    assert found["moving left"] == {"motion": "translate_x", "direction": "left", "order": None}
    assert found["moving right"]["direction"] == "right"
    assert found["moving up"]["direction"] == "up" and found["moving down"]["direction"] == "down"
    assert found["rotating anticlockwise"]["direction"] == "anticlockwise"
    assert found["rotating clockwise"]["direction"] == "clockwise"
    assert found["growing"]["direction"] == "grow" and found["shrinking"]["direction"] == "shrink"
    assert found["appearing"]["direction"] == "in" and found["disappearing"]["direction"] == "out"
    assert found["swaying then bobbing"] == {"motion": "sway_bob", "direction": None, "order": "sway_bob"}
    assert found["bobbing then swaying"]["order"] == "bob_sway"


def test_the_caption_names_the_object_as_drawn():
    facts = _facts("scale", False, {"kind": "photo", "photo": "cat", "tone": "dark"})
    for caption in captions_for(facts, np.random.default_rng(1), n=10):
        assert "cat" in caption and "dark" in caption and "digit" not in caption


@pytest.mark.parametrize("caption, expected", [
    ("a man is cooking", (None, None, None)),
    ("The digit moves from right to left.", ("translate_x", "left", None)),
    ("the cat picture falls to the bottom", ("translate_y", "down", None)),
    ("A photo spins counter-clockwise", ("rotate", "anticlockwise", None)),
    ("a number rotates", ("rotate", None, None)),
    ("the rocket becomes smaller", ("scale", "shrink", None)),
    ("a digit fades away", ("fade", "out", None)),
    ("a digit comes into view", ("fade", "in", None)),
    ("a digit bobs up and down after swaying sideways", ("sway_bob", None, "sway_bob")),
    ("a digit bobs up and down, then sways left and right", ("sway_bob", None, "bob_sway")),
    ("a digit sways", ("sway_bob", None, None)),
])
def test_reading_facts_from_any_caption(caption, expected):
    assert tuple(caption_facts(caption).values()) == expected


def test_a_caption_missing_the_order_or_direction_is_not_correct():
    assert not facts_correct("a digit sways and bobs", _facts("sway_bob", False, OBJECTS[0]))
    assert not facts_correct("a digit turns", _facts("rotate", True, OBJECTS[0]))
    assert facts_correct("a digit turns clockwise", _facts("rotate", True, OBJECTS[0]))


def test_captions_change_neither_the_videos_nor_the_cached_datasets(tmp_path):
    # The digests of the datasets generated before captions existed (a changed digest regenerates
    # every user's cache).
    assert SynthConfig().digest() == "73284132691c"
    assert SynthConfig(event_order=True).digest() == "218d7965e344"
    assert SynthConfig(captions=True).digest() != SynthConfig().digest()
    small = SynthConfig(seed=2, videos_per_class=1, val_videos_per_class=0, size=16, frames=4)
    plain = generate(tmp_path / "plain", small, progress=False, workers=1)
    captioned = generate(tmp_path / "captioned", dataclasses.replace(small, captions=True),
                         progress=False, workers=1)
    videos = sorted(p.relative_to(plain) for p in plain.rglob("*.mp4"))
    assert videos == sorted(p.relative_to(captioned) for p in captioned.rglob("*.mp4"))
    for video in videos:
        assert (plain / video).read_bytes() == (captioned / video).read_bytes()
    assert not (plain / "captions.csv").exists()


def test_synth_captions_command_writes_captions_csv(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--captions", "--videos-per-class", "1",
                 "--val-videos-per-class", "1", "--size", "16", "--frames", "4", "--workers", "1"]) == 0
    assert "captions.csv" in capsys.readouterr().out
    videos = read_captions(out)  # the folder's captions.csv
    assert len(videos) == 20 and {v.split for v in videos} == {"train", "validate"}
    for video in videos:
        assert len(video.captions) == 5 and video.path.parent.parent.parent == out
        _, backward, motion = next(p for p in PAIRS if video.path.parent.name in p[:2])
        facts = {"motion": motion, "reversed": video.path.parent.name == backward}
        assert all(facts_correct(caption, facts) for caption in video.captions), video
    with open(out / "captions.csv", newline="") as f:
        assert next(csv.reader(f)) == ["video", "caption", "split"]
