"""Compute of one forward pass, counted from a real forward, in multiply-accumulates.

The paper's "FLOPs" are multiply-accumulates, and the reference code counts them with XLA's
cost analysis halved: every matrix product counts M*N*K, and every other arithmetic op one
flop per element (a bias add, a residual add, LayerNorm, softmax, GELU), halved like the rest;
transcendental functions (exp, tanh, erf) count nothing. :func:`count_macs` runs the model on
the ``meta`` device (shapes only, no arithmetic, so ViViT-H at 128 frames costs milliseconds)
and counts the ATen ops it dispatches with the same rules: matrix products through
``torch.utils.flop_counter``'s formulas, elementwise ops through the table below.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten

# Flops per output element of the elementwise ops a ViViT forward dispatches, counted as
# XLA counts the reference's Flax ops (transcendentals excluded).
ELEMENTWISE_FLOPS = {
    aten.add.Tensor: 1, aten.sub.Tensor: 1, aten.mul.Tensor: 1, aten.mul.Scalar: 1,
    aten.div.Tensor: 1, aten.div.Scalar: 1,
    # mean and mean of squares (3), x - mean, * rsqrt(var+eps)*scale (2), + bias
    aten.native_layer_norm.default: 7,
    # max, x - max, sum, divide (exp is transcendental)
    aten._softmax.default: 4, aten._safe_softmax.default: 4,
}
# Ops that reduce their input: one flop per input element.
REDUCTIONS = {aten.mean.dim, aten.sum.dim_IntList, aten.mean.default, aten.sum.default}


@dataclass
class MacCount:
    """Multiply-accumulates of one forward pass (the batch given to :func:`count_macs`)."""

    matmul: int = 0  # matrix products and convolutions: M*N*K
    elementwise_flops: int = 0  # everything else, in flops
    by_op: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def total(self) -> float:
        """MACs in the reference's (and the paper's) convention."""
        return self.matmul + self.elementwise_flops / 2


def _gelu_flops(kwargs: dict) -> int:
    # tanh form: x^3 (2), *c, +x, *sqrt(2/pi), +1, *x, *0.5; exact form: *1/sqrt2, +1, *x, *0.5
    return 8 if kwargs.get("approximate", "none") == "tanh" else 4


class _Counter(TorchDispatchMode):
    def __init__(self, count: MacCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            macs = flop_registry[packet](*args, **kwargs, out_val=out) // 2
            self.count.matmul += macs
            self.count.by_op[str(packet)] += macs
            bias = None
            if func is aten.addmm.default:
                bias = out.numel()
            elif func is aten.convolution.default and args[2] is not None:
                bias = out.numel()
            if bias:
                self._elementwise("bias_add", bias)
        elif func is aten.gelu.default:
            self._elementwise("gelu", out.numel() * _gelu_flops(kwargs))
        elif func in ELEMENTWISE_FLOPS:
            first = out[0] if isinstance(out, tuple) else out
            self._elementwise(str(packet), first.numel() * ELEMENTWISE_FLOPS[func])
        elif func in REDUCTIONS:
            self._elementwise(str(packet), args[0].numel())
        return out

    def _elementwise(self, name: str, flops: int) -> None:
        self.count.elementwise_flops += flops
        self.count.by_op[name] += flops


def count_macs(model: torch.nn.Module, input_shape: tuple[int, ...]) -> MacCount:
    """Count one forward of ``model`` on an input of ``input_shape``.

    The model should live on the ``meta`` device (build it under ``with torch.device("meta")``)
    so nothing is computed; a model with real weights works too, just slower.
    """
    device = next(model.parameters()).device
    x = torch.empty(input_shape, device=device)
    count = MacCount()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Counter(count):
            model(x)
    finally:
        model.train(was_training)
    return count
