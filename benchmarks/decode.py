"""Decoding throughput: clips/s and frames/s of training and evaluation sampling.

Writes H.264 test videos at each resolution (PyAV, libx264), then reads them through the real
data path (VideoClips + the loader: seek, decode, convert, crop/resize in the workers) with 0, 1, 2,
... worker processes. Prints a Markdown table and writes the numbers as JSON. No assertions.

    python benchmarks/decode.py --workers 0 1 2 --json benchmarks/decode.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tubelet.data import ClipConfig, VideoClips, make_loader, read_annotations  # noqa: E402


def write_videos(folder: Path, width: int, height: int, count: int, frames: int, fps: int = 25) -> Path:
    """``count`` H.264 videos of moving noise blocks; returns a list file for them."""
    rng = np.random.default_rng(0)
    lines = []
    for k in range(count):
        path = folder / f"{width}x{height}_{k}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23", "g": "50"}  # keyframe every 2 s
            base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
            base = base.repeat(8, 0).repeat(8, 1)
            for i in range(frames):
                image = np.roll(base, 3 * i, axis=1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        lines.append(f"{path.name} {k % 2}")
    listing = folder / f"{width}x{height}.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def measure(dataset: VideoClips, workers: int, items: int, batch_size: int) -> float:
    """Seconds to load ``items`` items (after the workers' first batch, so start-up is excluded)."""
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, seed=0,
                         persistent_workers=False, pin_memory=False)
    loader.sampler.drop_last, loader.sampler.pad = False, True
    loaded, start = 0, None
    epoch = 0
    while loaded < items:
        loader.set_epoch(epoch)
        for batch in loader:
            if start is None:  # the first batch includes worker start-up
                start = time.perf_counter()
                continue
            loaded += len(batch["index"])
            if loaded >= items:
                break
        epoch += 1
    return (time.perf_counter() - start) / loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", nargs="+", default=["320x240", "1280x720"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=4, help="videos per resolution")
    parser.add_argument("--video-frames", type=int, default=100, help="frames per video (25 fps)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="crop size")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--train-items", type=int, default=24)
    parser.add_argument("--eval-items", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            width, height = map(int, resolution.split("x"))
            t0 = time.perf_counter()
            listing = write_videos(Path(tmp), width, height, args.videos, args.video_frames)
            print(f"wrote {args.videos} videos at {resolution} in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
            annotations = read_annotations(listing)
            clip = ClipConfig(num_frames=args.frames, stride=args.stride, size=args.size,
                              views=args.views, crops=args.crops)
            for mode, items, batch in (("train", args.train_items, 4), ("eval", args.eval_items, 1)):
                dataset = VideoClips(annotations, clip, train=mode == "train")
                frames_per_item = args.frames * (args.views if mode == "eval" else 1)
                for workers in args.workers:
                    seconds = measure(dataset, workers, items, batch)
                    rows.append({"resolution": resolution, "mode": mode, "workers": workers,
                                 "clips_per_s": 1 / seconds,
                                 "frames_per_s": frames_per_item / seconds,
                                 "items": items})
                    print(f"{resolution} {mode} workers={workers}: {1 / seconds:.1f} items/s",
                          file=sys.stderr)

    header = (f"{args.frames} frames at stride {args.stride}, crop {args.size}; evaluation items are "
              f"{args.views} views x {args.crops} crops; frames/s counts the frames of the returned "
              "clips (views x frames per evaluation item), not the extra frames decoded after a "
              "keyframe")
    print(f"\n{header}\n")
    print("| resolution | sampling | workers | items/s | clip frames/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['resolution']} | {r['mode']} | {r['workers']} | {r['clips_per_s']:.1f} | "
              f"{r['frames_per_s']:.0f} |")
    if args.json:
        meta = {"torch": torch.__version__, "av": av.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "args": {k: str(v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
