"""Is speculative sampling lossless? The statistical tests of tests/generate/test_lossless.py as a
table: chi-square p-value and total variation of the first three new tokens drawn on the toy
Markov pair of :mod:`tubelet.generate.lossless`, for the true verification step and for the
deliberately wrong ones, batched and one row at a time.

    python benchmarks/lossless.py --out benchmarks/results/lossless.json     # K = 1..5, 20,000 samples
    python benchmarks/lossless.py --quick                                     # K = 1, 2, fewer samples
    python benchmarks/lossless.py --k 3 --alternatives 2,1                    # tree verification too

The true step must keep p well above 1e-4 and TV under its bound; the wrong ones must not.
"""

from __future__ import annotations

import argparse

import torch

import common  # noqa: F401  (puts src/ on the path)
from common import environment, parse_list, write_json
import tubelet.generate.speculative as speculative
from tubelet.generate import Sampling
from tubelet.generate.commands import parse_alternatives
from tubelet.generate.lossless import WRONG_TREE, WRONG_VERIFY, first_tokens, joint_test, marginal_tests

SAMPLED = Sampling(temperature=1.0)
FILTERED = Sampling(temperature=0.8, top_k=4, top_p=0.9)


def runs(k: int, samples: int, single: int) -> list[tuple[str, Sampling, int, int, int]]:
    """(verification, sampling, samples, rows per call, seed): the runs of the tests for one K."""
    out = [("true", SAMPLED, samples, samples, 100 * k), ("true", FILTERED, samples, samples, 100 * k)]
    out += [(name, SAMPLED, samples, samples, 100 * k) for name in sorted(WRONG_VERIFY)]
    out += [("true", SAMPLED, single, 1, 7 * k), ("residual_from_q", SAMPLED, single, 1, 7 * k)]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", default="1,2,3,4,5", help="draft lengths K, comma-separated")
    p.add_argument("--samples", type=int, default=20000, help="generations per batched run (one call)")
    p.add_argument("--single", type=int, default=1500, help="generations of the batch-of-one runs")
    p.add_argument("--quick", action="store_true", help="K = 1, 2 with 4,000 / 200 samples (seconds)")
    p.add_argument("--alternatives", default="",
                   help="also test tree verification with these candidates per draft position (e.g. 2,1): "
                        "the true step and the wrong tree variants, batched, for each K")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.k, args.samples, args.single = "1,2", 4000, 200
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and steadiest
    env = environment(torch.device("cpu"))
    print(f"command: {env['command']}")
    print("| K | verification | sampling | batch | samples | chi² / df | p-value | TV | TV bound | impossible |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    true_verify = speculative.verify
    rows = []
    try:
        for k in parse_list(args.k, int):
            for name, sampling, n, batch, seed in runs(k, args.samples, args.single):
                speculative.verify = true_verify if name == "true" else WRONG_VERIFY[name]
                tokens = first_tokens(k, sampling, n, batch, seed=seed)
                r = joint_test(tokens, sampling)
                if name == "true":
                    r["marginal_min_p"] = min(marginal_tests(tokens, sampling))
                label = "T=1" if sampling is SAMPLED else "T=0.8, top-k 4, top-p 0.9"
                r.update(k=k, variant=name, sampling=label, batch=batch, n=n)
                rows.append(r)
                print(f"| {k} | {name} | {label} | {batch} | {n} | {r['chi2']:.0f} / {r['df']} | {r['p']:.2g} | "
                      f"{r['tv']:.3f} | {r['tv_max']:.3f} | {r['impossible']} |", flush=True)
        alternatives = parse_alternatives(args.alternatives)
        for k in parse_list(args.k, int) if alternatives else []:
            tree = [("true", None, None, sampling) for sampling in (SAMPLED, FILTERED)]
            tree += [(name, attribute, wrong, SAMPLED) for attribute, variants in WRONG_TREE.items()
                     for name, wrong in variants.items()]
            for name, attribute, wrong, sampling in tree:
                original = getattr(speculative, attribute) if attribute else None
                if attribute:
                    setattr(speculative, attribute, wrong)
                try:
                    tokens = first_tokens(k, sampling, args.samples, args.samples, seed=11 * k,
                                          alternatives=alternatives)
                finally:
                    if attribute:
                        setattr(speculative, attribute, original)
                r = joint_test(tokens, sampling)
                label = "T=1" if sampling is SAMPLED else "T=0.8, top-k 4, top-p 0.9"
                variant = f"tree {args.alternatives}: {name}"
                r.update(k=k, variant=variant, sampling=label, batch=args.samples, n=args.samples)
                rows.append(r)
                print(f"| {k} | {variant} | {label} | {args.samples} | {args.samples} | {r['chi2']:.0f} / {r['df']} | "
                      f"{r['p']:.2g} | {r['tv']:.3f} | {r['tv_max']:.3f} | {r['impossible']} |", flush=True)
    finally:
        speculative.verify = true_verify
    write_json(args.out, {"environment": env, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
