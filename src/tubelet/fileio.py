"""Files written whole or not at all, and JSON that is always JSON.

:func:`atomic_write` writes to a hidden temporary sibling, flushes it to disk and renames it
over the target, so a reader (or a process killed mid-write) never sees half a file: the
previous version stays until the new one is complete. Every writer of checkpoints, run
folders and logs goes through it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write_fn: Callable[[str], Any]) -> Path:
    """``write_fn(tmp_path)`` writes the file; it is synced and renamed over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / inf float replaced by ``None`` (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always gives valid JSON: non-finite floats become ``null``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


__all__ = ["atomic_write", "cache_root", "dumps_json", "json_safe", "write_text_atomic"]


def cache_root() -> Path:
    """Where tubelet keeps what it can make again (the built-in dataset, converted GGUF models):
    ``$TUBELET_CACHE``, else ``$XDG_CACHE_HOME/tubelet``, else ``~/.cache/tubelet``."""
    if os.environ.get("TUBELET_CACHE"):
        return Path(os.environ["TUBELET_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tubelet"
