"""Image ViT -> ViViT (paper 3.4), checked against transformers' image models.

The invariant: for a clip whose frames are all one image, Model 2's spatial encoder gives the
image ViT's final-norm CLS token for every frame, and Models 1 and 3 initialised from a ViT
without a CLS token give the ViT's mean final token, with either kernel initialisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tubelet.convert.vit import (central_frame_kernel, image_vit_from_state_dict, inflate_kernel,
                                 read_image_vit, vivit_from_image_vit)
from tubelet.models import ConfigError, ViViTConfig

TOL = 1e-5
BACKBONE = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)
T = 4  # frames of the clip; tubelets of 2 frames


def test_central_frame_kernel_zeroes_the_time_axis():
    w = torch.randn(5, 3, 4, 4)
    k = central_frame_kernel(w, 3)
    assert k.shape == (5, 3, 3, 4, 4)
    torch.testing.assert_close(k[:, :, 1], w, rtol=0, atol=0)
    assert k[:, :, 0].abs().sum() == 0 and k[:, :, 2].abs().sum() == 0
    assert central_frame_kernel(w, 2)[:, :, 0].abs().sum() == 0  # t // 2 = 1 for t = 2


def test_filter_inflation_sums_to_the_image_kernel():
    w = torch.randn(5, 3, 4, 4)
    k = inflate_kernel(w, 4)
    torch.testing.assert_close(k.sum(2), w)
    torch.testing.assert_close(k[:, :, 0], k[:, :, 3], rtol=0, atol=0)


# ---------------------------------------------------------------------------- ground truths
transformers = pytest.importorskip("transformers")


def _noisy(model):
    torch.manual_seed(0)
    with torch.no_grad():  # transformers zero-initialises CLS, position embeddings and biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _hf_vit(eps=1e-12, hidden_act="gelu"):
    """transformers ViTModel with a CLS token (the image ViT of Model 2's test)."""
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, image_size=32, patch_size=8, layer_norm_eps=eps,
                                 hidden_act=hidden_act)
    return _noisy(transformers.ViTModel(cfg, add_pooling_layer=False))


def _siglip(hidden_act):
    """transformers' SigLIP vision tower without its head: a ViT with no CLS token."""
    cfg = transformers.SiglipVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, image_size=32, patch_size=8,
                                          hidden_act=hidden_act, layer_norm_eps=1e-6, vision_use_head=False)
    return _noisy(transformers.SiglipVisionModel(cfg))


def _siglip_to_timm(model) -> dict[str, torch.Tensor]:
    """SigLIP names -> timm names (what timm's `vit_*_siglip_*` without attention pooling holds)."""
    sd = {k.removeprefix("vision_model."): v for k, v in model.state_dict().items()}
    out = {"pos_embed": sd["embeddings.position_embedding.weight"][None],
           "patch_embed.proj.weight": sd["embeddings.patch_embedding.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embedding.bias"],
           "norm.weight": sd["post_layernorm.weight"], "norm.bias": sd["post_layernorm.bias"]}
    for i in range(2):
        s, a, b = f"encoder.layers.{i}", f"encoder.layers.{i}.self_attn", f"blocks.{i}"
        for p in ("weight", "bias"):
            out[f"{b}.norm1.{p}"] = sd[f"{s}.layer_norm1.{p}"]
            out[f"{b}.attn.qkv.{p}"] = torch.cat([sd[f"{a}.{n}_proj.{p}"] for n in "qkv"])
            out[f"{b}.attn.proj.{p}"] = sd[f"{a}.out_proj.{p}"]
            out[f"{b}.norm2.{p}"] = sd[f"{s}.layer_norm2.{p}"]
            out[f"{b}.mlp.fc1.{p}"] = sd[f"{s}.mlp.fc1.{p}"]
            out[f"{b}.mlp.fc2.{p}"] = sd[f"{s}.mlp.fc2.{p}"]
    return out


# Flax block names of big_vision / scenic and of the original ViT release (vision_transformer).
FLAX_LAYOUTS = {"big_vision": ("MultiHeadDotProductAttention_0", "LayerNorm_0", "LayerNorm_1", "MlpBlock_0"),
                "vit": ("MultiHeadDotProductAttention_1", "LayerNorm_0", "LayerNorm_2", "MlpBlock_3")}


