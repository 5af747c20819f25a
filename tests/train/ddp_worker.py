"""Run by torchrun in test_distributed.py: train, then save this rank's parameters and eval count."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from tubelet.cli import build_parser
from tubelet.config import resolve_config
from tubelet.train.distributed import init_runtime, shutdown
from tubelet.train.loop import Trainer


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    rt = init_runtime("cpu")
    trainer = Trainer(cfg, rt, progress=False)
    metrics = trainer.fit()
    out = Path(cfg.runtime.out)
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()},
              str(out / f"rank{rt.rank}.safetensors"))
    (out / f"eval_rank{rt.rank}.json").write_text(json.dumps({"count": metrics["count"],
                                                              "indices": metrics["indices"]}))
    shutdown(rt)


if __name__ == "__main__":
    main(sys.argv[1:])
