"""A captioner served: `POST /v1/classify` answers its caption, as `tubelet caption` writes it."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.models.captioner import Captioner, CaptionerConfig, WordVocab
from tubelet.models.decoder import DecoderConfig
from tubelet.models.info import ModelInfo, Preprocessing

from .conftest import running_server

CAPTIONS = ["a bright digit moves to the left", "a dark photo of a cat grows", "the rocket fades out then in"]


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    """A 32x32, 4-frame captioner with random weights large enough that its words vary."""
    torch.manual_seed(0)
    encoder = tubelet.create_model("vivit_micro", num_frames=4, image_size=32, num_classes=1, hidden_size=32,
                                   num_layers=1, num_heads=2, mlp_dim=32)
    encoder.info = ModelInfo(preprocessing=Preprocessing(4, (32, 32), frame_stride=1))
    model = Captioner(encoder, WordVocab.build(CAPTIONS), CaptionerConfig(
        decoder=DecoderConfig(vocab_size=0, dim=32, num_layers=1, num_heads=4, num_kv_heads=1, mlp_dim=64),
        max_length=10))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("captioner") / "captioner"
    tubelet.save_model(model, folder)
    return folder


def test_a_captioner_answers_its_caption(captioner, clip, tmp_path):
    expected = tubelet.pipeline(captioner, device="cpu")(clip)["caption"]  # what tubelet caption writes
    with running_server(captioner, "--device", "cpu", tmp=tmp_path) as served:
        model = served.get("v1/model")[1]
        assert model["caption"] is True and model["heads"] == [] and model["explain"] is False
        assert model["preprocessing"]["frames"] == 4 and model["preprocessing"]["size"] == [32, 32]
        status, body, _ = served.upload(clip.read_bytes())
        assert status == 200 and body["caption"] == expected and "top" not in body
        status, body, _ = served.upload(clip.read_bytes(), fields={"explain": "1"})
        assert status == 400 and "no attention maps" in body["error"]
