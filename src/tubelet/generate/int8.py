"""Int8 weights for a draft: each output layer's rows in int8 with one scale per row.

A draft's call on a CPU is bound by reading its weights: a 2-layer SmolLM2 draft with a
4,096-token head reads 19 MB in bfloat16 per token, and its matrix-vector products took 1.3 of
its 1.6 ms. Int8 weights halve what is read, and torch's int8 kernel for weight-only
quantisation (``torch._weight_int8pack_mm``, bfloat16 activations, the kernel gpt-fast and torchao
use) multiplies at 0.72 ms a call instead of 1.58 on the 2-core EPYC. Speculative sampling stays
exact whatever the draft is: the quantised draft reports the distribution it sampled from, and
only its agreement with the target can change (total variation 0.034 between the bfloat16 and the
int8 draft's next-token distributions on code).

Symmetric per-row quantisation: w[i, :] ~ scale[i] * q[i, :], q in [-127, 127], scale[i] =
max |w[i, :]| / 127, rounded to nearest.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (out, in) and bfloat16 scales (out,); its bias, if any, stays
    in bfloat16."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(1).clamp(min=1e-12) / 127).to(torch.bfloat16)  # rounded as it will be used
        self.register_buffer("weight", torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat, self.weight, self.scale).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> Tensor:
        """The (out, in) float32 weight the layer multiplies by."""
        return self.weight.float() * self.scale.float()[:, None]


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (a model in bfloat16 on a CPU) by an
    :class:`Int8Linear`, in place, but those the model names in its ``int8_keep`` (a tuple of
    module names); embeddings and norms stay as they are."""
    keep = getattr(model, "int8_keep", ())
    for prefix, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and f"{prefix}.{name}".lstrip(".") not in keep:
                if child.weight.device.type != "cpu":
                    raise ValueError(f"int8 drafts run on a CPU (torch's int8 kernel); this draft is on "
                                     f"{child.weight.device}, its target's device: use bf16 there, or run "
                                     "on the CPU (--device cpu)")
                setattr(module, name, Int8Linear(child))
    return model
