"""`tubelet caption MODEL VIDEO...`: captions of videos by a trained captioner.

Each video gives one clip, the centre one at the checkpoint's frames and stride, as in validation;
videos are decoded in worker processes and captioned in batches (rows of different lengths
stop at their own <eos>). A bad file is reported in one line and skipped; the exit status is
1 if any failed.
"""

from __future__ import annotations

import argparse
import sys

from ..devices import add_device_argument
from ..errors import UsageError
from ..fileio import dumps_json


def _cmd_caption(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..generate import Sampling
    from ..inference.commands import video_files
    if args.batch_size < 1 or args.k < 1 or args.beams < 1:
        raise UsageError("--batch-size, --k and --beams must be at least 1")
    from .pipeline import CaptionPipeline
    try:
        sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except ValueError as e:
        raise UsageError(str(e)) from None
    pipe = CaptionPipeline(args.model, device=args.device, draft=args.draft, k=args.k, sampling=sampling,
                           seed=args.seed, max_words=args.max_words, batch_size=args.batch_size,
                           workers=args.workers, beams=args.beams, length_penalty=args.length_penalty)
    videos = video_files(args.videos)
    answered, failed = [], 0
    bar = tqdm(total=len(videos), desc="captioning", unit="video", disable=None, file=sys.stderr)
    for entry in pipe.results(videos):
        bar.update()
        if "error" in entry:
            failed += 1
            bar.clear()
            print(f"tubelet caption: skipped {entry['error']}", file=sys.stderr)
        elif args.json:
            answered.append(entry)
        else:
            bar.clear()
            print(f"{entry['video']}: {entry['caption']}")
    bar.close()
    if args.json:
        print(dumps_json(answered))
    if failed:
        print(f"tubelet caption: {failed} of {len(videos)} video(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..inference.commands import MODEL_HELP
    p = sub.add_parser("caption", help="caption videos with a trained captioner",
                       description="Caption videos with a captioner trained by `tubelet train --task caption`: "
                                   "greedy by default, sampled, or by beam search; --draft for exact speculative "
                                   "decoding.")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("videos", nargs="+", metavar="VIDEO",
                   help="video files, folders (searched recursively), globs, or .txt files listing paths")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); above: sampling")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest words (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample within this probability mass (1: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")
    p.add_argument("--draft", metavar="MODEL", help="a smaller captioner with the same vocabulary, or truncated:L "
                                                    "(the model's first L decoder blocks): speculative decoding, "
                                                    "exact (the output has the model's distribution)")
    p.add_argument("--k", type=int, default=4, help="draft words per speculative step (default: 4)")
    p.add_argument("--beams", type=int, default=1,
                   help="beam search with this many beams: the caption the model scores best, not word by "
                        "word (default: 1, greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search ranks captions by log-prob / length^this: 0 favours short captions, "
                        "1 (default) compares the mean log-prob per word")
    p.add_argument("--max-words", type=int, help="longest caption (default: the model's caption length)")
    p.add_argument("--json", action="store_true", help="print one JSON list of {video, caption}")
    p.add_argument("--batch-size", type=int, default=16, help="videos captioned together (default: 16)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: decode here; default: 2)")
    add_device_argument(p)
    p.set_defaults(func=_cmd_caption)
