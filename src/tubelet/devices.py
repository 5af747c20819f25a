"""Which device a command runs on: one reading of ``--device`` for every command and pipeline.

:func:`resolve_device` turns ``cpu``, ``cuda``, ``cuda:1`` (or any accelerator torch knows, such
as ``mps``) into a :class:`torch.device` after checking that this machine has it, so a wrong value
fails at once with what to use instead, not later as a damaged-file or kernel error. ``None`` or
``auto`` is the GPU when there is one, else the CPU.
"""

from __future__ import annotations

import argparse

import torch

from .errors import ConfigError

DEVICES = "cpu, cuda or cuda:N"
DEVICE_HELP = f"{DEVICES} (default: cuda when available, else cpu)"


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ``--device`` flag, with the same help everywhere."""
    parser.add_argument("--device", help=DEVICE_HELP)


def resolve_device(spec: str | torch.device | None = None, default: str = "cuda") -> torch.device:
    """``spec`` as a device this machine has; ``None`` / ``"auto"``: ``default`` (e.g. ``cuda:1``
    for a second torchrun process) when CUDA is available, else the CPU. Raises
    :class:`~tubelet.errors.ConfigError` for a name torch does not know, an accelerator this
    machine (or this build of torch) lacks, or a GPU index past the last."""
    if spec is None or spec == "auto":
        return torch.device(default if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{spec}': not a device; use {DEVICES}") from None
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None) if device.type != "meta" else None
    if backend is None or not hasattr(backend, "is_available"):
        raise ConfigError(f"device '{spec}': tubelet does not run on '{device.type}' devices; "
                          f"use {DEVICES}")
    if not backend.is_available():
        raise ConfigError(f"device '{spec}': this machine has no {device.type} device (or this torch "
                          f"{torch.__version__} is built without it); use --device cpu")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device '{spec}': this machine has {count} {device.type} device"
                          f"{'s' if count != 1 else ''} (indices 0 to {count - 1})")
    return device
