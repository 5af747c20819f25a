"""The compiled-decoding experiment's command line (its cache and step are the library's, tested in
tests/generate/test_compiled.py; the compiles themselves take minutes, and are the experiment's)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "compiled_decoding.py"


def test_help():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage:") and "--methods" in r.stdout


def test_methods_must_start_with_eager_and_be_known():
    for methods in ("aot", "eager,foo", "eager,aot,aot"):
        r = subprocess.run([sys.executable, str(SCRIPT), "--methods", methods], capture_output=True, text=True)
        assert r.returncode == 2 and "eager first" in r.stderr, methods
