"""Decoding calls compiled ahead of time for a CPU: a tubelet :class:`~tubelet.models.decoder.Decoder`
(a target or a model draft, ``,compile`` in its spec) exported whole with ``torch.export`` and compiled
by AOTInductor, with frozen weights and inductor's C++ GEMM kernels where they time faster.

Why: a decoding call multiplies a few rows (one token, or the K + 1 that speculative sampling
verifies) by every weight matrix. ``F.linear``'s few-row float32 kernel (MKL) is slow there on an
AVX2 CPU: a call on 2 to 5 tokens cost 1.6 to 2 one-token calls (``benchmarks/row_products.py``).
Compiled, SmolLM2-135M's one-token call took 31.6 ms instead of 62.9 on a 2-core AMD EPYC (Zen 3,
AVX2 only, one thread) and a call on 2 tokens 1.17 one-token calls (docs/generate.md).

The compile takes minutes (2.3-3 for SmolLM2-135M on 2 cores), so its result, a package with the
weights inside (625 MiB for SmolLM2-135M in float32), is kept under ``cache_root()/compiled`` and
loaded in seconds afterwards; the :data:`KEEP_PACKAGES` most recently used are kept. It is
keyed by the weights, the model's kind, shape and precision, the code that runs in the call, the
torch version, the CPU's instruction sets and torch's thread count (inductor writes it into the
kernels): a changed model, tubelet, torch, CPU or ``--threads`` compiles again.
One package serves every batch size, call length and cache capacity.

What runs compiled is :class:`DecodingStep`: a whole :meth:`Decoder.features` call over a
:class:`~tubelet.models.attention.FixedKVCache` (a cache whose buffers are made before each call),
as a tree call (a causal call is the tree of one branch, so one graph serves both), then the head
on the positions asked for. :class:`CompiledLM` holds the cache and calls the package. A feature
draft's calls (:class:`FeatureStep`, :class:`CompiledFeatureLM`) compile the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import GenerateError
from ..fileio import cache_root
from ..models import attention, decoder
from ..models.attention import FixedKVCache, cache_dtype
from ..models.decoder import Decoder, FeatureDraftModel, TokenTree
from .models import CausalLM, FeatureLM, Features, TubeletLM

COMPILED_CACHE = "compiled"  # under cache_root(): one package per model, code, torch and CPU
KEEP_PACKAGES = 4  # the packages kept there, the most recently used (each about twice its weights)
_ISA_FLAGS = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
# the largest sizes a package takes (torch.export needs bounds); beyond them a call is refused
MAX_ROWS, MAX_TOKENS, MAX_CAPACITY = 256, 8192, 1 << 22  # a context of up to half the capacity


class DecodingStep(nn.Module):
    """One decoding call of ``model`` as a function of tensors (what is exported and compiled).

    tokens (B, n) long; num_valid (B,) long; lengths (B,) long, the tokens each row holds; depth
    (B, n) long and visible (B, n, n) bool, the new tokens' tree (``arange(n)`` and the lower
    triangle for a causal call); pick (B, m) long, the positions to run the head on; keys and
    values, each layer's (B, G, capacity, d) buffers, written in place at slots ``lengths[b] + i``.
    Returns the final hidden states (B, n, D) and the logits (B, m, V) at ``pick``."""

    def __init__(self, model: Decoder | FeatureDraftModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, num_valid: Tensor, lengths: Tensor, depth: Tensor, visible: Tensor,
                pick: Tensor, keys: list[Tensor], values: list[Tensor]) -> tuple[Tensor, Tensor]:
        cache = _on(keys, values, lengths)
        return self._with_head(self.model.features(tokens, cache, num_valid, tree=TokenTree(depth, visible)), pick)

    def _with_head(self, hidden: Tensor, pick: Tensor) -> tuple[Tensor, Tensor]:
        """The hidden states and the head's logits at ``pick`` (B, m)."""
        return hidden, self.model.head(hidden.gather(1, pick[:, :, None].expand(-1, -1, hidden.shape[-1])))


def _on(keys: list[Tensor], values: list[Tensor], lengths: Tensor) -> FixedKVCache:
    """A FixedKVCache over a call's buffers (inside the graph: no allocation, no read)."""
    cache = FixedKVCache(len(keys), lengths.shape[0], lengths.device)
    cache.keys, cache.values, cache.lengths = list(keys), list(values), lengths
    return cache


