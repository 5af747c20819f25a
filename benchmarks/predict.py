"""Videos per second: `tubelet predict` on a folder against transformers' video-classification
pipeline on the same exported model and the same frames.

One model (``vivit_micro``: Model 1, 8 frames of 64x64, random weights with a non-zero head) is
saved as a tubelet checkpoint and exported with ``tubelet convert --to hf``. The videos are the
built-in dataset's (H.264, 64x64) cut to exactly 8 frames, so that both read frames 0..7 and one
centre crop: ``tubelet predict --stride 1 --views 1 --crops 1`` and
``pipeline("video-classification")(videos, frame_sampling_rate=1)``. Their top labels are
checked to agree before anything is timed. The contenders run round-robin in one process (the
ratio of two in the same round is a paired sample): tubelet predict with decoding in worker
processes (its default, 2) and in the main process, and transformers' pipeline, one video at a
time (its default) and with ``batch_size=8``.

    python benchmarks/predict.py --quick --out /tmp/predict.json     # about a minute on 2 CPU cores
    python benchmarks/predict.py --videos 120 --repeats 3 --out benchmarks/results/predict_cpu.json

Times are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import common  # noqa: F401  (puts src/ on the path)
from common import add_run_args, start, time_interleaved, write_json

FRAMES = 8


def make_model(folder: Path) -> None:
    import tubelet
    from tubelet.data.synth import CLASSES
    from tubelet.models.info import ModelInfo, Preprocessing

    torch.manual_seed(0)
    model = tubelet.create_model("vivit_micro", num_classes=len(CLASSES), num_frames=FRAMES)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)  # a zero head ranks every class alike
    model.info = ModelInfo(class_names=[CLASSES], preprocessing=Preprocessing(FRAMES, (64, 64), frame_stride=1))
    tubelet.save_model(model, folder / "ckpt")
    from tubelet.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", "--from", "tubelet", str(folder / "ckpt"), "--to", "hf",
                     "--out", str(folder / "hf")]) == 0


def make_videos(folder: Path, count: int) -> list[Path]:
    """``count`` built-in videos (64x64), each cut to its first FRAMES frames."""
    from tubelet.data import index_video, read_frames
    from tubelet.data.synth import SynthConfig, generate, write_mp4

    per_class = -(-count // 10)
    source = generate(folder / "synth", SynthConfig(videos_per_class=per_class, val_videos_per_class=0),
                      progress=False, workers=2)
    out = folder / "videos"
    out.mkdir()
    paths = []
    for i, p in enumerate(sorted(source.rglob("*.mp4"))[:count]):
        frames = read_frames(p, np.arange(min(FRAMES, index_video(p).num_frames)))
        write_mp4(out / f"{i:04d}.mp4", frames, fps=8)
        paths.append(out / f"{i:04d}.mp4")
    return paths


def tubelet_predict(model: Path, folder: Path, workers: int, device: str):
    from tubelet.cli import main

    def run():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
            status = main(["predict", str(model), str(folder), "--jsonl", "--stride", "1", "--views", "1",
                           "--crops", "1", "--workers", str(workers), "--device", device])
        assert status == 0
        return [json.loads(line) for line in buffer.getvalue().splitlines()]
    return run


def hf_pipeline(model: Path, videos: list[Path], batch_size: int, device: str):
    import transformers

    pipe = transformers.pipeline("video-classification", model=str(model), device=device)

    def run():
        return pipe([str(v) for v in videos], frame_sampling_rate=1, top_k=5, batch_size=batch_size)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=120, help="videos in the folder (default: 120)")
    p.add_argument("--quick", action="store_true", help="16 videos, 1 repeat: about a minute on 2 idle CPU cores")
    add_run_args(p, warmup=1, repeats=3)
    args = p.parse_args()
    if args.quick:
        args.videos, args.repeats = 16, 1
    device, env = start(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp)
        videos = make_videos(tmp, args.videos)
        fns = {
            "tubelet predict (2 decoding workers)": tubelet_predict(tmp / "ckpt", tmp / "videos", 2, device.type),
            "tubelet predict (decoding in-process)": tubelet_predict(tmp / "ckpt", tmp / "videos", 0, device.type),
            "tubelet predict on the hf export": tubelet_predict(tmp / "hf", tmp / "videos", 2, device.type),
            "transformers pipeline (batch 1)": hf_pipeline(tmp / "hf", videos, 1, device.type),
            "transformers pipeline (batch 8)": hf_pipeline(tmp / "hf", videos, 8, device.type),
        }
        # Same model, same frames: the same top labels before anything is timed.
        ours, theirs = next(iter(fns.values()))(), fns["transformers pipeline (batch 1)"]()
        agree = sum(o["heads"][0]["top"][0]["label"] == t[0]["label"] for o, t in zip(ours, theirs))
        worst = max(abs(o["heads"][0]["top"][0]["score"] - t[0]["score"]) for o, t in zip(ours, theirs))
        print(f"{len(videos)} videos of {FRAMES} frames, 64x64; top-1 agrees on {agree}/{len(videos)}, "
              f"largest top-1 score difference {worst:.2e}")
        timings = time_interleaved(fns, device, warmup=args.warmup, repeats=args.repeats, min_repeat_ms=0)
    base = timings["transformers pipeline (batch 1)"]
    rows = []
    print(f"\n| contender | median s per {len(videos)} videos (IQR) | videos/s | vs transformers (batch 1) |")
    print("| --- | --- | --- | --- |")
    for name, t in timings.items():
        if isinstance(t, str):
            print(f"| {name} | failed: {t} | | |")
            rows.append({"name": name, "error": t})
            continue
        ratio = base.median / t.median if not isinstance(base, str) else float("nan")
        rate = len(videos) / (t.median / 1e3)
        print(f"| {name} | {t.median / 1e3:.2f} ({t.quantile(0.25) / 1e3:.2f}-{t.quantile(0.75) / 1e3:.2f}) | "
              f"{rate:.1f} | {ratio:.2f}x |")
        rows.append({"name": name, "videos": len(videos), "videos_per_s": rate, "vs_transformers_batch1": ratio,
                     **t.summary()})
    write_json(args.out, {"environment": env, "agreement": {"top1_agree": agree, "videos": len(videos),
                                                            "max_top1_score_diff": worst}, "rows": rows})


if __name__ == "__main__":
    main()
