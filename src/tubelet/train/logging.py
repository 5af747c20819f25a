"""The one logging path of a run: metrics.jsonl, TensorBoard when installed, PNG plots.

Every record is one JSON line ``{"kind": "train"|"eval", "step": ..., ...}`` appended and
flushed as it happens, so a killed run keeps every metric logged before it died; a last line cut
short by the kill is dropped when the file is read, and resuming rewrites the file atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..fileio import dumps_json, write_text_atomic


class MetricLog:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._tb = None

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        with self.path.open("a") as f:
            f.write(dumps_json(record) + "\n")  # NaN -> null: every line is JSON
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (they are redone when a run resumes)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if r["step"] <= step]
        # a kill now leaves the old file or the new one, never half
        write_text_atomic(self.path, "".join(dumps_json(r) + "\n" for r in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a last line that a kill cut short is left out."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}, line {number}: not a JSON record ({line[:60]!r})") from None
    return records


def plot_run(run_dir: Path, confusion: list[list[int]] | None = None,
             class_names: list[str] | None = None) -> list[Path]:
    """learning_curves.png (loss, learning rate, validation top-1) and confusion.png.

    Needs matplotlib; without it nothing is drawn and an empty list is returned.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval" and "top1" in r]
    written = []
    if train:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
        axes[0].set(title="training loss", xlabel="step")
        axes[1].plot([r["step"] for r in train], [r["lr"] for r in train], lw=1)
        axes[1].set(title="learning rate", xlabel="step")
        if evals:
            axes[2].plot([r["step"] for r in evals], [100 * r["top1"] for r in evals], "o-")
        axes[2].set(title="validation top-1 (%)", xlabel="step")
        fig.tight_layout()
        fig.savefig(run_dir / "learning_curves.png", dpi=110)
        plt.close(fig)
        written.append(run_dir / "learning_curves.png")
    if confusion:
        n = len(confusion)
        fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.6 + 0.45 * n))
        ax.imshow(confusion, cmap="Blues")
        names = class_names or [str(i) for i in range(n)]
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        for i in range(n):
            for j in range(n):
                if confusion[i][j]:
                    ax.text(j, i, confusion[i][j], ha="center", va="center", fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title="confusion (validation)")
        fig.tight_layout()
        fig.savefig(run_dir / "confusion.png", dpi=110)
        plt.close(fig)
        written.append(run_dir / "confusion.png")
    return written