def _timm_to_flax(sd, layout="big_vision") -> dict[str, np.ndarray]:
    """timm names -> Flax .npz paths and layouts: big_vision's (``params/`` prefix, top-level
    ``pos_embedding``) or the original ViT release's (no prefix, ``Transformer/posembed_input``)."""
    def n(t):
        return t.detach().numpy()
    D, H = 32, 4
    attn, ln1, ln2, mlp = FLAX_LAYOUTS[layout]
    root = "params/" if layout == "big_vision" else ""
    pos = "pos_embedding" if layout == "big_vision" else "Transformer/posembed_input/pos_embedding"
    out = {f"{root}{pos}": n(sd["pos_embed"]),
           f"{root}embedding/kernel": n(sd["patch_embed.proj.weight"].permute(2, 3, 1, 0)),
           f"{root}embedding/bias": n(sd["patch_embed.proj.bias"]),
           f"{root}Transformer/encoder_norm/scale": n(sd["norm.weight"]),
           f"{root}Transformer/encoder_norm/bias": n(sd["norm.bias"])}
    if "cls_token" in sd:
        out[f"{root}cls"] = n(sd["cls_token"])
    for i in range(2):
        s, b = f"{root}Transformer/encoderblock_{i}", f"blocks.{i}"
        for ln, part in ((ln1, "norm1"), (ln2, "norm2")):
            out[f"{s}/{ln}/scale"], out[f"{s}/{ln}/bias"] = n(sd[f"{b}.{part}.weight"]), n(sd[f"{b}.{part}.bias"])
        for name, w, bias in zip(("query", "key", "value"), sd[f"{b}.attn.qkv.weight"].chunk(3),
                                 sd[f"{b}.attn.qkv.bias"].chunk(3)):
            out[f"{s}/{attn}/{name}/kernel"] = n(w.T.reshape(D, H, D // H))
            out[f"{s}/{attn}/{name}/bias"] = n(bias.reshape(H, D // H))
        out[f"{s}/{attn}/out/kernel"] = n(sd[f"{b}.attn.proj.weight"].T.reshape(H, D // H, D))
        out[f"{s}/{attn}/out/bias"] = n(sd[f"{b}.attn.proj.bias"])
        for j, fc in enumerate(("fc1", "fc2")):
            out[f"{s}/{mlp}/Dense_{j}/kernel"] = n(sd[f"{b}.mlp.{fc}.weight"].T)
            out[f"{s}/{mlp}/Dense_{j}/bias"] = n(sd[f"{b}.mlp.{fc}.bias"])
    return out


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1


def _clip(image):  # (1, C, H, W) -> (1, C, T, H, W), every frame the same image
    return image.unsqueeze(2).expand(-1, -1, T, -1, -1).contiguous()


# ---------------------------------------------------------------------------- Model 2
@pytest.mark.parametrize("kernel_init", ["central_frame", "filter_inflation"])
@pytest.mark.parametrize("source", ["hf_state_dict", "hf_folder", "timm", "vit_npz"])
def test_model2_spatial_encoder_gives_the_vit_cls_token(image, tmp_path, kernel_init, source):
    if source == "vit_npz":  # the original ViT release: Flax, tanh GELU, eps 1e-6
        hf = _hf_vit(eps=1e-6, hidden_act="gelu_pytorch_tanh")
    else:
        hf = _hf_vit(eps=1e-6 if source == "timm" else 1e-12)  # timm's ViT uses eps 1e-6
    if source == "vit_npz":
        canonical = image_vit_from_state_dict(hf.state_dict(), hf.config.to_dict()).state
        np.savez(tmp_path / "ViT-B_16.npz", **_timm_to_flax(canonical, layout="vit"))
        vit = read_image_vit(tmp_path / "ViT-B_16.npz")
        assert (vit.naming, vit.gelu, vit.layer_norm_eps, vit.has_cls_token) == ("flax", "tanh", 1e-6, True)
    elif source == "hf_state_dict":
        vit = image_vit_from_state_dict(hf.state_dict(), hf.config.to_dict())
    elif source == "hf_folder":
        hf.save_pretrained(tmp_path)
        vit = read_image_vit(tmp_path)
    else:  # a timm-named state dict built through the transformers map, with a classifier head
        timm_sd = dict(image_vit_from_state_dict(hf.state_dict(), hf.config.to_dict()).state)
        timm_sd.update({"head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)})
        from safetensors.torch import save_file
        save_file(timm_sd, str(tmp_path / "vit.safetensors"))
        vit = read_image_vit(tmp_path / "vit.safetensors")
        assert (vit.naming, vit.gelu, vit.layer_norm_eps) == ("timm", "exact", 1e-6)
    cfg = ViViTConfig(kind="factorised_encoder", classifier="token", num_frames=T, image_size=32,
                      tubelet_size=2, temporal_layers=1, num_classes=3, **BACKBONE)
    model = vivit_from_image_vit(vit, cfg, kernel_init=kernel_init)
    with torch.no_grad():
        want = hf(pixel_values=image).last_hidden_state[:, 0]  # (1, D)
        tokens = model.tokeniser(_clip(image))  # (1, t, h*w, D)
        got = model.spatial(tokens.flatten(0, 1))[:, 0]  # (t, D): every frame's CLS output
        assert (got - want).abs().max().item() < TOL
        assert model(_clip(image)).abs().max() == 0  # a fresh (zero) head


# ---------------------------------------------------------------------------- Models 1 and 3
@pytest.mark.parametrize("kernel_init", ["central_frame", "filter_inflation"])
@pytest.mark.parametrize("kind", ["spatiotemporal", "factorised_self_attention"])
@pytest.mark.parametrize("source", ["timm", "big_vision_npz", "big_vision_scanned_npz"])
def test_models_1_and_3_give_the_vit_mean_token(image, tmp_path, kernel_init, kind, source):
    siglip = _siglip("gelu" if source == "timm" else "gelu_pytorch_tanh")  # Flax ViTs use tanh GELU
    timm_sd = _siglip_to_timm(siglip)
    if source == "timm":
        vit = image_vit_from_state_dict(timm_sd)
    else:
        arrays = _timm_to_flax(timm_sd)
        arrays["params/head/kernel"] = np.zeros((32, 10), np.float32)  # a classifier, not used
        if source == "big_vision_scanned_npz":  # scan=True: one block tree, a leading depth axis
            blocks = [k for k in arrays if "/encoderblock_0/" in k]
            for k in blocks:
                arrays[k.replace("encoderblock_0", "encoderblock")] = np.stack(
                    [arrays.pop(k), arrays.pop(k.replace("encoderblock_0", "encoderblock_1"))])
        np.savez(tmp_path / "vit.npz", **arrays)
        vit = read_image_vit(tmp_path / "vit.npz")
        assert (vit.naming, vit.gelu, vit.num_heads) == ("flax", "tanh", 4)
    assert not vit.has_cls_token
    cfg = ViViTConfig(kind=kind, classifier="gap", num_frames=T, image_size=32, tubelet_size=2,
                      num_classes=3, **BACKBONE)
    model = vivit_from_image_vit(vit, cfg, kernel_init=kernel_init)
    with torch.no_grad():
        want = siglip(pixel_values=image).last_hidden_state.mean(dim=1)  # (1, D)
        got = model.forward_features(_clip(image))
        assert (got - want).abs().max().item() < TOL


def test_model3_reference_zero_all_init_also_starts_as_the_image_model(image):
    siglip = _siglip("gelu")
    vit = image_vit_from_state_dict(_siglip_to_timm(siglip))
    cfg = ViViTConfig(kind="factorised_self_attention", classifier="gap", num_frames=T, image_size=32,
                      num_classes=3, **BACKBONE)
    model = vivit_from_image_vit(vit, cfg, temporal_attention_init="zero_all")
    assert model.encoder.blocks[0].attn_time.qkv.weight.abs().sum() == 0
    default = vivit_from_image_vit(vit, cfg)
    assert default.encoder.blocks[0].attn_time.qkv.weight.abs().sum() > 0  # q/k/v stay trainable
    assert default.encoder.blocks[0].attn_time.proj.weight.abs().sum() == 0
    with torch.no_grad():
        want = siglip(pixel_values=image).last_hidden_state.mean(dim=1)
        assert (model.forward_features(_clip(image)) - want).abs().max().item() < TOL


# ---------------------------------------------------------------------------- other sizes, errors
def test_initialised_model_runs_at_other_frame_counts_and_sizes(image):
    vit = image_vit_from_state_dict(_hf_vit().state_dict())
    cfg = ViViTConfig(kind="spatiotemporal", classifier="token", num_frames=8, image_size=(48, 64),
                      num_classes=3, **BACKBONE)
    model = vivit_from_image_vit(vit, cfg)
    assert model.encoder.pos_embed.shape == (1, 1 + 4 * 6 * 8, 32)
    rows = model.encoder.pos_embed[0, 1:].reshape(4, 48, 32)
    assert torch.allclose(rows, rows[:1].expand_as(rows))  # repeated over time
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 8, 48, 64))).all()


def test_backbone_mismatch_names_the_field():
    vit = image_vit_from_state_dict(_hf_vit().state_dict(), {"num_attention_heads": 4})
    cfg = ViViTConfig(kind="spatiotemporal", num_frames=T, image_size=32, num_classes=3,
                      **dict(BACKBONE, num_layers=3))
    with pytest.raises(ConfigError, match="num_layers=2.*num_layers=3"):
        vivit_from_image_vit(vit, cfg)
    with pytest.raises(ConfigError, match="num_heads=4"):
        vivit_from_image_vit(vit, cfg.replace(num_layers=2, num_heads=2))


def test_average_pool_baseline_gives_the_vit_cls_token(image):
    hf = _hf_vit()
    vit = image_vit_from_state_dict(hf.state_dict(), hf.config.to_dict())
    cfg = ViViTConfig(kind="average_pool", classifier="token", num_frames=T, image_size=32, num_classes=3,
                      **BACKBONE)
    model = vivit_from_image_vit(vit, cfg)
    with torch.no_grad():  # the mean over frames of identical frames' CLS tokens
        want = hf(pixel_values=image).last_hidden_state[:, 0]
        assert (model.forward_features(_clip(image)) - want).abs().max().item() < TOL


@pytest.mark.parametrize("kind,classifier,tokeniser", [
    ("spatiotemporal", "token", "tubelet"), ("spatiotemporal", "token", "frame_sampling"),
    ("factorised_encoder", "token", "tubelet"), ("factorised_encoder", "gap", "tubelet"),
    ("factorised_self_attention", "gap", "tubelet"), ("factorised_dot_product", "gap", "tubelet"),
    ("average_pool", "token", "tubelet")])
def test_every_variant_initialises(kind, classifier, tokeniser):
    hf = _hf_vit()
    state = {f"vit.{k}": v for k, v in hf.state_dict().items()}  # ViTForImageClassification naming
    state.update({"classifier.weight": torch.zeros(10, 32), "classifier.bias": torch.zeros(10)})
    vit = image_vit_from_state_dict(state, hf.config.to_dict())
    cfg = ViViTConfig(kind=kind, classifier=classifier, tokeniser=tokeniser, num_frames=T, image_size=32,
                      temporal_layers=1, num_classes=3, **BACKBONE)
    model = vivit_from_image_vit(vit, cfg)
    encoder = model.spatial if kind in ("factorised_encoder", "average_pool") else model.encoder
    torch.testing.assert_close(encoder.blocks[1].mlp.fc2.weight, hf.state_dict()["layers.1.mlp.fc2.weight"])
    assert (encoder.cls_token is not None) == (classifier == "token")
    assert model.head.weight.abs().sum() == 0


def test_vit_without_cls_token_gives_a_fresh_cls_and_a_zero_position_row():
    vit = image_vit_from_state_dict(_siglip_to_timm(_siglip("gelu")))
    cfg = ViViTConfig(kind="spatiotemporal", classifier="token", num_frames=T, image_size=32, num_classes=3,
                      **BACKBONE)
    model = vivit_from_image_vit(vit, cfg)
    assert model.encoder.pos_embed[0, 0].abs().sum() == 0
    torch.testing.assert_close(model.encoder.pos_embed[0, 1:17], vit.state["pos_embed"][0], rtol=0, atol=0)
