"""transformers' VivitForVideoClassification <-> tubelet, checked against the real implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tubelet.convert.hf import config_from_hf, config_to_hf, load_hf, save_hf, to_hf_state_dict  # noqa: E402
from tubelet.models import ConfigError, ViViT  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.VivitConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
        num_frames=8, tubelet_size=[2, 8, 8], num_labels=5)
    model = transformers.VivitForVideoClassification(config).eval()
    with torch.no_grad():  # transformers zero-initialises CLS, position embeddings and biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def clip():
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, C, T, H, W)


def _hf_logits(model, clip):
    with torch.no_grad():
        return model(pixel_values=clip.transpose(1, 2)).logits  # HF takes (B, T, C, H, W)


def test_config_mapping(hf_model):
    cfg = config_from_hf(hf_model.config)
    assert (cfg.gelu, cfg.layer_norm_eps, cfg.tubelet_size, cfg.patch_size, cfg.num_classes) == \
        ("tanh", 1e-6, 2, 8, 5)
    back = config_to_hf(cfg)
    for key in ("hidden_act", "tubelet_size", "num_frames", "intermediate_size", "layer_norm_eps"):
        assert back[key] == hf_model.config.to_dict()[key], key


def test_import_from_state_dict_in_memory(hf_model, clip):
    model = load_hf(hf_model.state_dict(), config=hf_model.config)
    with torch.no_grad():
        assert (model(clip) - _hf_logits(hf_model, clip)).abs().max().item() < TOL


def test_import_from_save_pretrained_folder(hf_model, clip, tmp_path):
    hf_model.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    with torch.no_grad():
        assert (model(clip) - _hf_logits(hf_model, clip)).abs().max().item() < TOL


def test_export_loads_back_into_transformers(hf_model, clip, tmp_path):
    model = load_hf(hf_model.state_dict(), config=hf_model.config)
    save_hf(model, tmp_path)
    back = transformers.VivitForVideoClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (model(clip) - _hf_logits(back, clip)).abs().max().item() < TOL
    # the module naming of transformers 5 loads strictly too
    fresh = transformers.VivitForVideoClassification(back.config).eval()
    fresh.load_state_dict(to_hf_state_dict(model, naming="module"), strict=True)
    assert (_hf_logits(fresh, clip) - _hf_logits(back, clip)).abs().max().item() == 0.0


def test_export_folds_the_table_over_time_into_the_position_table(hf_model, clip, tmp_path):
    # transformers has one joint table; time_embed adds per-frame rows that it must carry
    cfg = config_from_hf(hf_model.config).replace(time_embed=1.0)
    torch.manual_seed(2)
    model = ViViT(cfg).eval()
    torch.nn.init.normal_(model.head.weight)  # non-zero logits to compare
    save_hf(model, tmp_path)
    back = transformers.VivitForVideoClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (model(clip) - _hf_logits(back, clip)).abs().max().item() < TOL


def test_other_variants_are_refused(hf_model):
    cfg = config_from_hf(hf_model.config).replace(kind="factorised_encoder")
    with pytest.raises(ConfigError, match="kind=factorised_encoder"):
        save_hf(ViViT(cfg), "unused")


def test_wrong_depth_is_named(hf_model):
    cfg = config_from_hf(hf_model.config).replace(num_layers=3)
    with pytest.raises(ConfigError, match="layer.2|layers.2"):
        load_hf(hf_model.state_dict(), cfg=cfg)


# ------------------------------------------------------------------ the model's identity
NAMES = ("archery", "bowling", "cooking", "dancing", "eating", "fencing")


def _named_model():
    from tubelet import ModelInfo, ViViTConfig

    torch.manual_seed(0)
    model = ViViT(ViViTConfig(num_frames=4, image_size=32, patch_size=16, tubelet_size=2, hidden_size=32,
                              num_layers=1, num_heads=2, mlp_dim=64, num_classes=len(NAMES))).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    model.info = ModelInfo(class_names=(NAMES,))
    return model


def test_export_keeps_names_and_the_reference_pixels(tmp_path):
    save_hf(_named_model(), tmp_path)
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert [config.id2label[i] for i in range(len(NAMES))] == list(NAMES)
    assert config.label2id["fencing"] == 5
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    frames = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    pixels = processor(frames, return_tensors="pt")["pixel_values"][0]  # (T, C, H, W)
    want = torch.from_numpy(np.stack(frames)).float() * 2 / 255 - 1  # the reference: x * 2 / 255 - 1
    torch.testing.assert_close(pixels, want.permute(0, 3, 1, 2), atol=1e-6, rtol=0)


def test_import_reads_id2label_and_the_hub_processor(tmp_path):
    """The hub's Vivit processor maps pixels to [-3, 1]; the import records exactly what it does."""
    _named_model_hf = transformers.VivitForVideoClassification(transformers.VivitConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
        num_frames=4, tubelet_size=[2, 16, 16], id2label=dict(enumerate(NAMES)),
        label2id={n: i for i, n in enumerate(NAMES)}))
    _named_model_hf.save_pretrained(tmp_path)
    hub = transformers.VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    hub.save_pretrained(tmp_path)  # the hub's defaults: rescale 1/127.5 with offset, mean = std = 0.5
    model = load_hf(tmp_path)
    assert model.info.class_names == (NAMES,)
    pre = model.info.preprocessing
    assert pre.pixel_range == pytest.approx((-3.0, 1.0))
    frames = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    want = hub(frames, return_tensors="pt")["pixel_values"][0].permute(1, 0, 2, 3)  # -> (C, T, H, W)
    got = pre.normalise(torch.from_numpy(np.stack(frames)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _write_video(path, frames, fps=10):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_pipeline_agrees_with_tubelet_on_the_same_frames(tmp_path):
    """transformers' own pipeline("video-classification") on the export gives tubelet's top 5."""
    from tubelet.cli import main
    from tubelet.checkpoint import save_model
    from tubelet.data.decode import read_frames

    model = _named_model()
    save_model(model, tmp_path / "ckpt")
    assert main(["convert", "--from", "tubelet", str(tmp_path / "ckpt"), "--to", "hf",
                 "--out", str(tmp_path / "export")]) == 0
    # A real H.264 file, 12 frames of 32x48 (the pipeline resizes the short side to 32: unchanged,
    # then centre-crops 32x32): moving gradients with noise.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:48]
    frames = np.stack([np.stack([(xx * 5 + 20 * t) % 256, (yy * 7) % 256, (xx + yy + 30 * t) % 256], -1)
                       for t in range(12)]).astype(np.int64)
    frames = np.clip(frames + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
    video = tmp_path / "clip.mp4"
    _write_video(video, frames)

    pipe = transformers.pipeline("video-classification", model=str(tmp_path / "export"))
    got = pipe(str(video), frame_sampling_rate=2, top_k=5)

    # The pipeline's frames: np.linspace(0, num_frames * frame_sampling_rate - 1, num_frames) as
    # int64 from the start of the video ([0, 2, 4, 7] here), then the processor's centre crop.
    indices = np.linspace(0, 4 * 2 - 1, 4).astype(np.int64)
    clip = torch.from_numpy(read_frames(video, indices))[:, :, 8:40]  # (T, H, W, C), centre 32x32
    with torch.no_grad():
        probs = model(model.info.preprocessing_for(model.config).normalise(clip)[None]).softmax(-1)[0]
    scores, ids = probs.topk(5)
    assert [g["label"] for g in got] == [NAMES[i] for i in ids]
    assert max(abs(g["score"] - s) for g, s in zip(got, scores.tolist())) < 1e-4


def test_pipeline_agrees_with_tubelet_predict(tmp_path, capsys):
    """On a video of exactly ``num_frames`` frames, pipeline(frame_sampling_rate=1) reads frames
    0..F-1 and one centre crop: what `tubelet predict --stride 1 --views 1 --crops 1` reads, on
    the tubelet checkpoint and on the transformers export alike."""
    import json

    from tubelet.checkpoint import save_model
    from tubelet.cli import main

    model = _named_model()
    save_model(model, tmp_path / "ckpt")
    save_hf(model, tmp_path / "export")
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    video = tmp_path / "four.mp4"
    _write_video(video, frames)
    got = transformers.pipeline("video-classification", model=str(tmp_path / "export"))(str(video), top_k=5)
    for folder in ("ckpt", "export"):
        capsys.readouterr()
        assert main(["predict", str(tmp_path / folder), str(video), "--stride", "1", "--views", "1",
                     "--crops", "1", "--device", "cpu", "--json"]) == 0
        top = json.loads(capsys.readouterr().out)[0]["heads"][0]["top"]
        assert [t["label"] for t in top] == [g["label"] for g in got]
        assert max(abs(t["score"] - g["score"]) for t, g in zip(top, got)) < 1e-4


def test_video_processor_configs_offset_always():
    """transformers' VivitVideoProcessor computes x * rescale_factor - 1 whatever `offset` says;
    other processors (no `offset`) only rescale."""
    from tubelet.convert.hf import pixels_from_processor

    video = {"video_processor_type": "VivitVideoProcessor", "rescale_factor": 1 / 127.5, "offset": False,
             "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    assert pixels_from_processor(video) == (pytest.approx((0.75,) * 3), pytest.approx((0.25,) * 3))
    other = {"image_processor_type": "VideoMAEImageProcessor", "rescale_factor": 1 / 255,
             "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    assert pixels_from_processor(other) == (pytest.approx((0.485, 0.456, 0.406)), pytest.approx((0.229, 0.224, 0.225)))
