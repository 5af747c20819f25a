"""The benchmark scripts run end to end on a tiny configuration and write what they claim;
transformers' Vivit with tubelet's weights gives tubelet's logits. No time is asserted."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))



@pytest.fixture(autouse=True)
def keep_threads():
    """The scripts' --threads sets torch's thread count for the whole process: restore it."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


TINY = ["--device", "cpu", "--threads", "1", "--frames", "2", "--size", "32", "--dtype", "fp32", "--warmup", "1", "--repeats", "2"]


def test_throughput_rows_ratios_and_agreement_with_transformers(tmp_path):
    pytest.importorskip("transformers")
    import throughput

    out = tmp_path / "t.json"
    throughput.main(TINY + ["--backbones", "ti", "--batch", "1", "--mode", "infer,train", "--compile", "off",
                            "--variants", "1,2", "--hf", "sdpa,eager,flash_attention_2", "--min-repeat-ms", "0",
                            "--matmul-n", "256", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["environment"]["device_type"] == "cpu" and result["environment"]["command"]
    rows = {(r["name"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(n, m) for n in ("tubelet M1", "tubelet M2", "transformers sdpa", "transformers eager")
                         for m in ("infer", "train")}  # flash_attention_2 cannot run on a CPU: left out
    for r in rows.values():
        assert r["median_ms"] > 0 and 0 < r["mfu"] and r["peak_mib"] > 0 and len(r["all_ms"]) == 2
    assert rows[("transformers sdpa", "infer")]["max_rel_diff_vs_tubelet"] < 1e-5
    assert rows[("transformers eager", "infer")]["max_rel_diff_vs_tubelet"] < 1e-5
    assert set(rows[("tubelet M1", "infer")]["speedup_vs"]) == {"transformers sdpa", "transformers eager"}
    # a training step counts three forward passes
    assert rows[("tubelet M1", "train")]["matmul_gmacs_per_clip"] == rows[("tubelet M1", "infer")]["matmul_gmacs_per_clip"]
    # MFU divides by the faster of the two measured rates (bf16 where the CPU has bf16 instructions)
    rates = result["matmul_rate"]
    assert result["mfu_dtype"] == max(rates, key=lambda d: rates[d]["tflops"])
    peak = rates[result["mfu_dtype"]]["tflops"]
    for r in rows.values():
        assert r["mfu"] == pytest.approx(r["tflops"] / peak)


def test_mfu_divides_by_the_devices_faster_rate():
    """On an AVX2 CPU bf16 is emulated (a 512^3 product at 1/67 of fp32's rate on a Zen 3 EPYC): MFU against it
    read 6,553%. The denominator is the faster rate, whichever precision it is."""
    import throughput

    emulated = {"bf16": {"tflops": 0.002}, "fp32": {"tflops": 0.1}}
    amx = {"bf16": {"tflops": 0.44}, "fp32": {"tflops": 0.08}}
    assert throughput.mfu_dtype(emulated) == "fp32" and throughput.mfu_dtype(amx) == "bf16"


def test_frame_scaling_table_and_ceiling_search(tmp_path):
    import frame_scaling

    out = tmp_path / "s.json"
    frame_scaling.main(["--device", "cpu", "--threads", "1", "--size", "32", "--frames", "2,4", "--variants", "4",
                        "--backbone", "s", "--mode", "infer", "--dtype", "fp32", "--warmup", "1", "--repeats", "2",
                        "--batch-ceilings", "1", "--memory-budget-gib", "100", "--max-frames", "8", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [r["frames"] for r in result["rows"]] == [2, 4]
    assert all(r["memory_kind"] == "rss_delta" for r in result["rows"])
    (c,) = result["ceilings"]
    assert c["max_frames"] == 8 and c["capped_at_max_frames"] and "CPU stand-in" in c["criterion"]


def test_speculative_prompts_leave_out_the_files_a_draft_trained_on(tmp_path):
    """A draft's split is over its own glob: the benchmark's held-out tenth of another glob may be
    files the draft trained on. The prompts leave out every file the draft lists."""
    import speculative
    from tubelet.generate.distill import CORPUS_LIST, LABELS

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"f{i:02d}.py").write_text(f"# file {i}\n" + "x = 1\n" * 40)
    draft = tmp_path / "draft"
    (draft / LABELS).mkdir(parents=True)
    trained = [corpus / "f00.py", corpus / "f10.py", corpus / "f05.py"]  # two of the held-out tenth
    (draft / LABELS / CORPUS_LIST).write_text("".join(f"{p.stat().st_size}\t{p}\n" for p in trained))
    (tmp_path / "old").mkdir()  # a draft folder without the list

    class Tok:
        def __call__(self, text):
            return type("Ids", (), {"input_ids": list(range(len(text.split())))})()

    glob = str(corpus / "*.py")
    _, plain = speculative.held_out_prompts(Tok(), glob, 3, 8)
    assert plain == [str(corpus / f) for f in ("f00.py", "f10.py", "f20.py")]  # the held-out tenth
    files, unlisted = speculative.drafts_trained_on([f"{draft},vocab:64,int8", "ngram:3", str(tmp_path / "old")])
    assert files == {str(p.resolve()) for p in trained} and unlisted == [str(tmp_path / "old")]
    _, fresh = speculative.held_out_prompts(Tok(), glob, 3, 8, trained=files)
    assert fresh == [str(corpus / f) for f in ("f20.py", "f01.py", "f02.py")]  # then files no draft trained on


def test_speculative_verification_costs_are_paired_with_the_one_token_call_of_their_round(monkeypatch):
    """A slow spell of a shared machine (every call ten times slower for a while) moved c_v(K) of
    the K timed in it when each K was timed in a block; timed round by round, each ratio stays."""
    import speculative

    clock = {"now": 0.0, "calls": 0}

    class FakeLM:  # an n-token call takes n units; calls 40-79 are ten times slower
        device = torch.device("cpu")

        def reset(self, batch_size):
            pass

        def extend(self, tokens, num_valid):
            clock["calls"] += 1
            clock["now"] += int(num_valid[0]) * (10.0 if 40 <= clock["calls"] < 80 else 1.0)

        def crop(self, lengths):
            pass

    monkeypatch.setattr(speculative.time, "perf_counter", lambda: clock["now"])
    sizes = [2, 3, 4, 5, 6]
    one, ratios = speculative.paired_calls(FakeLM(), list(range(8)), sizes, reps=15)
    assert one == 1.0 and ratios == {n: float(n) for n in sizes}
    clock["calls"] = 0
    blocks = {n: speculative.median_call(FakeLM(), list(range(8)), n, reps=15) for n in [1, *sizes]}
    assert any(blocks[n] / blocks[1] != n for n in sizes)  # what the blocks measured


def test_speculative_step_cost_averages_the_verification_over_the_lengths_drafted_and_counts_the_proposals():
    """Half the steps drafting nothing and half drafting 8 cost (1 + c_v(8)) / 2 to verify: c_v grows
    faster than linearly past K = 3, and c_v(4) of the mean length made a dynamic length look cheaper
    than it ran (predicted 1.17x, measured 0.93x on an AVX2 CPU). The draft's cost per step is what
    its proposals measured, the sampling between its calls included."""
    import speculative

    from tubelet.generate.stats import Stats

    verify = {1: 1.1, 2: 1.2, 3: 1.3, 4: 1.4, 5: 2.0, 6: 2.2, 7: 2.4, 8: 2.6}
    stats = Stats(k=8, rows=1, row_steps=2, drafted=8, tested=2, accepted=1, generated=3,
                  drafted_histogram=[1, 0, 0, 0, 0, 0, 0, 0, 1])
    out = speculative.measured_steps([stats], 0.25, verify)
    assert out["step_cost"] == pytest.approx(0.25 + (1.0 + 2.6) / 2)
    assert out["predicted_speedup"] == pytest.approx(1.5 / out["step_cost"])
    assert out["proposal_cost"] == 0.25
    assert speculative.verify_cost(4, verify) == 1.4 and speculative.verify_cost(2.5, verify) == pytest.approx(1.25)


def test_speculative_timed_draft_reports_the_seconds_of_its_proposals(monkeypatch):
    """The benchmark's TimedDraft gives the draft's proposals as they ran, and changes no token."""
    import speculative

    from tubelet.generate import Sampling, speculative_generate
    from tubelet.generate.drafts import NGramDraft

    class Table:  # a target that always predicts the token after the last: every n-gram proposal agrees
        vocab_size, device = 16, torch.device("cpu")

        def reset(self, batch_size):
            self.lengths = torch.zeros(batch_size, dtype=torch.long)

        def extend(self, tokens, num_valid):
            self.lengths = self.lengths + num_valid
            return torch.nn.functional.one_hot((tokens + 1) % 16, 16).float() * 20

        def crop(self, lengths):
            self.lengths = torch.minimum(self.lengths, lengths)

    clock = {"now": 0.0}

    def tick():
        clock["now"] += 0.5
        return clock["now"]

    prompt = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    plain = speculative_generate(Table(), NGramDraft(3, 16), [prompt], 12, k=3, sampling=Sampling()).tokens[0]
    monkeypatch.setattr(speculative.time, "perf_counter", tick)
    tokens, stats, proposals = speculative.timed_generation(Table(), NGramDraft(3, 16), prompt, 12, 0.25, k=3,
                                                            sampling=Sampling())
    assert tokens == plain and stats.row_steps >= 3
    assert proposals == pytest.approx(0.5 / 0.25)  # each proposal took one tick of 0.5 s
