"""``tubelet data synth`` (the built-in motion dataset) and ``tubelet data inspect`` (a data spec)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from .formats import FORMATS


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="video datasets: the built-in one, inspecting yours",
                                 description="Video datasets: generate the built-in motion dataset, "
                                             "or inspect a folder / annotation file.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 0)[1])

    synth = sub.add_parser("synth", help="generate the built-in motion dataset (H.264 MP4 + CSV)",
                           description="Write procedurally generated clips whose class is their "
                                       "motion (each class paired with its time-reversal) as H.264 "
                                       "MP4 files with Kinetics-style CSV annotations.")
    synth.add_argument("out", nargs="?", help="new folder to write (default: the cache, "
                                              "$TUBELET_CACHE or ~/.cache/tubelet/synth-<hash>)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--videos-per-class", type=int, default=50, help="training videos per class")
    synth.add_argument("--val-videos-per-class", type=int, default=20)
    synth.add_argument("--order-videos-per-class", type=int,
                       help="training videos per class of the event-order pair (default: "
                            "--videos-per-class; learning the order takes thousands)")
    synth.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    synth.add_argument("--frames", type=int, default=16, help="frames per video")
    synth.add_argument("--fps", type=int, default=8)
    synth.add_argument("--distractors", type=int, default=1, help="at most this many per video")
    synth.add_argument("--noise", type=float, default=6.0, help="largest pixel-noise std (0-255)")
    synth.add_argument("--event-order", action="store_true",
                       help="add the event-order pair (swaying then bobbing / bobbing then "
                            "swaying), which a bag of two-frame windows cannot separate")
    synth.add_argument("--captions", action="store_true",
                       help="also write captions.csv (video,caption,split; five sentences per video "
                            "naming the object, its motion and direction) for captioning")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    synth.set_defaults(func=_cmd_synth)

    inspect = sub.add_parser("inspect", help="detected layout, videos per class, files left out",
                             description="Read a data spec (a class folder, an annotation file, or "
                                         "a dataset folder as downloaded: Kinetics, "
                                         "Something-Something v2, EPIC-KITCHENS-100, Moments in "
                                         "Time, UCF101 / HMDB51 split lists, train/ + val/ "
                                         "folders), count videos per class, and index every file "
                                         "the way the loaders do.")
    inspect.add_argument("path")
    inspect.add_argument("--val", help="validation annotation file or class folder (default: the "
                                       "dataset folder's own)")
    inspect.add_argument("--format", choices=list(FORMATS))
    inspect.add_argument("--root", help="folder the videos are under (default: the dataset "
                                        "folder's, or beside the annotation file)")
    inspect.add_argument("--missing", choices=["error", "skip"], default="skip",
                         help="a video the annotations list but that does not exist: stop, or "
                              "list it and go on (default: skip)")
    inspect.add_argument("--no-probe", action="store_true", help="skip opening every video")
    inspect.set_defaults(func=_cmd_inspect)


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..fileio import cache_root
    from .synth import SynthConfig, builtin_dataset, generate
    try:
        config = SynthConfig(seed=args.seed, videos_per_class=args.videos_per_class,
                             val_videos_per_class=args.val_videos_per_class, size=args.size,
                             frames=args.frames, fps=args.fps, distractors=args.distractors,
                             noise=args.noise, event_order=args.event_order,
                             order_videos_per_class=args.order_videos_per_class, captions=args.captions)
    except ValueError as e:
        raise UsageError(str(e)) from None
    start = time.perf_counter()
    cached = not args.out and (cache_root() / f"synth-{config.digest()}" / "metadata.json").is_file()
    try:
        out = generate(args.out, config, workers=args.workers) if args.out else \
            builtin_dataset(config, workers=args.workers)
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    if cached:
        print(f"{out}: already generated (the cache is keyed by the parameters)")
        return 0
    count = sum(config.train_videos(c) + config.val_videos_per_class for c in range(len(config.classes)))
    order = (f"; {config.order_videos_per_class} training videos per class of the event-order pair"
             if config.order_videos_per_class else "")
    print(f"{out}: {count} videos ({config.videos_per_class} + {config.val_videos_per_class} per "
          f"class{order}, {config.frames} frames at {config.size}x{config.size}) in "
          f"{time.perf_counter() - start:.1f} s; train.csv / validate.csv (Kinetics format), "
          "classes.txt, metadata.json" + (", captions.csv" if config.captions else ""))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from .dataset import check_training_labels, load_splits
    from .decode import DecodeError, index_video
    from .formats import AnnotationError

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    try:
        train, val, layout = load_splits(path, args.val, format=args.format, root=args.root,
                                         missing=args.missing)
    except AnnotationError as e:
        raise UsageError(str(e)) from None
    if layout is not None:
        print(f"{path}: {layout.name} layout")
    elif val is None:
        print(f"{path}: no validation split (tubelet train takes --val PATH or --val-split 0.1)")
    for split, ann in (("train", train), ("val", val)):
        if ann is None:
            continue
        print(f"{split}: {ann.source} ({ann.format} format), {len(ann.records)} videos, "
              f"{', '.join(str(n) for n in ann.num_classes)} classes")
        for head, names in enumerate(ann.class_names):
            counts = Counter(r.label[head] if isinstance(r.label, tuple) else r.label
                             for r in ann.records)
            shown = [f"  {i:>4} {names[i] if i < len(names) else '?'}: {counts[i]}"
                     for i in sorted(counts)]
            print("\n".join(shown[:50]) + (f"\n  ... {len(shown) - 50} more" if len(shown) > 50 else ""))
        if split == "train":
            try:
                check_training_labels(ann)
            except AnnotationError as e:
                print(f"  cannot train on this: {e}")
        for name in ann.empty_classes:
            print(f"  empty class folder: {name} (no video; the class gets no example)")
        for missing in ann.missing:
            print(f"  missing: {missing}")
        for ignored in ann.ignored:
            print(f"  ignored (not a video file): {ignored}")
        if args.no_probe:
            continue
        bad, frames = [], []
        for video in sorted({r.path for r in ann.records}):
            try:
                frames.append(index_video(video).num_frames)  # the loaders' own index
            except DecodeError as e:
                bad.append(str(e))
        if frames:
            print(f"  frames per video: min {min(frames)}, median {sorted(frames)[len(frames) // 2]}, "
                  f"max {max(frames)}")
        print(f"  {len(bad)} file(s) cannot be decoded" + (" (the loaders skip them):" if bad else ""))
        for line in bad:
            print(f"    {line}")
    return 0
