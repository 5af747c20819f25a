"""What a kill leaves behind: checkpoint temporaries and a half-written metrics line do not survive."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.train.logging import MetricLog, read_metrics
from tubelet.train.state import LATEST, STATE_FILE, latest_checkpoint, save_checkpoint


def test_next_checkpoint_removes_what_a_killed_writer_left(tmp_path):
    model = tubelet.create_model("vivit_s16x2", num_frames=2, image_size=16, num_classes=3, hidden_size=16,
                                 num_layers=1, num_heads=2, mlp_dim=32)
    root = tmp_path / "checkpoints"
    (root / ".step-0000009.akxzleok").mkdir(parents=True)  # a kill inside save_checkpoint
    (root / ".step-0000009.akxzleok" / "model.safetensors").write_bytes(b"half")
    (root / f".{LATEST}.q1w2e3.tmp").write_text("step-0000009")  # a kill while replacing the pointer

    final = save_checkpoint(tmp_path, model, {"step": 9}, step=9)

    assert sorted(p.name for p in root.iterdir()) == [LATEST, "step-0000009"]
    assert latest_checkpoint(tmp_path) == final
    assert torch.load(final / STATE_FILE, weights_only=False) == {"step": 9}


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_and_resuming_rewrites_the_rest(tmp_path):
    log = MetricLog(tmp_path, enabled=True)
    for step in (1, 2, 3):
        log.write("train", step, loss=float(step))
    log.close()
    with log.path.open("a") as f:
        f.write('{"kind": "train", "step": 4, "lo')  # the kill landed inside the write of step 4
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3]

    log.truncate_after(2)  # resuming from the checkpoint of step 2
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2]
    assert log.path.read_text().endswith("\n") and not list(tmp_path.glob(".metrics*"))


def test_a_damaged_line_before_the_last_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 1.0}\nnot json\n{"kind": "train", "step": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)
