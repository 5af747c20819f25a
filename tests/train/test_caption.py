"""`tubelet train --task caption` and `tubelet caption` as a user runs them, on a tiny captioned
built-in dataset: the run folder, validation metrics, an exact resume, the caption command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tubelet
from tubelet.cli import main
from tubelet.data.synth import SynthConfig, generate
from tubelet.models.captioner import Captioner
from tubelet.train.logging import read_metrics

from .conftest import losses, train_args

DECODER = ["--model.decoder-dim", "32", "--model.decoder-heads", "2", "--model.decoder-layers", "1",
           "--model.caption-length", "16"]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, SynthConfig(videos_per_class=2, val_videos_per_class=1, size=32, frames=8, captions=True),
             progress=False, workers=1)
    return out


@pytest.fixture(scope="module")
def trained(captioned, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "cap"
    args = train_args(captioned, run, "--task", "caption", "--max-steps", "6", "--checkpoint-every", "3", *DECODER)
    assert main(args) == 0
    return run


def test_a_caption_run_trains_validates_and_saves_a_captioner(trained):
    model = tubelet.load_model(trained)
    assert isinstance(model, Captioner) and model.decoder.cfg.num_kv_heads == 1
    evals = [r for r in read_metrics(trained / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals and {"bleu4", "cider_d", "facts_correct", "count"} <= set(evals[-1])
    assert evals[-1]["count"] == 10  # one validation video per class
    saved = json.loads((trained / "final" / "config.json").read_text())
    assert saved["task"] == "caption" and saved["provenance"]["steps"] == 6
    assert "moves" in saved["vocab"] or "moving" in saved["vocab"]


def test_a_resumed_caption_run_repeats_the_same_losses(trained, captioned, tmp_path):
    """The caption drawn for each video at each step is seeded: a run resumed from step 3 gives
    the losses of steps 4-6 of the run that went straight through."""
    run = tmp_path / "cap"
    shutil.copytree(trained, run)
    (run / "checkpoints" / "latest").write_text("step-0000003\n")
    shutil.rmtree(run / "checkpoints" / "step-0000006")
    shutil.rmtree(run / "final")
    straight = losses(trained)
    assert main(["train", "--out", str(run), "--resume"]) == 0
    again = losses(run)
    assert [round(again[s], 5) for s in (4, 5, 6)] == [round(straight[s], 5) for s in (4, 5, 6)]


def test_caption_command_answers_every_good_file(trained, captioned, tmp_path, capsys):
    videos = sorted((captioned / "validate").rglob("*.mp4"))[:3]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(videos[0].read_bytes()[:500])
    capsys.readouterr()
    assert main(["caption", str(trained), *map(str, videos), str(bad), "--json", "--workers", "0"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [e["video"] for e in out] == list(map(str, videos))
    caption = tubelet.pipeline(trained, device="cpu")  # a captioner's pipeline captions
    assert caption(videos[0]) == {"caption": out[0]["caption"]}
    assert caption([str(v) for v in videos]) == [{"caption": e["caption"]} for e in out]
    assert main(["caption", str(trained), *map(str, videos), "--json", "--workers", "0", "--draft", "truncated:1"]) == 0
    assert json.loads(capsys.readouterr().out) == out  # greedy: speculative decoding gives the same words
    assert main(["caption", str(trained), *map(str, videos), "--json", "--workers", "0", "--beams", "3"]) == 0
    beams = json.loads(capsys.readouterr().out)
    assert [e["video"] for e in beams] == [e["video"] for e in out] and all(e["caption"] for e in beams)
    assert main(["caption", str(trained), str(videos[0]), "--beams", "2", "--temperature", "1"]) == 2
    assert main(["caption", str(trained), str(videos[0]), "--temperature", "-1"]) == 2


def test_eval_scores_a_captioner_on_the_held_out_videos(trained, captioned, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--data", str(captioned), "--json", "--workers", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 10 and {"bleu4", "cider_d", "facts_correct"} <= set(metrics)
    run_metrics = [r for r in read_metrics(trained / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert abs(metrics["bleu4"] - run_metrics["bleu4"]) < 1e-9  # the run's own validation, repeated


def test_a_smollm2_caption_run_trains_around_a_frozen_language_model(captioned, tiny_smollm2, tmp_path, capsys):
    """``--model.decoder smollm2`` (a tiny stand-in here): the language model's weights stay those of its
    package but for the norms, which train; the checkpoint names it instead of holding it."""
    import torch
    run = tmp_path / "smol"
    args = train_args(captioned, run, "--task", "caption", "--model.decoder", "smollm2", "--max-steps", "2",
                      "--model.caption-length", "24")
    assert main(args) == 0
    saved = json.loads((run / "final" / "config.json").read_text())
    assert saved["vocab"] == {"tokenizer": "smollm2"} and saved["captioner"]["pretrained"] == "smollm2"
    model, (package, _) = tubelet.load_model(run), tiny_smollm2()
    assert torch.equal(model.decoder.blocks[1].mlp.down.weight, package.blocks[1].mlp.down.weight)
    assert not torch.equal(model.decoder.norm.weight, package.norm.weight)
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[-1]["count"] == 10
    video = str(sorted((captioned / "validate").rglob("*.mp4"))[0])
    capsys.readouterr()
    assert main(["caption", str(run), video, "--json", "--workers", "0", "--draft", "truncated:1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["caption"] == tubelet.pipeline(run, device="cpu")(video)["caption"]


def test_a_caption_run_from_a_classifier_keeps_its_encoder_unless_told(captioned, tmp_path, capsys):
    """With --init the encoder is frozen by default (training it on captions lost directions);
    ``--optim.train-only encoder,project,decoder`` trains it too."""
    import torch

    from .conftest import TINY_MODEL
    classifier = tubelet.create_model("vivit_micro", num_frames=8, image_size=32, num_classes=10, **TINY_MODEL)
    tubelet.save_model(classifier, tmp_path / "classifier")
    before = classifier.state_dict()

    def encoder_changed(run: Path, *extra: str) -> bool:
        args = train_args(captioned, run, "--task", "caption", "--init", str(tmp_path / "classifier"),
                          "--max-steps", "2", "--runtime.eval-every", "0", *DECODER, *extra)
        assert main(args) == 0
        after = tubelet.load_model(run).encoder.state_dict()
        return any(not torch.equal(after[k], before[k]) for k in after if not k.startswith("head."))

    assert not encoder_changed(tmp_path / "frozen")
    assert "the encoder stays frozen" in capsys.readouterr().out
    assert encoder_changed(tmp_path / "all", "--optim.train-only", "encoder,project,decoder")
