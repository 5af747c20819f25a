"""Run by torchrun in test_distributed.py: the full-state functions of tubelet.train.distributed.

Both ranks train the same tiny model on the same clips, so DDP and FSDP must follow a single
process (the reference, run here too) exactly. An EMA copy is sharded like the model under FSDP.
Writes ``result.json`` (main process): the largest differences found.
"""

import copy
import gc
import json
import sys
from pathlib import Path

import torch

import tubelet
from tubelet.train.distributed import (gather_model, gather_optimizer_state, init_runtime, is_sharded,
                                       load_model_state, load_optimizer_state, shutdown, unwrap,
                                       wrap_model)
from tubelet.train.state import load_checkpoint, save_checkpoint


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)


def step(model, opt, ema, x) -> None:
    (model(x) - 1).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():  # shard by shard under FSDP: the EMA is sharded like the model
        averaged = ema.state_dict()
        for name, value in unwrap(model).state_dict().items():
            averaged[name].lerp_(value, 0.5)


def diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def main(parallel: str, out: Path) -> None:
    rt = init_runtime("cpu")
    torch.manual_seed(0)
    model = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, num_classes=3, hidden_size=16,
                                 num_layers=2, num_heads=2, mlp_dim=32)
    x = torch.randn(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    reference, ref_ema = copy.deepcopy(model), copy.deepcopy(model).requires_grad_(False)
    ref_opt = sgd(reference)
    ema = copy.deepcopy(model).requires_grad_(False)
    wrapped = wrap_model(model, rt, parallel)
    if is_sharded(wrapped):
        ema = wrap_model(ema, rt, parallel)
    opt = sgd(wrapped)
    for _ in range(2):
        step(reference, ref_opt, ref_ema, x)
        step(wrapped, opt, ema, x)

    result = {"sharded": is_sharded(wrapped)}
    gathered = gather_model(wrapped, model, rt)
    optimizer = gather_optimizer_state(wrapped, opt, rt)
    averaged = gather_model(ema, ema, rt)
    if rt.is_main:
        result["model"] = diff(gathered.state_dict(), reference.state_dict())
        names = dict(reference.named_parameters())
        result["momentum"] = diff({n: s["momentum_buffer"] for n, s in optimizer["state"].items()},
                                  {n: ref_opt.state[p]["momentum_buffer"] for n, p in names.items()})
        result["ema"] = diff(averaged.state_dict(), ref_ema.state_dict())
        save_checkpoint(out, gathered, {"optimizer": optimizer, "ema": averaged.state_dict()}, step=2)
    torch.distributed.barrier()

    # resume on every rank from the checkpoint, then one more step of both runs
    resumed, state = load_checkpoint(out / "checkpoints" / "step-0000002")
    res_ema = copy.deepcopy(resumed).requires_grad_(False)
    res_wrapped = wrap_model(resumed, rt, parallel)
    if is_sharded(res_wrapped):
        res_ema = wrap_model(res_ema, rt, parallel)
    load_model_state(res_ema, state["ema"], rt)
    res_opt = sgd(res_wrapped)
    load_optimizer_state(res_wrapped, res_opt, state["optimizer"], rt)
    step(reference, ref_opt, ref_ema, x)
    step(res_wrapped, res_opt, res_ema, x)
    final = gather_model(res_wrapped, resumed, rt)
    final_ema = gather_model(res_ema, res_ema, rt)
    if rt.is_main:
        result["resumed_model"] = diff(final.state_dict(), reference.state_dict())
        result["resumed_ema"] = diff(final_ema.state_dict(), ref_ema.state_dict())
        result["info_kept"] = final.info is resumed.info
        (out / "result.json").write_text(json.dumps(result))
    # the sharded modules and their optimisers go before the process group does
    del model, wrapped, ema, opt, resumed, res_wrapped, res_ema, res_opt, final, final_ema
    gc.collect()
    shutdown(rt)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
