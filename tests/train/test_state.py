"""Checkpoint writing: a killed writer's hidden temporaries do not outlive the next checkpoint."""

from __future__ import annotations

import torch

from tubelet.train.state import LATEST, STATE_FILE, latest_checkpoint, save_checkpoint
import tubelet


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
