"""Video to text: a ViViT encoder whose tokens are the prefix of a causal decoder.

    video (B, C, T, H, W) -> ViViT.time_tokens -> LayerNorm + Linear -> P prefix embeddings
    prefix + <bos> w1 ... wn -> Decoder (GQA, rotary positions, KV cache) -> next-word logits

The video enters the decoder as a prefix of its sequence, as in GIT and SmolVLM, rather than
through cross-attention: the decoder stays the one causal :class:`~tubelet.models.decoder.Decoder`
(the same blocks, the same key/value cache, the same speculative sampling), and a caption is
"continue this sequence". The cache is filled with the prefix once per video
(:class:`VideoPrefixLM`); every word after it costs one token of attention over P + n keys.

The prefix is :meth:`ViViT.time_tokens`: the pooled representation then one token per token
frame, in order (P = 1 + t; Model 2's temporal tokens), so the decoder reads a short summary
that keeps the order of events; ``prefix="all"`` passes every encoder token instead.

Words are tokenised by a :class:`WordVocab` built from the training captions (the COCO caption
tokenisation of :func:`tubelet.captions.tokenize`), saved in the checkpoint's ``config.json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .decoder import Decoder, DecoderConfig
from .info import ModelInfo
from .vivit import ViViT

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(len(SPECIALS))


def tokenize(text: str) -> list[str]:
    from ..captions.metrics import tokenize as coco_tokenize  # the metrics' tokenisation
    return coco_tokenize(text)


class WordVocab:
    """Words <-> ids: the four specials, then the words of the training captions (sorted)."""

    def __init__(self, words: Iterable[str]) -> None:
        words = [w for w in words if w not in SPECIALS]
        self.words: list[str] = list(SPECIALS) + words
        self.ids = {w: i for i, w in enumerate(self.words)}
        if len(self.ids) != len(self.words):
            raise ConfigError("a caption vocabulary lists a word twice")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> WordVocab:
        counts = Counter(w for c in captions for w in tokenize(c))
        return cls(sorted(w for w, n in counts.items() if n >= min_count))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, max_length: int | None = None) -> list[int]:
        """<bos> words <eos> as ids (unknown words -> <unk>), cut to ``max_length`` ids."""
        ids = [BOS] + [self.ids.get(w, UNK) for w in tokenize(caption)] + [EOS]
        return ids if max_length is None else ids[:max_length - 1] + [EOS] if len(ids) > max_length else ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> the words up to the first <eos>, specials dropped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS) and i < len(self.words):
                out.append(self.words[i])
        return " ".join(out)

    def batch(self, captions: Sequence[str], max_length: int) -> Tensor:
        """(B, L) ids, right-padded with <pad> to the longest (at most ``max_length``)."""
        rows = [self.encode(c, max_length) for c in captions]
        out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
        for b, r in enumerate(rows):
            out[b, :len(r)] = torch.tensor(r)
        return out


@dataclass
class CaptionerConfig:
    """The parts of a captioner beyond its encoder (a ViViTConfig) and its vocabulary."""

    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(
        vocab_size=0, dim=128, num_layers=2, num_heads=4, num_kv_heads=1, mlp_dim=384))
    prefix: str = "time"  # "time": the pooled token and one per token frame; "all": every encoder token
    max_length: int = 32  # caption ids, <bos> and <eos> included

    def __post_init__(self) -> None:
        if isinstance(self.decoder, dict):
            self.decoder = DecoderConfig(**self.decoder)
        if self.prefix not in ("time", "all"):
            raise ConfigError(f"captioner prefix must be 'time' or 'all', got {self.prefix!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Captioner(nn.Module):
    """A ViViT encoder, a projection of its tokens and a causal decoder that continues them."""

    def __init__(self, encoder: ViViT, vocab: WordVocab, cfg: CaptionerConfig | None = None, *,
                 project: nn.Module | None = None, decoder: Decoder | None = None) -> None:
        """``project`` and ``decoder``: modules to use (shared with another captioner) instead of new ones."""
        super().__init__()
        cfg = cfg or CaptionerConfig()
        cfg.decoder.vocab_size = len(vocab)
        self.cfg, self.vocab = cfg, vocab
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.project = project if project is not None else \
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.decoder.dim))
        self.decoder = decoder if decoder is not None else Decoder(cfg.decoder)
        self.info = ModelInfo()

    @property
    def config(self):  # the encoder's: what the data pipeline reads (frames, size)
        return self.encoder.config

    def encode_video(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, P, encoder width): the encoder tokens the decoder reads."""
        return self.encoder.time_tokens(clips) if self.cfg.prefix == "time" else self.encoder.encode(clips)

    def video_prefix(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, P, decoder dim) prefix embeddings."""
        return self.project(self.encode_video(clips))

    def truncated(self, layers: int) -> Captioner:
        """A draft for speculative decoding that needs no training: the first ``layers`` decoder
        blocks with this captioner's embedding, final norm and head, reading the same projected
        video tokens (encoder and projection shared, so a video is encoded once for both)."""
        from dataclasses import replace

        from ..generate.loading import truncated_draft
        if not 1 <= layers <= self.decoder.cfg.num_layers:
            raise ConfigError(f"a truncated draft keeps 1 to {self.decoder.cfg.num_layers} decoder blocks, "
                              f"not {layers}")
        cfg = replace(self.cfg, decoder=replace(self.decoder.cfg, num_layers=layers))
        decoder = truncated_draft(self.decoder, layers).to(next(self.decoder.parameters()).device)
        draft = Captioner(self.encoder, self.vocab, cfg, project=self.project, decoder=decoder)
        draft.info = self.info
        return draft.eval()

    def forward(self, clips: Tensor, tokens: Tensor) -> Tensor:
        """Teacher forcing: (B, C, T, H, W) clips and (B, n) ids -> (B, n, V) next-id logits."""
        return self.decoder(tokens, prefix=self.video_prefix(clips))

    def loss(self, clips: Tensor, ids: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Cross-entropy of every caption id after <bos> given the ones before (pads ignored)."""
        logits = self(clips, ids[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), ignore_index=PAD,
                               label_smoothing=label_smoothing)

    @torch.no_grad()
    def caption(self, clips: Tensor, *, max_new_tokens: int | None = None, sampling=None, seed: int = 0,
                draft: Captioner | None = None, k: int = 4):
        """Captions of a batch of clips: (texts, :class:`~tubelet.generate.stats.Generation`).

        ``sampling`` (:class:`~tubelet.generate.Sampling`; default greedy) and ``seed`` as in
        :mod:`tubelet.generate`; with ``draft`` (a smaller captioner with the same vocabulary) the
        words come from exact speculative sampling, the draft reading the same video.
        """
        from ..generate import Sampling, autoregressive_generate, speculative_generate
        sampling = sampling or Sampling(temperature=0.0)
        limit = max_new_tokens or self.cfg.max_length - 1
        prompts = [[BOS]] * len(clips)
        target = VideoPrefixLM(self, clips)
        if draft is None:
            out = autoregressive_generate(target, prompts, limit, sampling=sampling, seed=seed, eos_token_id=EOS)
        else:
            if draft.vocab.words != self.vocab.words:
                raise ConfigError("the draft captioner's vocabulary differs from the target's")
            out = speculative_generate(target, VideoPrefixLM(draft, clips, shares=target), prompts, limit, k=k,
                                       sampling=sampling, seed=seed, eos_token_id=EOS)
        return [self.vocab.decode(ids) for ids in out.tokens], out


