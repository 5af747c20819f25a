"""`tubelet serve MODEL`: the HTTP server and its web page (the ``serve`` extra)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from ..devices import add_device_argument
from ..errors import UsageError
from ..inference.commands import MODEL_HELP
from . import ServeError


def _model_name(path: str) -> str:
    """The name a user knows the model by: its folder's (a run's, not its final/)."""
    from ..checkpoint import resolve_model_path
    folder, _ = resolve_model_path(path)
    folder = folder.resolve()
    if folder.parent.name == "checkpoints":  # an unfinished run's latest checkpoint
        return folder.parent.parent.name
    return folder.parent.name if folder.name == "final" else folder.name


def _cmd_serve(args: argparse.Namespace) -> int:
    for flag, value in (("--queue", args.queue), ("--batch", args.batch), ("--top-k", args.top_k)):
        if value < 1:
            raise UsageError(f"{flag} {value} must be at least 1")
    if not 0 < args.max_upload_mb:
        raise UsageError(f"--max-upload-mb {args.max_upload_mb} must be above 0")
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port} must be 0 (any free port) to 65535")
    try:
        import python_multipart  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ServeError(f"tubelet serve needs the serve extra ({e.name} is not installed): "
                         "pip install 'tubelet[serve]'") from None
    from .app import Settings, serve
    from .runners import load_runner

    name = _model_name(args.checkpoint)
    model = load_runner(args.checkpoint, device=args.device, top_k=args.top_k, batch=args.batch)
    folder = Path(tempfile.mkdtemp(prefix="tubelet-serve-"))
    try:
        serve(model, Settings(name=name, folder=folder, max_upload_bytes=int(args.max_upload_mb * 2**20),
                             queue=args.queue, batch=args.batch, decode_threads=min(4, os.cpu_count() or 1)),
              args.host, args.port)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an HTTP server and web page that classify uploaded videos",
                       description="Serve MODEL over HTTP: a web page at / to drop a video on and see its labels "
                                   "(and attention map), POST /v1/classify for programs, GET /v1/model and "
                                   "/healthz. Requests are scored in batches on one model thread, as "
                                   "tubelet.pipeline scores them. Needs pip install 'tubelet[serve]'; the API is "
                                   "in docs/serve.md.")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the "
                        "network, without authentication)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port, printed)")
    p.add_argument("--max-upload-mb", type=float, default=100.0,
                   help="largest request body in MB; a larger one is refused with 413 while it streams "
                        "(default: 100)")
    p.add_argument("--queue", type=int, default=32,
                   help="requests that may wait beyond the batch being scored (uploading, decoding or queued); "
                        "one more is answered 503 with Retry-After (default: 32)")
    p.add_argument("--batch", type=int, default=8, help="requests scored together in one model call (default: 8)")
    add_device_argument(p)
    p.add_argument("--top-k", type=int, default=5, help="labels per video (default: 5)")
    p.set_defaults(func=_cmd_serve)
