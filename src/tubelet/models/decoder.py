"""A small causal decoder (Llama-style): the draft model of speculative sampling.

Pre-LN blocks ``x + Attn(RMSNorm(x))`` then ``+ SwiGLU(RMSNorm(.))``, rotary positions, and
grouped-query attention through tubelet's one :class:`~tubelet.models.attention.Attention`,
with a :class:`~tubelet.models.attention.KVCache` for decoding. The layout is that of Llama /
SmolLM2, so a target's first layers can be copied in (:func:`from_llama_state_dict`) to make a
draft that shares the target's tokenizer and starts close to it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Attention, KVCache, rotary_embedding

FEATURE_DRAFT = "feature-draft"  # config.json's "model" of a FeatureDraftModel


@dataclass
class TokenTree:
    """New tokens that form a tree instead of a sequence (candidates verified in one call):
    new token ``i`` of row ``b`` sits at position ``cached + depth[b, i]`` and sees the cached
    tokens and the new tokens ``j`` with ``visible[b, i, j]`` (itself included)."""

    depth: Tensor  # (B, n)
    visible: Tensor  # (B, n, n) bool


@dataclass
class DecoderConfig:
    vocab_size: int = 49152
    dim: int = 576
    num_layers: int = 2
    num_heads: int = 9
    num_kv_heads: int = 3
    mlp_dim: int = 1536
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), the MLP of Llama."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.num_kv_heads, qkv_bias=False,
                              proj_bias=False)
        self.norm2 = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache | None,
                layer: int) -> Tensor:
        x = x + self.attn(self.norm1(x), rope=rope, causal=cache is None, cache=cache, layer=layer)
        return x + self.mlp(self.norm2(x))


class Decoder(nn.Module):
    """Token embedding, pre-LN blocks, final RMSNorm, LM head (tied to the embedding by default)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    @classmethod
    def for_loading(cls, cfg: DecoderConfig) -> Decoder:
        """A decoder on the CPU whose weights are allocated but not initialised, for a state dict
        that holds all of them (the random initialisation of SmolLM2-135M's, thrown away by the
        load, took 1.9 s of a 2-core CPU)."""
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to_empty(device="cpu")
        if cfg.tie_embeddings:  # to_empty gives the head a tensor of its own
            model.head.weight = model.embed.weight
        return model

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(len(self.blocks), batch_size, self.embed.weight.device)

    def forward(self, tokens: Tensor, cache: KVCache | None = None,
                num_valid: Tensor | None = None, prefix: Tensor | None = None,
                tree: TokenTree | None = None) -> Tensor:
        """tokens (B, n) -> logits (B, n, V) (:meth:`features`, then the head).

        Without a cache: the whole sequence, causal (training, scoring). With one: the ``n`` new
        tokens of each row follow its cached ones; ``num_valid[b]`` of them are real (right
        padding after), and the cache advances by that many. ``prefix`` (B, P, D): embeddings
        (e.g. a video's tokens) that come before the tokens; only the tokens' logits are returned.
        ``tree`` (with a cache): the new tokens form a :class:`TokenTree`.
        """
        return self.head(self.features(tokens, cache, num_valid, prefix, tree))

    def features(self, tokens: Tensor, cache: KVCache | None = None, num_valid: Tensor | None = None,
                 prefix: Tensor | None = None, tree: TokenTree | None = None) -> Tensor:
        """tokens (B, n) -> final-normed hidden states (B, n, D), the input of the LM head.

        With ``prefix`` (B, P, D) the blocks run over the P embeddings then the n tokens (a
        cache, if given, takes all P + n; ``num_valid`` then counts the prefix too)."""
        x = self.embed(tokens)  # (B, n, D)
        B, n = tokens.shape
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        total = x.shape[1]
        if cache is None:
            positions = torch.arange(total, device=tokens.device).expand(B, total)
        elif tree is None:
            positions = cache.begin(total)
        else:
            if prefix is not None:
                raise ValueError("a token tree cannot follow a prefix of embeddings")
            positions = cache.lengths[:, None] + tree.depth
            cache.begin(total, tree.visible)
        rope = rotary_embedding(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope, cache, i)
        if cache is not None:
            cache.advance(num_valid)
        return self.norm(x[:, total - n:])

    # ---- checkpoints: a folder with config.json + model.safetensors ---------------------------
    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model": "decoder", **asdict(self.cfg)},
                                                       indent=2) + "\n")
        state = {k: v.contiguous() for k, v in self.state_dict().items()
                 if not (self.cfg.tie_embeddings and k == "head.weight")}
        save_file(state, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: str | Path) -> Decoder:
        from safetensors.torch import load_file
        folder = Path(folder)
        meta = json.loads((folder / "config.json").read_text())
        if meta.pop("model", None) != "decoder":
            raise ValueError(f"{folder}/config.json is not a tubelet decoder checkpoint")
        model = cls.for_loading(DecoderConfig(**meta))
        _load(model, load_file(str(folder / "model.safetensors")))
        return model