class FeatureStep(DecodingStep):
    """One call of a feature draft (:class:`~tubelet.models.decoder.FeatureDraftModel`) as a function
    of tensors: as :class:`DecodingStep`, causal, with ``previous`` (B, n, D) float32, the feature
    each new token enters with, instead of a tree."""

    def forward(self, tokens: Tensor, num_valid: Tensor, lengths: Tensor, previous: Tensor, pick: Tensor,
                keys: list[Tensor], values: list[Tensor]) -> tuple[Tensor, Tensor]:
        return self._with_head(self.model.features(tokens, previous, _on(keys, values, lengths), num_valid), pick)


def step_of(model: Decoder | FeatureDraftModel) -> nn.Module:
    """The module that is compiled for ``model``: :class:`DecodingStep` or :class:`FeatureStep`."""
    return (FeatureStep if isinstance(model, FeatureDraftModel) else DecodingStep)(model).eval()


def causal_tree(batch_size: int, n: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """depth (B, n) and visible (B, n, n) of a causal call: a tree of one branch."""
    depth = torch.arange(n, device=device).expand(batch_size, n).contiguous()
    visible = torch.ones(n, n, dtype=torch.bool, device=device).tril().expand(batch_size, n, n).contiguous()
    return depth, visible


def _kv(model: Decoder | FeatureDraftModel) -> tuple[int, int, torch.dtype]:
    """(key/value heads, head size, the cache's dtype) of ``model``."""
    c = model.cfg
    return c.num_kv_heads, c.head_dim, cache_dtype(model.embed.weight[:0])


def example_inputs(model: Decoder | FeatureDraftModel, batch_size: int = 2, n: int = 5, capacity: int = 64) -> tuple:
    """Inputs of :func:`step_of` ``model`` for tracing: the sizes are hints (any size runs)."""
    G, d, dtype = _kv(model)
    device = model.embed.weight.device
    layers = len(model.blocks)
    depth, visible = causal_tree(batch_size, n, device)
    tokens = torch.randint(0, model.cfg.vocab_size, (batch_size, n), device=device)
    lengths = torch.arange(batch_size, device=device) + 3
    keys = [torch.zeros(batch_size, G, capacity, d, dtype=dtype, device=device) for _ in range(layers)]
    values = [torch.zeros(batch_size, G, capacity, d, dtype=dtype, device=device) for _ in range(layers)]
    pick = torch.arange(n, device=device).expand(batch_size, n).contiguous()
    num_valid = torch.full((batch_size,), n, device=device)
    if isinstance(model, FeatureDraftModel):
        previous = torch.zeros(batch_size, n, model.cfg.dim, device=device)
        return tokens, num_valid, lengths, previous, pick, keys, values
    return tokens, num_valid, lengths, depth, visible, pick, keys, values


def _dynamic_shapes(model: Decoder | FeatureDraftModel) -> tuple:
    from torch.export import Dim
    B, n = Dim("rows", min=1, max=MAX_ROWS), Dim("tokens", min=1, max=MAX_TOKENS)
    m, capacity = Dim("picked", min=1, max=MAX_TOKENS), Dim("capacity", min=2, max=MAX_CAPACITY)
    kv = [{0: B, 2: capacity}] * len(model.blocks)
    if isinstance(model, FeatureDraftModel):
        return ({0: B, 1: n}, {0: B}, {0: B}, {0: B, 1: n}, {0: B, 1: m}, kv, list(kv))
    return ({0: B, 1: n}, {0: B}, {0: B}, {0: B, 1: n}, {0: B, 1: n, 2: n}, {0: B, 1: m}, kv, list(kv))


def check_compilable(model: nn.Module, what: str = "model") -> Decoder | FeatureDraftModel:
    """``model`` if its step (:func:`step_of`) can be compiled, else a GenerateError saying why."""
    if type(model) not in (Decoder, FeatureDraftModel):
        raise GenerateError(f"{what}: compile takes a tubelet decoder (a target with fp32 or bf16, "
                            f"truncated:N, a distilled draft folder), not {type(model).__name__}")
    device = model.embed.weight.device
    if device.type != "cpu":
        raise GenerateError(f"{what}: compile is for decoding on a CPU (it is measured there); on {device.type} "
                            "leave it out")
    odd = {type(m).__name__ for m in model.modules()
           if type(m).__module__.startswith("tubelet.generate") and not isinstance(m, nn.Linear)}
    if odd:
        raise GenerateError(f"{what}: compile takes plain float32 or bf16 weights, not {', '.join(sorted(odd))} "
                            "(leave out int8)")
    return model


def package_key(model: Decoder | FeatureDraftModel, quick: bool = False) -> str:
    """What a compiled package depends on, hashed: the weights, the config and precision, the code
    that runs in the call, torch, the machine and its instruction sets, torch's thread count and
    ``quick``. Inductor writes the thread count into the kernels it generates (its GEMMs in a
    package compiled for one thread run on one whatever ``torch.set_num_threads`` says later; for
    fewer threads than the CPU has, on exactly that many), so each count has its own package."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    for module in (attention, decoder, sys.modules[__name__]):
        h.update(Path(module.__file__).read_bytes())
    from .loading import cpu_flags
    h.update(json.dumps([type(model).__name__, str(model.cfg), str(model.embed.weight.dtype), torch.__version__,
                         platform.machine(), sorted(cpu_flags() & _ISA_FLAGS), torch.get_num_threads(),
                         quick]).encode())
    return h.hexdigest()[:20]


def package_path(model: Decoder | FeatureDraftModel, quick: bool = False) -> Path:
    """Where the compiled package of ``model`` is kept (:func:`package_key`)."""
    c = model.cfg
    kind = "feature-draft" if isinstance(model, FeatureDraftModel) else "decoder"
    dtype = str(model.embed.weight.dtype).removeprefix("torch.")
    name = f"{kind}-{c.num_layers}x{c.dim}-{dtype}-t{torch.get_num_threads()}-{package_key(model, quick)}.pt2"
    return cache_root() / COMPILED_CACHE / name


def _inductor_settings(quick: bool) -> dict:
    """Frozen weights (constants, packed once), each product's kernel chosen by timing between
    ATen's and inductor's C++ GEMM (``benchmarks/row_products.py``: 0.70-0.84 of ATen's few-row
    time on an AVX2 CPU); ``quick`` (tests) skips the timing and builds the wrapper unoptimised."""
    settings = {"freezing": True, "max_autotune": not quick, "max_autotune_gemm_backends": "CPP,ATEN",
                "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}
    if quick:
        settings["aot_inductor.compile_wrapper_opt_level"] = "O0"
    return settings


def export_step(model: Decoder | FeatureDraftModel) -> torch.export.ExportedProgram:
    """:func:`step_of` ``model`` as one graph for any batch, call length and capacity."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices, not the user's to act on
        return torch.export.export(step_of(model), example_inputs(model), dynamic_shapes=_dynamic_shapes(model),
                                   strict=False)


def compile_package(model: Decoder | FeatureDraftModel, path: Path, quick: bool = False) -> Path:
    """Export and compile :func:`step_of` ``model`` into ``path`` (written whole or not at
    all: a Ctrl-C or a failure leaves no package behind)."""
    import torch._inductor
    import torch._inductor.config as inductor_config

    program = export_step(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
    try:
        with torch.no_grad(), warnings.catch_warnings(), inductor_config.patch(_inductor_settings(quick)):
            warnings.simplefilter("ignore")  # inductor's deprecation notices, not the user's to act on
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_step(model: Decoder | FeatureDraftModel, *, quick: bool = False, quiet: bool = False):
    """The compiled :func:`step_of` ``model``: loaded from its package, compiled first if
    there is none (a message on stderr says so and how long it took). A package that does not load
    (damaged, truncated) is compiled again."""
    import torch._inductor

    check_compilable(model)
    path = package_path(model, quick)
    if path.is_file():
        try:
            runner = torch._inductor.aoti_load_package(str(path))
            _used(path)
            return runner
        except Exception as e:  # noqa: BLE001 (any failure to load a cached file: make it again)
            print(f"tubelet: the compiled package {path} does not load ({type(e).__name__}: {e}); compiling "
                  "it again", file=sys.stderr)
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    if not quiet:
        c = model.cfg
        kind = "feature draft" if isinstance(model, FeatureDraftModel) else "decoder"
        print(f"tubelet: compiling the decoding calls of a {c.num_layers}-layer {kind} for this CPU and "
              f"{torch.get_num_threads()} thread(s), once "
              f"(minutes: 2.5-3 for SmolLM2-135M on 2 cores); kept in {path.parent}", file=sys.stderr, flush=True)
    try:
        compile_package(model, path, quick)
    except (OSError, RuntimeError) as e:  # a full disk, no C++ compiler, an operation export cannot trace
        raise GenerateError(f"compiling the decoding calls failed ({type(e).__name__}: {str(e)[:500]}); "
                            "leave out compile to decode without it") from e
    _used(path)
    if not quiet:
        print(f"tubelet: compiled in {time.perf_counter() - start:.0f} s ({path.stat().st_size / 2**20:.0f} MiB)",
              file=sys.stderr, flush=True)
    return torch._inductor.aoti_load_package(str(path))


def _used(path: Path) -> None:
    """Mark ``path`` as just used, and remove all but the :data:`KEEP_PACKAGES` packages used last
    (and what a killed compile left behind a day ago or more)."""
    os.utime(path)
    used = {}
    for p in path.parent.glob("*.pt2"):
        try:
            used[p] = p.stat().st_mtime
        except OSError:  # removed meanwhile by another process
            pass
    packages = sorted(used, key=used.get, reverse=True)
    stale = [p for p in packages if not p.name.startswith(".")][KEEP_PACKAGES:]
    stale += [p for p in packages if p.name.startswith(".") and time.time() - used[p] > 86400]
    for p in stale:
        p.unlink(missing_ok=True)


def _run(lm, tokens: Tensor, num_valid: Tensor, middle: tuple[Tensor, ...], last_only: bool
         ) -> tuple[Tensor, Tensor]:
    """One call of ``lm.runner`` on ``lm.cache`` (a CompiledLM's or a CompiledFeatureLM's): the sizes
    checked against what a package takes, room made, the head run on every new token or on each
    row's last (``last_only``: logits (B, V)), the rows' lengths advanced. ``middle``: the step's
    inputs between the lengths and the head positions (the tree, or the previous features)."""
    cache = lm.cache
    B, n = tokens.shape
    held = int(cache.lengths.max())
    if B > MAX_ROWS or n > MAX_TOKENS or held + n > MAX_CAPACITY // 2:
        raise GenerateError(f"a compiled decoder takes at most {MAX_ROWS} rows of {MAX_TOKENS} new tokens and "
                            f"{MAX_CAPACITY // 2} in all, got {B} rows of {n} after {held}: leave out compile")
    cache.reserve(n, *lm.kv)
    num_valid = num_valid.to(cache.lengths.device, torch.long).contiguous()
    pick = ((num_valid - 1).clamp(min=0)[:, None] if last_only
            else torch.arange(n, device=tokens.device).expand(B, n)).contiguous()
    hidden, logits = lm.runner(tokens.long().contiguous(), num_valid, cache.lengths,
                               *(x.contiguous() for x in middle), pick, cache.keys, cache.values)
    cache.lengths = cache.lengths + num_valid
    return hidden, logits[:, 0] if last_only else logits


class CompiledLM(TubeletLM):
    """A :class:`TubeletLM` whose calls run the compiled :class:`DecodingStep` over a
    :class:`~tubelet.models.attention.FixedKVCache` (``runner``: a loaded package, by default
    :func:`load_step`'s). Crops, moves and row selection are the cache's, as for TubeletLM."""

    def __init__(self, model: Decoder, runner=None, *, quick: bool = False) -> None:
        if isinstance(check_compilable(model), FeatureDraftModel):
            raise GenerateError("a feature draft's compiled calls are CompiledFeatureLM's")
        super().__init__(model)
        self.runner = runner if runner is not None else load_step(model, quick=quick)
        self.kv = _kv(model)
        self.reset(1)

    def reset(self, batch_size: int) -> None:
        self.cache = FixedKVCache(len(self.model.blocks), batch_size, self.device)

    def extend(self, tokens: Tensor, num_valid: Tensor, tree: TokenTree | None = None) -> Tensor:
        return self._call(tokens, num_valid, tree, last_only=False)

    def extend_last(self, tokens: Tensor, num_valid: Tensor) -> Tensor:
        return self._call(tokens, num_valid, None, last_only=True)

    @torch.no_grad()
    def _call(self, tokens: Tensor, num_valid: Tensor, tree: TokenTree | None, last_only: bool) -> Tensor:
        self.calls += 1
        depth, visible = causal_tree(*tokens.shape, self.device) if tree is None else (tree.depth, tree.visible)
        start = self.lengths
        hidden, logits = _run(self, tokens, num_valid, (depth.long(), visible), last_only)
        if self.keep_features:
            self.last_features = Features(start, hidden, num_valid)
        return logits


class CompiledFeatureLM(FeatureLM):
    """A :class:`~tubelet.generate.models.FeatureLM` whose calls run the compiled :class:`FeatureStep`
    over a :class:`~tubelet.models.attention.FixedKVCache` (``runner``: by default :func:`load_step`'s)."""

    def __init__(self, model: FeatureDraftModel, target: CausalLM, runner=None, *, quick: bool = False) -> None:
        super().__init__(check_compilable(model), target)
        self.runner = runner if runner is not None else load_step(model, quick=quick)
        self.kv = _kv(model)

    def reset(self, batch_size: int) -> None:
        super().reset(batch_size)
        self.cache = FixedKVCache(len(self.model.blocks), batch_size, self.device)

    @torch.no_grad()
    def _step(self, tokens: Tensor, previous: Tensor, num_valid: Tensor, last_only: bool) -> tuple[Tensor, Tensor]:
        return _run(self, tokens, num_valid, (previous.float(),), last_only)