class VideoPrefixLM:
    """A captioner as a :class:`~tubelet.generate.models.CausalLM`: :meth:`reset` runs the encoder
    and fills each row's cache with its video's prefix, which the lengths seen by the sampler
    leave out, so every sampler of :mod:`tubelet.generate` captions videos unchanged."""

    def __init__(self, model: Captioner, clips: Tensor, shares: VideoPrefixLM | None = None) -> None:
        self.model = model.eval()
        self.clips = clips
        self.shares = shares  # another captioner's LM on the same clips: its encoder output is reused
        self._tokens: Tensor | None = None
        self.vocab_size = len(model.vocab)
        self.device = clips.device
        self.calls = 0
        self.cache = None
        self.prefix_length = 0

    @property
    def lengths(self) -> Tensor:
        return self.cache.lengths - self.prefix_length

    @torch.no_grad()
    def video_tokens(self) -> Tensor:
        """The encoder's tokens of the clips, computed once (or taken from ``shares`` when both
        captioners have the same encoder and prefix, as a truncated draft does)."""
        other = self.shares
        if other is not None and other.model.encoder is self.model.encoder and other.model.cfg.prefix == self.model.cfg.prefix:
            return other.video_tokens()
        if self._tokens is None:
            self._tokens = self.model.encode_video(self.clips)
        return self._tokens

    @torch.no_grad()
    def reset(self, batch_size: int) -> None:
        if batch_size != len(self.clips):
            raise ValueError(f"{batch_size} rows for {len(self.clips)} videos")
        prefix = self.model.project(self.video_tokens())
        self.prefix_length = prefix.shape[1]
        self.cache = self.model.decoder.new_cache(batch_size)
        empty = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)
        self.model.decoder.features(empty, self.cache, prefix=prefix)

    @torch.no_grad()
    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        self.calls += 1
        logits = self.model.decoder(tokens, self.cache, num_valid)
        logits[..., [PAD, BOS]] = float("-inf")  # never words: the captioner's distribution excludes them
        return logits

    def crop(self, lengths: Tensor) -> None:
        self.cache.crop(lengths + self.prefix_length)

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        return [(k[:, self.prefix_length:], v[:, self.prefix_length:])
                for k, v in (self.cache.rows(i)[row] for i in range(len(self.model.decoder.blocks)))]


__all__ = ["BOS", "EOS", "PAD", "Captioner", "CaptionerConfig", "VideoPrefixLM", "WordVocab"]
