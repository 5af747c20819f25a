"""Read Flax checkpoints (``flax.serialization.msgpack_serialize``) with the ``msgpack`` package.

Flax writes a nested dict of arrays; each array is msgpack extension type 1 whose payload is
itself msgpack: ``(shape, dtype name, raw little-endian bytes)``. Released ViViT checkpoints
keep the model parameters under ``['optimizer']['target']`` (a plain parameters file has them
at the top, or under ``['params']``). JAX and Flax are not needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import msgpack
import numpy as np

from ..errors import CheckpointError

_EXT_NDARRAY = 1  # flax.serialization._MsgpackExtType.ndarray
_EXT_NATIVE_COMPLEX = 2
_EXT_NPSCALAR = 3


def _decode_ext(code: int, data: bytes) -> Any:
    if code == _EXT_NDARRAY:
        shape, dtype, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()  # writable
    if code == _EXT_NPSCALAR:
        shape, dtype, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)[()]
    if code == _EXT_NATIVE_COMPLEX:
        real, imag = msgpack.unpackb(data, raw=False)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _restore_lists(tree: Any) -> Any:
    """Flax stores lists and tuples as dicts keyed '0', '1', ...; we keep them as dicts of
    strings, which is how parameter paths name them, so only nested values are visited."""
    if isinstance(tree, dict):
        return {str(k): _restore_lists(v) for k, v in tree.items()}
    return tree


def read_msgpack(path: str | Path) -> dict[str, Any]:
    """The whole tree of a Flax msgpack file, arrays as numpy arrays."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        tree = msgpack.unpackb(raw, ext_hook=_decode_ext, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for a file that is not msgpack
        raise CheckpointError(f"cannot read {path} as a Flax msgpack checkpoint ({e}); the file is damaged "
                              "or not a Flax checkpoint: download or copy it again") from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} holds a msgpack {type(tree).__name__}, not a Flax state dict")
    return _restore_lists(tree)


def params_of(tree: Mapping[str, Any], source: str = "checkpoint") -> Mapping[str, Any]:
    """The model parameters inside a Flax state: ``['optimizer']['target']`` (released
    checkpoints, Flax's optimizer API), ``['params']`` (train states, variable dicts), or the
    tree itself when it already is a parameter tree."""
    if isinstance(tree.get("optimizer"), Mapping) and "target" in tree["optimizer"]:
        tree = tree["optimizer"]["target"]
    elif isinstance(tree.get("params"), Mapping):
        tree = tree["params"]
    if isinstance(tree.get("params"), Mapping) and len(tree) == 1:  # target = {'params': ...}
        tree = tree["params"]
    if not tree:
        raise CheckpointError(f"{source} has no parameters (looked under ['optimizer']['target'], "
                         "['params'] and the top level)")
    return tree


def read_flax_params(path: str | Path) -> Mapping[str, Any]:
    """The parameter tree of a Flax msgpack checkpoint file."""
    return params_of(read_msgpack(path), str(path))


__all__ = ["params_of", "read_flax_params", "read_msgpack"]
