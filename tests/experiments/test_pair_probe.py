"""The experiments of Table 2 in small run end to end on a tiny configuration (no accuracy asserted)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))


def test_pair_probe_halves_are_the_two_events_of_one_video():
    import numpy as np
    import torch
    import pair_probe
    from tubelet.data.synth import SynthConfig, render
    config = SynthConfig(size=16, frames=8, event_order=True)
    x, y = pair_probe.clips(config, 5, 0, 2, halves=True)
    assert x.shape == (4, 4, 16, 16, 3) and x.dtype == torch.uint8 and y.tolist() == [0, 1, 0, 1]
    first = render(10, np.random.default_rng([7, 0, 10, 0]), config)
    assert np.array_equal(x[1].numpy(), first[4:8])
    x, y = pair_probe.clips(config, 5, 0, 2, halves=False)
    assert x.shape == (4, 8, 16, 16, 3) and y.tolist() == [0, 0, 1, 1]
    later, _ = pair_probe.clips(config, 5, 0, 1, halves=False, first=1)  # --fresh's batches
    assert np.array_equal(later[0].numpy(), render(10, np.random.default_rng([7, 0, 10, 1]), config))
    assert not np.array_equal(later[0].numpy(), first)


@pytest.mark.slow
def test_pair_probe_trains_every_kind_on_one_shared_pool(tmp_path):
    import pair_probe
    out = tmp_path / "probe.json"
    assert pair_probe.main(["--pair", "5", "--event-order", "--kind", "all", "--videos", "4", "--val-videos", "2",
                            "--steps", "3", "--every", "2", "--schedule", "cosine", "--warmup", "1",
                            "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["kind"] for r in result["results"]] == pair_probe.KINDS
    params = {r["kind"]: r["params"] for r in result["results"]}
    # Model 3 adds a temporal attention to every block.
    assert params["factorised_self_attention"] > params["spatiotemporal"]
    # Model 4 pools by GAP: no CLS token and no position embedding for it (2 x 128 parameters).
    assert params["factorised_dot_product"] == params["spatiotemporal"] - 2 * 128
    for r in result["results"]:
        assert [row["step"] for row in r["rows"]] == [2, 3]
        # Warm-up over step 1, then cosine: the peak at step 2, half of it at step 3 of 3.
        assert [row["lr"] for row in r["rows"]] == pytest.approx([1e-3, 5e-4])
        assert 0 <= r["val"] <= 1 and r["params"] > 0
