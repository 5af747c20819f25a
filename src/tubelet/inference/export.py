"""Export a model for runtimes without tubelet: ONNX (onnxruntime) or a torch.export program.

The exported graph takes the model's input, ``video``: (batch, 3, frames, height, width) float32
pixels already normalised as the checkpoint says (``(x / 255 - pixel_mean) / pixel_std``), and
returns ``logits``: (batch, classes), the heads concatenated. What a runtime needs to feed it
and read it travels with it, so it classifies as tubelet does:

- ``tubelet.json`` beside the file: the checkpoint's ``config.json`` (model config, class names
  per head, head names, preprocessing, provenance) plus an ``export`` section (format, file,
  input and output names and shapes, opset);
- for ONNX, the same classes and preprocessing as JSON strings in the model's metadata
  (``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map``).

``torch.jit.trace`` also traces the model (:func:`trace`), but TorchScript is deprecated in
PyTorch: prefer ``exported-program``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import FORMAT, VERSION
from ..errors import ConfigError, TubeletError
from ..fileio import dumps_json
from ..models.info import ModelInfo

FORMATS = {"onnx": "model.onnx", "exported-program": "model.pt2"}
INPUT, OUTPUT = "video", "logits"
DEFAULT_OPSET = 18


class ExportError(TubeletError):
    """The model could not be exported (a missing optional package, an unsupported operator)."""


def example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A (batch, 3, T, H, W) input of the model's clip size, in the reference's pixel range."""
    cfg = model.config
    h, w = cfg.image_size
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, cfg.in_channels, cfg.num_frames, h, w, generator=generator) * 2 - 1


def _dynamic_shapes(dynamic_batch: bool) -> dict[str, Any] | None:
    return {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None


def description(model: nn.Module, fmt: str, batch: int | None, opset: int | None = None) -> dict[str, Any]:
    """The ``tubelet.json`` written beside an export: the model's config.json and how to call it."""
    info = model.info if isinstance(getattr(model, "info", None), ModelInfo) else ModelInfo()
    cfg = model.config
    h, w = cfg.image_size
    export = {"format": fmt, "file": FORMATS[fmt], "opset": opset,
              "input": {"name": INPUT, "shape": [batch if batch else "batch", cfg.in_channels, cfg.num_frames, h, w],
                        "layout": "(batch, channels, frames, height, width), float32, pixels normalised as "
                                  "'preprocessing' says: (x / 255 - pixel_mean) / pixel_std"},
              "output": {"name": OUTPUT, "shape": [batch if batch else "batch", cfg.total_classes],
                         "heads": list(cfg.class_splits)}}
    pre = info.preprocessing_for(cfg)
    sections = ModelInfo(class_names=info.class_names, head_names=info.head_names, preprocessing=pre,
                         provenance=info.provenance).to_dict()
    return {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), **sections, "export": export}


def export_model(model: nn.Module, out: str | Path, fmt: str = "onnx", *, dynamic_batch: bool = False,
                 opset: int | None = None) -> Path:
    """Write ``model`` to the folder ``out`` as ``fmt`` (``onnx`` or ``exported-program``) with
    its ``tubelet.json``; returns the model file's path."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise ConfigError("--opset applies to --format onnx only")
    model = model.float().eval().cpu()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = example_input(model, batch=2 if dynamic_batch else 1)  # a batch of 1 would specialise
    path = out / FORMATS[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            _export_onnx(model, x, path, dynamic_batch, opset or DEFAULT_OPSET)
        else:
            program = torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes(dynamic_batch))
            torch.export.save(program, str(path))
    info = description(model, fmt, None if dynamic_batch else x.shape[0], opset or DEFAULT_OPSET if fmt == "onnx" else None)
    (out / "tubelet.json").write_text(dumps_json(info, indent=2) + "\n")
    if fmt == "onnx":
        _add_onnx_metadata(path, info)
    return path


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool, opset: int) -> None:
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
        import onnx  # noqa: F401
    except ImportError as e:
        raise ExportError(f"--format onnx needs the onnx extra ({e.name} is not installed): "
                          "pip install 'tubelet[onnx]'") from None
    try:
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=_dynamic_shapes(dynamic_batch), opset_version=opset,
                                    verbose=False)
        program.save(str(path))
    except Exception as e:  # torch.onnx raises its own error types for an unsupported operator
        raise ExportError(f"ONNX export of {model.config.name or model.config.kind} failed "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); try "
                          "--format exported-program or another --opset") from None


def _add_onnx_metadata(path: Path, info: dict[str, Any]) -> None:
    """Class names, head names and preprocessing as JSON strings in the ONNX file's metadata."""
    import onnx

    proto = onnx.load(str(path), load_external_data=True)
    for key in ("classes", "preprocessing", "config"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"tubelet.{key}", json.dumps(info[key])
    onnx.save(proto, str(path))


def trace(model: nn.Module, example: torch.Tensor | None = None) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model`` (TorchScript is deprecated in PyTorch; prefer
    :func:`export_model` with ``exported-program`` or ``onnx``)."""
    example = example if example is not None else example_input(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model.eval(), example)


__all__ = ["ExportError", "FORMATS", "description", "example_input", "export_model", "trace"]
