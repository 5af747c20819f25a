"""Make tubelet/assets/smollm2_token_counts.npz: how often each token of SmolLM2's tokenizer occurs
in local text, the default source of a reduced draft vocabulary (``--draft truncated:2,vocab:4096``).

    python scripts/token_counts.py            # about a minute on 2 CPU cores

The text: the training files of the Python standard library's top-level modules (the files
``tubelet draft distill`` and ``benchmarks/speculative.py`` do not hold out: every 10th file in
sorted order is held out, so the benchmark's prompts are not counted) and the machine's licence
texts (``/usr/share/doc/*/copyright``: English prose; the first 4,000 characters of each distinct
one, so that a few long licences repeated by many packages do not outweigh the code). The file keeps every token that occurs:
``ids`` (uint16, most frequent first), ``counts`` (uint32), ``vocab_size`` and ``source`` (the text
above, with the number of files and tokens).
"""

from __future__ import annotations

import argparse
import glob
import os
import sysconfig
from pathlib import Path

import numpy as np

from tubelet.generate.distill import corpus_files
from tubelet.generate.loading import load_tokenizer
from tubelet.generate.vocab import BUNDLED, count_tokens

STDLIB = os.path.join(sysconfig.get_paths()["stdlib"], "*.py")
LICENCES = "/usr/share/doc/*/copyright"
LICENCE_CHARS = 4000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(BUNDLED))
    args = p.parse_args(argv)
    tok = load_tokenizer("smollm2")
    train, _ = corpus_files(STDLIB)
    licences = sorted(map(Path, glob.glob(LICENCES)))
    prose = list(dict.fromkeys(f.read_text(errors="replace")[:LICENCE_CHARS] for f in licences))
    code = [f.read_text(errors="replace") for f in train]
    counts = count_tokens([*code, *prose], lambda s: tok(s).input_ids)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values())
    source = (f"{len(train)} training files of {STDLIB} (every 10th held out) and "
              f"{len(prose)} distinct {LICENCES} (first {LICENCE_CHARS} characters): {total} tokens, {len(ranked)} distinct")
    np.savez_compressed(args.out, ids=np.array([t for t, _ in ranked], dtype=np.uint16),
                        counts=np.array([c for _, c in ranked], dtype=np.uint32),
                        vocab_size=np.int64(len(tok)), source=np.array(source))
    print(f"wrote {args.out}: {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
