"""The statistical tests of tests/generate/test_lossless.py as a table: chi-square p-value and
total variation of the first three tokens, for the true verification step and the wrong ones.

    PYTHONPATH=src python benchmarks/lossless.py > /tmp/lossless.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

import tubelet.generate.speculative as speculative  # noqa: E402
from tests.generate.test_lossless import (FILTERED, N_BATCH, SAMPLED, VARIANTS, generate,  # noqa: E402
                                          joint_test, marginal_tests)


def main() -> int:
    torch.set_num_threads(1)
    true_verify = speculative.verify
    speculative.__dict__["_true_verify"] = true_verify
    print("| K | verification | sampling | batch | samples | chi² / df | p-value | TV | TV bound | impossible |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for k in range(1, 6):
        runs = [("true", SAMPLED, N_BATCH, N_BATCH, 100 * k), ("true", FILTERED, N_BATCH, N_BATCH, 100 * k)]
        runs += [(name, SAMPLED, N_BATCH, N_BATCH, 100 * k) for name in sorted(VARIANTS)]
        runs += [("true", SAMPLED, 1500, 1, 7 * k), ("residual_from_q", SAMPLED, 1500, 1, 7 * k)]
        for name, sampling, n, batch, seed in runs:
            speculative.verify = true_verify if name == "true" else VARIANTS[name]
            tokens = generate(k, sampling, n, batch, seed=seed)
            r = joint_test(tokens, sampling)
            if name == "true":
                r["marginal_min_p"] = min(marginal_tests(tokens, sampling))
            s = ("T=1" if sampling is SAMPLED else "T=0.8, top-k 4, top-p 0.9")
            r.update(k=k, variant=name, sampling=s, batch=batch, n=n)
            rows.append(r)
            print(f"| {k} | {name} | {s} | {batch} | {n} | {r['chi2']:.0f} / {r['df']} | {r['p']:.2g} | "
                  f"{r['tv']:.3f} | {r['tv_max']:.3f} | {r['impossible']} |", flush=True)
    speculative.verify = true_verify
    Path("benchmarks/lossless.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
