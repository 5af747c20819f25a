"""bfloat16 weights packed once for oneDNN: faster matrix products when decoding on a CPU.

A decoding call multiplies a few rows (one new token, or the K + 1 that speculative sampling
verifies) by every weight matrix of the model, so its time is the time to stream the weights.
``F.linear`` in bfloat16 on a CPU streams them at 8.4 GB/s on a 2-core Xeon with AMX (one
thread, SmolLM2-135M's 120 block matrices); the same products through oneDNN, with each weight
reordered once into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the
prepacking that inductor's CPU backend does), at 11.8 GB/s: 18.1 ms instead of 25.1 a token.

The products are the same numbers: on that CPU, bit for bit those of ``F.linear`` for 1 to 32
rows, and each row's result does not depend on how many rows a call has (tested for 1 to 64), so
a verification call's products are those of one-token calls. (Its attention still rounds
differently, so a bf16 target's greedy speculative output may part from plain greedy output at a
near-tie: docs/generate.md.)

The packing is for few rows. A call of more than :data:`PACKED_ROWS` rows (a long prompt, a
batch that a distillation labels) uses ``F.linear``, whose own choice is as fast or faster there:
a 1,536 x 576 product took 0.15 ms packed against 0.25 for 64 rows, the same for 512, and 6.9
against 5.3 ms for 4,096.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKED_ROWS = 256  # the most rows a call multiplies by the packed weight


def _packed_product(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """x @ W^T + b, with W packed by ``_reorder_linear_weight``."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def can_pack(device: torch.device) -> bool:
    """Whether :func:`pack_linears` packs on ``device``: a CPU whose torch has oneDNN, and whose
    instructions oneDNN's bfloat16 products need (avx512bw, avx512vl and avx512dq, or
    avx_ne_convert). Elsewhere (an AVX2 CPU, say) ``_reorder_linear_weight`` refuses bfloat16, and
    the model keeps ``F.linear``."""
    mkldnn = torch.ops.mkldnn
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_is_mkldnn_bf16_supported")
            and bool(mkldnn._is_mkldnn_bf16_supported()))


class PackedLinear(nn.Module):
    """An ``nn.Linear`` in bfloat16 on a CPU, with a oneDNN-packed copy of its weight for inference.

    ``weight`` (and ``bias``) are the linear's own parameters, shared, not copied: a head tied to
    an embedding stays tied, ``state_dict`` is unchanged, and whatever reads ``.weight`` (a
    feature draft takes its target's head) reads the plain matrix. The packed copy is a buffer
    that is not saved, made once: it is for decoding. A call that records gradients, whose input
    is not bfloat16 on a CPU, or of more than :data:`PACKED_ROWS` rows uses the plain weight; but
    weights changed after packing (training, ``load_state_dict``) leave the copy stale, so pack a
    model only for decoding.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if (x.dtype != torch.bfloat16 or x.device.type != "cpu" or torch.is_grad_enabled()
                or x.numel() > PACKED_ROWS * self.in_features):
            return F.linear(x, self.weight, self.bias)
        return _packed_product(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def pack_linears(model: nn.Module) -> nn.Module:
    """Replace every bfloat16 ``nn.Linear`` of ``model`` by a :class:`PackedLinear`, in place, where
    :func:`can_pack` allows (a model for decoding: see :class:`PackedLinear`). A Linear seen twice
    (shared by two modules) becomes one PackedLinear."""
    done: dict[int, PackedLinear] = {}
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if (isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16
                    and can_pack(child.weight.device)):
                if id(child) not in done:
                    done[id(child)] = PackedLinear(child)
                setattr(module, name, done[id(child)])
    return model
