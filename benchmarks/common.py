"""What every tubelet benchmark shares: the device and its software, timing with warm-up and
spread, peak memory, the measured matrix-multiply rate that MFU is a fraction of, and the
training step that is timed.

Numbers are only ever measured here: nothing is estimated, and nothing asserts a time.
On CUDA a repeat is timed with CUDA events around ``iters`` calls after a synchronisation;
on CPU with ``time.perf_counter``. Peak memory is the rise of ``torch.cuda.max_memory_allocated`` on CUDA
and, on CPU, the peak resident set size above the level before the call (after glibc's
``malloc_trim`` returns cached free pages), sampled every millisecond from a thread
(labelled ``rss_delta`` so it is never mistaken for the CUDA figure).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
from tubelet.devices import resolve_device  # noqa: E402  (after the path)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_list(text: str, kind: type = str) -> list:
    return [kind(t) for t in text.split(",") if t.strip()]


# --------------------------------------------------------------------------- environment
def environment(device: torch.device) -> dict:
    """The device, the software and the exact command, for every number written."""
    env = {
        "command": "python " + " ".join(sys.argv),
        "device_type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        # Other processes on the machine share its cores: CPU numbers under load are noisy.
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                           capture_output=True, text=True).stdout.strip()
    except OSError:
        env["git_commit"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        name = platform.processor() or "cpu"
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        env.update(device=f"CPU: {name}, {os.cpu_count()} cores visible, {torch.get_num_threads()} threads")
    return env


def add_run_args(p, warmup: int, repeats: int) -> None:
    """The flags every timing benchmark shares: device, warm-up, repeats, CPU threads, JSON output."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", help="write every row and the environment as JSON here")


def start(args) -> tuple[torch.device, dict]:
    """Apply --threads, then describe the device and the exact command before any number."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    env = environment(device)
    print(describe(env))
    print(f"command: {env['command']}")
    return device, env


def device_of(spec: str) -> torch.device:
    """--device as a device this machine has, or the reason it is not (one line, no traceback)."""
    try:
        return resolve_device(spec)
    except ValueError as e:  # tubelet's ConfigError
        raise SystemExit(str(e)) from None


def describe(env: dict) -> str:
    return (f"device: {env['device']} | torch {env['torch']} | transformers {env['transformers']} | "
            f"python {env['python']} | commit {env['git_commit']} | {env['date']} | "
            f"load average {env['load_average_1_5_15min']}")


# --------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Milliseconds per call over repeats: median with the interquartile range and extremes."""

    ms: list[float] = field(default_factory=list)
    iters: int = 1  # calls per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    def quantile(self, q: float) -> float:
        s = sorted(self.ms)
        pos = q * (len(s) - 1)
        lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def summary(self) -> dict:
        return {"median_ms": self.median, "q1_ms": self.quantile(0.25), "q3_ms": self.quantile(0.75),
                "min_ms": min(self.ms), "max_ms": max(self.ms), "repeats": len(self.ms), "iters": self.iters,
                "all_ms": self.ms}


def time_once(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Milliseconds per call of ``iters`` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def calibrate(fn: Callable[[], object], device: torch.device, warmup: int, min_repeat_ms: float) -> int:
    """Run the warm-up calls (compilation, autotuning, allocator) and pick calls per repeat so
    that one repeat lasts at least ``min_repeat_ms`` (short GPU calls need several)."""
    for _ in range(max(warmup - 1, 0)):
        fn()
    synchronize(device)
    one = time_once(fn, device, 1)
    return max(1, int(min_repeat_ms / max(one, 1e-3) + 0.999))


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, *, warmup: int,
                     repeats: int, min_repeat_ms: float) -> dict[str, Timing | str]:
    """Time several functions round-robin: repeat r of every function runs back to back, so a
    slow drift of the machine (clocks, other processes) touches them all alike, and the ratio
    of two functions in the same round is a fair paired sample. A function that fails (out of
    memory, an unsupported kernel) gets the error text instead of a timing."""
    out: dict[str, Timing | str] = {}
    for name, fn in fns.items():
        try:
            out[name] = Timing(iters=calibrate(fn, device, warmup, min_repeat_ms))
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            out[name] = failure(e)
            free(device)
    for _ in range(repeats):
        for name, fn in fns.items():
            t = out[name]
            if isinstance(t, Timing):
                try:
                    t.ms.append(time_once(fn, device, t.iters))
                except Exception as e:  # noqa: BLE001
                    out[name] = failure(e)
                    free(device)
    return out


def failure(e: BaseException) -> str:
    text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return "OOM" if is_oom(e) else text[:200]


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- memory
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[float, str]:
    """Peak memory that one call adds to what was allocated before it, in MiB, and what it
    measures. (The caller adds the model's own weights and optimiser state, so that models
    held side by side in one cell do not count against each other.)"""
    free(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda_max_allocated_delta"
    _malloc_trim()  # give the allocator's cached free pages back, so the RSS rise is the call's own
    base = _rss()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak = max(peak, _rss())
    return (peak - base) / 2**20, "rss_delta"


# --------------------------------------------------------------------------- hardware rate
def matmul_rate(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> dict:
    """Measured dense matrix-multiply rate (FLOP/s, 2 per multiply-accumulate): the best of
    ``repeats`` timings of an n x n x n product, the denominator of MFU."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    iters = 20 if device.type == "cuda" else 2
    for _ in range(2):
        a @ b
    synchronize(device)
    best = min(time_once(lambda: a @ b, device, iters) for _ in range(repeats))
    del a, b
    free(device)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "ms": best, "tflops": 2 * n**3 / (best * 1e-3) / 1e12}


# --------------------------------------------------------------------------- what is timed
def autocast(device: torch.device, dtype: str):
    """fp32: nothing; bf16: autocast (weights stay fp32, matrix products and attention in bf16)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def inference_fn(model: torch.nn.Module, x: torch.Tensor, device: torch.device, dtype: str,
                 call: Callable | None = None) -> Callable[[], object]:
    call = model if call is None else call  # (a compiled module has no truth value)

    def step() -> object:
        with torch.inference_mode(), autocast(device, dtype):
            return call(x)
    return step


def training_fn(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, device: torch.device,
                dtype: str, call: Callable | None = None) -> Callable[[], object]:
    """One synchronous SGD step as the paper trains (momentum 0.9): forward, cross-entropy,
    backward, update, gradients cleared."""
    call = model if call is None else call  # (a compiled module has no truth value)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def step() -> object:
        with autocast(device, dtype):
            loss = F.cross_entropy(call(x).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1, default=lambda o: asdict(o)))
        print(f"wrote {path}")