def llama_name_map(num_layers: int) -> dict[str, str | tuple[str, ...]]:
    """tubelet name -> Hugging Face Llama name(s); a tuple is concatenated along rows (q, k, v)."""
    names: dict[str, str | tuple[str, ...]] = {"embed.weight": "model.embed_tokens.weight",
                                               "norm.weight": "model.norm.weight"}
    for i in range(num_layers):
        t, h = f"blocks.{i}.", f"model.layers.{i}."
        names.update({
            t + "norm1.weight": h + "input_layernorm.weight",
            t + "attn.qkv.weight": (h + "self_attn.q_proj.weight", h + "self_attn.k_proj.weight",
                                    h + "self_attn.v_proj.weight"),
            t + "attn.proj.weight": h + "self_attn.o_proj.weight",
            t + "norm2.weight": h + "post_attention_layernorm.weight",
            t + "mlp.gate.weight": h + "mlp.gate_proj.weight",
            t + "mlp.up.weight": h + "mlp.up_proj.weight",
            t + "mlp.down.weight": h + "mlp.down_proj.weight",
        })
    return names


def config_from_llama(hf_config, num_layers: int | None = None) -> DecoderConfig:
    """A DecoderConfig from a transformers LlamaConfig, optionally with fewer layers."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return DecoderConfig(
        vocab_size=hf_config.vocab_size, dim=hf_config.hidden_size,
        num_layers=num_layers or hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads, num_kv_heads=hf_config.num_key_value_heads,
        mlp_dim=hf_config.intermediate_size, rope_theta=float(theta),
        norm_eps=float(hf_config.rms_norm_eps), tie_embeddings=bool(hf_config.tie_word_embeddings))


def from_llama_state_dict(state: dict[str, Tensor], cfg: DecoderConfig,
                          layers: list[int] | None = None) -> Decoder:
    """A Decoder holding ``cfg.num_layers`` layers of a Llama checkpoint: the first ones, or
    those listed in ``layers`` (e.g. the first two and the last two, skipping the middle).

    The final norm and the embedding (and head) are the Llama's own, so a copy with fewer layers
    is a working language model: a draft that starts close to its target without training.
    """
    layers = list(range(cfg.num_layers)) if layers is None else list(layers)
    if len(layers) != cfg.num_layers:
        raise ValueError(f"{len(layers)} layers listed for a decoder of {cfg.num_layers}")
    model = Decoder.for_loading(cfg)
    ours = {}
    for name, theirs in llama_name_map(cfg.num_layers).items():
        if name.startswith("blocks."):  # our block i is their layer layers[i]
            i = int(name.split(".")[1])
            rename = f"model.layers.{layers[i]}."
            theirs = tuple(n.replace(f"model.layers.{i}.", rename) for n in theirs) \
                if isinstance(theirs, tuple) else theirs.replace(f"model.layers.{i}.", rename)
        if isinstance(theirs, tuple):
            ours[name] = torch.cat([state[n] for n in theirs], dim=0)
        else:
            ours[name] = state[theirs]
    if not cfg.tie_embeddings:
        ours["head.weight"] = state["lm_head.weight"]
    _load(model, ours)
    return model


def to_llama_state_dict(model: Decoder) -> dict[str, Tensor]:
    """The inverse of :func:`from_llama_state_dict`: a Hugging Face LlamaForCausalLM state dict
    (e.g. to hand a tubelet draft to transformers' assisted generation)."""
    cfg, ours = model.cfg, model.state_dict()
    d = cfg.head_dim
    split = [cfg.num_heads * d, cfg.num_kv_heads * d, cfg.num_kv_heads * d]
    theirs = {}
    for name, their in llama_name_map(cfg.num_layers).items():
        if isinstance(their, tuple):
            for n, w in zip(their, ours[name].split(split, dim=0)):
                theirs[n] = w.clone()
        else:
            theirs[their] = ours[name].clone()
    theirs["lm_head.weight"] = ours["head.weight"].clone()
    return theirs


def _load(model: Decoder, state: dict[str, Tensor]) -> None:
    """load_state_dict that allows only the tied head to be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"head.weight"} if model.cfg.tie_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"decoder weights do not match: missing {sorted(set(missing) - allowed)}, "
                         f"unexpected {sorted(unexpected)}")


class FoldedInput(nn.Module):
    """A feature draft's input layer, [embedding of token j; feature] (2D) -> D, with the
    embedding half and the bias computed ahead for every token: ``table[t] = W_e e_t + b``
    (V, D), then ``table[token] + W_f feature``."""

    def __init__(self, embed: Tensor, fc: nn.Linear) -> None:
        super().__init__()
        D = fc.out_features
        with torch.no_grad():
            w = fc.weight.float()
            table = embed.float() @ w[:, :D].T + (0.0 if fc.bias is None else fc.bias.float())
        self.register_buffer("table", table.to(fc.weight.dtype))
        self.feature = nn.Linear(D, D, bias=False, device=fc.weight.device, dtype=fc.weight.dtype)
        with torch.no_grad():
            self.feature.weight.copy_(fc.weight[:, D:])

    def forward(self, tokens: Tensor, previous: Tensor) -> Tensor:
        return self.table[tokens] + self.feature(previous.to(self.table.dtype))


class FeatureDraftModel(nn.Module):
    """A draft that reads its target's features (EAGLE, Li et al. 2024): token j enters with the
    target's final hidden state at token j-1 (the input of the target's LM head), and the draft
    predicts the hidden state at token j, which the target's own head turns into the
    distribution of token j+1.

    ``fc`` maps [embedding of token j; feature of token j-1] (2D) to D, then ``blocks`` (Llama
    blocks, grouped-query attention) and ``norm``. The embedding and the head are the target's,
    frozen, and are not saved: a feature draft only works with its target, which supplies them
    on load. While drafting K tokens the draft feeds its own predicted features forward; tokens
    it read that way are read again with the target's features once the target has verified
    them (:class:`~tubelet.generate.models.FeatureLM`). The first token of a sequence has no
    feature before it: zeros, in training as in decoding.
    """

    # int8 weights (``,int8``) leave ``fc`` in bf16: each of its rows reads the embedding and the
    # target's features, whose weights differ in scale (one int8 scale per row cost 0.10 of greedy
    # agreement on the benchmark's continuations, 0.627 -> 0.519; the other layers 0.003 at most).
    # Folded (:meth:`fold_input`), its feature half alone is a Linear, which int8 takes.
    int8_keep = ("fc",)

    def __init__(self, cfg: DecoderConfig, embed: Tensor, head: Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding.from_pretrained(embed, freeze=True)
        self.fc = nn.Linear(2 * cfg.dim, cfg.dim)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, head.shape[0], bias=False)
        self.head.weight = nn.Parameter(head, requires_grad=False)

    @classmethod
    def from_target(cls, target: Decoder, layers: int) -> FeatureDraftModel:
        """A feature draft whose blocks and norm start as the target's last ``layers`` blocks and
        its final norm, and whose ``fc`` starts as the mean of the embedding and the feature."""
        cfg = replace(target.cfg, num_layers=layers)
        model = cls(cfg, target.embed.weight.detach().float(), target.head.weight.detach().float())
        first = target.cfg.num_layers - layers
        if first < 0:
            raise ValueError(f"a feature draft of {layers} layers: the target has {target.cfg.num_layers}")
        with torch.no_grad():
            for i, blk in enumerate(model.blocks):
                blk.load_state_dict({k: v.float() for k, v in target.blocks[first + i].state_dict().items()})
            model.norm.weight.copy_(target.norm.weight.float())
            eye = torch.eye(cfg.dim)
            model.fc.weight.copy_(torch.cat([eye, eye], dim=1) / 2)
            model.fc.bias.zero_()
        return model.to(target.embed.weight.device)  # its own layers too, not only the target's embedding and head

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(len(self.blocks), batch_size, self.embed.weight.device)

    def features(self, tokens: Tensor, previous: Tensor, cache: KVCache | None = None,
                 num_valid: Tensor | None = None) -> Tensor:
        """tokens (B, n), previous (B, n, D): the feature of the token before each one -> the
        predicted features (B, n, D) at the tokens (with a cache: after its rows, as
        :meth:`Decoder.features`)."""
        if isinstance(self.fc, FoldedInput):
            x = self.fc(tokens, previous)
        else:
            x = self.fc(torch.cat([self.embed(tokens), previous.to(self.fc.weight.dtype)], dim=-1))
        B, n = tokens.shape
        positions = torch.arange(n, device=tokens.device).expand(B, n) if cache is None else cache.begin(n)
        rope = rotary_embedding(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope, cache, i)
        if cache is not None:
            cache.advance(num_valid)
        return self.norm(x)

    def forward(self, tokens: Tensor, previous: Tensor, cache: KVCache | None = None,
                num_valid: Tensor | None = None) -> Tensor:
        return self.head(self.features(tokens, previous, cache, num_valid))

    def fold_input(self) -> FeatureDraftModel:
        """For decoding, in place: ``fc``'s embedding half and bias become a table of one row per
        token (:class:`FoldedInput`), so a call reads one row of it and multiplies the feature by
        a D x D matrix instead of the 2D-wide ``fc``: half its bytes per call, and the rest can be
        int8. Same function up to rounding (the table is computed in float32 and kept in ``fc``'s
        precision). A folded draft is for decoding: it is not saved or trained."""
        if not isinstance(self.fc, FoldedInput):
            self.fc = FoldedInput(self.embed.weight, self.fc)
        return self

    def trained_state(self) -> dict[str, Tensor]:
        """What is saved: everything but the target's embedding and head."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("embed.", "head."))}

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file
        if isinstance(self.fc, FoldedInput):
            raise ValueError("a feature draft folded for decoding (fold_input) is not saved: save the draft "
                             "as trained, before folding")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model": FEATURE_DRAFT, **asdict(self.cfg)},
                                                       indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.trained_state().items()}, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: str | Path, embed: Tensor, head: Tensor) -> FeatureDraftModel:
        """A saved feature draft, with its target's embedding (V, D) and head (V, D) weights."""
        from safetensors.torch import load_file
        folder = Path(folder)
        meta = json.loads((folder / "config.json").read_text())
        if meta.pop("model", None) != FEATURE_DRAFT:
            raise ValueError(f"{folder}/config.json is not a tubelet feature draft")
        cfg = DecoderConfig(**meta)
        if tuple(embed.shape) != (cfg.vocab_size, cfg.dim) or tuple(head.shape) != (cfg.vocab_size, cfg.dim):
            raise ValueError(f"{folder} is a feature draft for a target of {cfg.vocab_size} tokens x {cfg.dim} "
                             f"features; this target has {tuple(head.shape)}")
        model = cls(cfg, embed, head)
        state = load_file(str(folder / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("embed.", "head."))]
        if missing or unexpected:
            raise ValueError(f"{folder}: feature draft weights do not match: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        return model
