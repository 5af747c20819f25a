"""`tubelet predict` (the pipeline over files, folders, globs and lists) and `tubelet export`."""

from __future__ import annotations

import argparse
import csv
import glob
import sys
from pathlib import Path
from typing import Any, Iterator

from ..config import RunConfig, add_config_arguments, flag_values, validate
from ..devices import add_device_argument
from ..errors import DataError, UsageError
from ..fileio import dumps_json

VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv",
                  ".3gp", ".ts"}
LIST_SUFFIXES = {".txt", ".lst"}
MODEL_HELP = "a run folder (its final/ model), a checkpoint folder, or a transformers export folder"
INFERENCE_FIELDS = {"clip.stride", "clip.views", "clip.crops", "clip.average", "runtime.precision", "data.workers"}
INFERENCE_ALIASES = {"views": "clip.views", "crops": "clip.crops", "stride": "clip.stride",
                     "average": "clip.average", "precision": "runtime.precision", "workers": "data.workers"}


def _list_file(path: Path) -> list[str]:
    """Paths of a text file, one a line ('#' comments and blank lines skipped), relative to the file."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def video_files(items: list[str]) -> list[Path]:
    """What a user names, as video files in order: files as given (a missing or bad one is
    reported when it is read), folders searched recursively (sorted), globs (``'data/**/*.mp4'``,
    quoted so the shell leaves them) and ``.txt`` / ``.lst`` files listing paths."""
    out: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            out += video_files(_list_file(path))
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                raise DataError(f"{item}: no file matches this pattern")
            out += video_files(matches)
        else:
            out.append(path)
    return out


# ---------------------------------------------------------------------------- output
def _csv_rows(entry: dict[str, Any]) -> Iterator[list[Any]]:
    spans = entry.get("windows") or [{"start": "", "end": "", "heads": entry["heads"]}]
    for w in spans:
        for head in w["heads"]:
            for rank, t in enumerate(head["top"], 1):
                yield [entry["video"], w["start"], w["end"], head["head"] or "", rank, t["label"],
                       "" if t["index"] is None else t["index"], f"{t['score']:.6g}"]
    if entry.get("windows"):  # the whole video after its windows
        for head in entry["heads"]:
            for rank, t in enumerate(head["top"], 1):
                yield [entry["video"], "", "", head["head"] or "", rank, t["label"],
                       "" if t["index"] is None else t["index"], f"{t['score']:.6g}"]


def _print_table(entry: dict[str, Any]) -> None:
    print(entry["video"])

    def heads(hs: list[dict[str, Any]], indent: str) -> None:
        for head in hs:
            if head["head"]:
                print(f"{indent}[{head['head']}]")
            for rank, t in enumerate(head["top"], 1):
                print(f"{indent}  {rank}. {t['label']:<28} {100 * t['score']:5.1f}%")

    for w in entry.get("windows", []):
        top = w["heads"][-1 if len(w["heads"]) > 1 else 0]["top"][0]
        span = f"{w['start']:.2f}-{w['end']:.2f} s"
        print(f"  {span:<16} {top['label']:<28} {100 * top['score']:5.1f}%")
    if entry.get("windows"):
        print("  whole video:")
    heads(entry["heads"], "    " if entry.get("windows") else "  ")


def _write_map(pipe, video: Path, folder: Path, stems: set[str]) -> dict[str, str]:
    """FOLDER/<stem>.png (the centre clip's frames, and its attention map over them) and
    FOLDER/<stem>.mp4 (the map over the clip, played); a stem met before gets -2, -3, ..."""
    from .explain import save_strip, save_video

    stem, n = video.stem, 1
    while stem in stems:
        n += 1
        stem = f"{video.stem}-{n}"
    stems.add(stem)
    folder.mkdir(parents=True, exist_ok=True)
    frames, heat = pipe.explained_view(video)
    return {"png": str(save_strip(folder / f"{stem}.png", frames, heat)),
            "mp4": str(save_video(folder / f"{stem}.mp4", frames, heat))}


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .pipeline import Pipeline
    from .windows import classify_windows

    cfg = validate(RunConfig().with_values(flag_values(args), "the command line"))
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k} must be at least 1")
    if args.hop is not None and args.window is None:
        raise UsageError("--hop needs --window SECONDS")
    if sum(map(bool, (args.json, args.jsonl, args.csv))) > 1:
        raise UsageError("choose one of --json, --jsonl and --csv")
    maps = Path(args.explain) if args.explain else None
    if maps is not None and maps.exists() and not maps.is_dir():
        raise UsageError(f"--explain {args.explain}: is a file; name a folder for the maps (it is created "
                         "if missing)")
    pipe = Pipeline(args.checkpoint, device=args.device, views=cfg.clip.views, crops=cfg.clip.crops,
                    average=cfg.clip.average, stride=cfg.clip.stride, top_k=args.top_k,
                    batch_size=args.batch_size, workers=cfg.data.workers, precision=cfg.runtime.precision)
    videos = video_files(args.videos)
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow(["video", "start", "end", "head", "rank", "label", "index", "score"])
    answered, failed = [], 0
    bar = tqdm(total=len(videos), desc="predicting", unit="video", disable=None, file=sys.stderr)

    if args.window is None:
        results = ((r.video, r.error, None if r.error else {"video": r.video, "heads": pipe.top(r.scores)})
                   for r in pipe.results(videos))
    else:
        def windowed():
            for video in videos:
                try:
                    w = classify_windows(pipe, video, args.window, args.hop)
                except (OSError, DataError) as e:
                    yield str(video), str(e), None
                    continue
                windows, whole = w.entries()
                yield w.video, None, {"video": w.video, "windows": windows, "heads": whole}
        results = windowed()

    stems: set[str] = set()
    for video, error, entry in results:
        bar.update()
        if error is not None:
            failed += 1
            bar.clear()
            print(f"tubelet predict: skipped {error if video in error else f'{video}: {error}'}", file=sys.stderr)
            continue
        if maps is not None:
            entry["explain"] = _write_map(pipe, Path(video), maps, stems)
        if args.json:
            answered.append(entry)
        elif args.jsonl:
            print(dumps_json(entry), flush=True)
        elif writer:
            writer.writerows(_csv_rows(entry))
        else:
            bar.clear()
            _print_table(entry)
    bar.close()
    if args.json:
        print(dumps_json(answered))
    if maps is not None and stems:
        print(f"tubelet predict: attention maps of {len(stems)} video(s) in {maps} (.png and .mp4)", file=sys.stderr)
    if failed:
        print(f"tubelet predict: {failed} of {len(videos)} video(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from .export import export_model

    model = load_model(args.checkpoint)
    out = Path(args.out) if args.out else Path(f"{Path(args.checkpoint).name or 'model'}-{args.format}")
    path = export_model(model, out, args.format, dynamic_batch=args.dynamic_batch, opset=args.opset)
    print(f"exported {args.checkpoint} to {path} ({args.format}; classes and preprocessing in "
          f"{path.parent / 'tubelet.json'})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="labels and scores of videos (files, folders, globs, lists; long videos by windows)",
                       description="Score each video with the multi-view protocol (the checkpoint's frames, stride "
                                   "and pixels; --views x --crops test views) and print its top labels, as "
                                   "tubelet.pipeline does. A file that cannot be read is reported in one line and "
                                   "skipped; the exit status is 1 if any was. --window/--hop classify a long video "
                                   "window by window, decoding one window at a time.")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("videos", nargs="+", metavar="VIDEO",
                   help="video files, folders (searched recursively), globs ('data/**/*.mp4', quoted) or .txt "
                        "files listing paths (one a line, relative to the list)")
    p.add_argument("--top-k", type=int, default=5, help="labels per video (default: 5)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON list, one object per video")
    out.add_argument("--jsonl", action="store_true", help="print one JSON object per line, as each video is done")
    out.add_argument("--csv", action="store_true", help="print CSV rows: video,start,end,head,rank,label,index,score")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="classify windows of this many seconds (each with its start and end) and the whole "
                        "video (the mean of the windows)")
    p.add_argument("--hop", type=float, metavar="SECONDS", help="seconds between window starts (default: --window)")
    p.add_argument("--explain", metavar="DIR",
                   help="also write where the model looked (attention rollout of each video's centre clip): "
                        "DIR/<video name>.png, the clip's frames with the map over them below, and "
                        "DIR/<video name>.mp4, the map over the clip as it plays (DIR is created if missing)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass, over videos (default: 16)")
    add_device_argument(p)
    add_config_arguments(p, defaults=RunConfig(), presets=False,
                         aliases=INFERENCE_ALIASES, only=INFERENCE_FIELDS)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a model to ONNX or a torch.export program",
                       description="Write MODEL as an ONNX file (onnxruntime runs it; pip install 'tubelet[onnx]') "
                                   "or a torch.export program (model.pt2), with tubelet.json beside it: the class "
                                   "names, heads and preprocessing. Input: (batch, 3, frames, height, width) "
                                   "normalised pixels; output: logits (batch, classes).")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--format", required=True, choices=["onnx", "exported-program"], help="what to write")
    p.add_argument("--out", help="output folder (default: <MODEL name>-<format>)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: a batch of 1)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: 18)")
    p.set_defaults(func=_cmd_export)
