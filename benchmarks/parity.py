"""Reference parity: tubelet's logits against the original ViViT code's on every reference fixture
(tests/fixtures/scenic_vivit: Models 1-4 and both tokenisers, produced by google-research/scenic in
float32), loading the Flax checkpoint (.msgpack) exactly as a user converts a released one.

    python benchmarks/parity.py --out benchmarks/results/parity_cpu.json
    python benchmarks/parity.py --quick        # the same: it takes seconds

Prints max |tubelet - reference| per fixture, absolute and relative to the largest |logit|, and
writes JSON. tests/convert/test_scenic.py asserts the same comparison below 1e-4.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import common  # noqa: F401  (puts src/ on the path)
from common import ROOT, environment, write_json
from tubelet.convert.scenic import config_from_scenic, load_scenic

FIXTURES = ROOT / "tests" / "fixtures" / "scenic_vivit"


def compare(name: str) -> dict:
    """max |difference| of tubelet's logits from the reference's for one fixture."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    z = np.load(FIXTURES / f"{name}.npz")
    x = torch.from_numpy(z["x"]).permute(0, 4, 1, 2, 3)  # (B, T, H, W, C) -> (B, C, T, H, W)
    reference = torch.from_numpy(z["logits"])
    model = load_scenic(FIXTURES / f"{name}.msgpack", config_from_scenic(meta)).eval()
    with torch.no_grad():
        diff = (model(x) - reference).abs().max().item()
    return {"fixture": name, "type": meta["type"], "classifier": meta["classifier"], "tokeniser": meta["tokeniser"],
            "input_bthwc": list(x.permute(0, 2, 3, 4, 1).shape), "max_abs_diff": diff,
            "max_rel_diff": diff / reference.abs().max().item()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="accepted for symmetry: the full run takes seconds")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args(argv)
    env = environment(torch.device("cpu"))
    print(f"command: {env['command']}")
    rows = [compare(f.stem) for f in sorted(FIXTURES.glob("*.msgpack"))]
    print("| fixture | classifier | tokeniser | max abs. difference | relative to max abs. logit |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fixture']} | {r['classifier']} | {r['tokeniser']} | {r['max_abs_diff']:.1e} | {r['max_rel_diff']:.1e} |")
    write_json(args.out, {"environment": env, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
