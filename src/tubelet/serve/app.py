"""The web application of `tubelet serve`: a Starlette app around one model (:mod:`.runners`).

A request to ``POST /v1/classify`` goes through four steps, each bounded:
1. admission: at most ``queue + batch`` requests are in the server at once (uploading, decoding,
   waiting or being scored); one more is answered 503 with ``Retry-After``;
2. the upload is streamed to a file in the server's temporary folder under the size limit
   (:func:`.uploads.receive_upload`), the file removed when the request ends, whatever happens;
3. the file is decoded into the model's clips (a classifier's test views, a captioner's centre
   clip) in one of a few decoding threads;
4. the clips wait for the model thread (:class:`.batching.Batcher`), which runs up to ``batch``
   requests in one call. A client that disconnects before its turn has its job cancelled. With
   ``explain`` the model thread runs ``Pipeline.explain`` on the file instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import DataError
from ..inference.pipeline import load_views
from . import ServeError
from .batching import Batcher
from .page import PAGE
from .runners import Captions, Classifier, Job
from .uploads import HOW, Upload, UploadError, looks_like_video, receive_upload

log = logging.getLogger(__name__)
TRUE = {"1", "true", "yes", "on"}


class ClientGone(Exception):
    """The client disconnected while its request waited for a decoding or the model thread."""


@dataclass
class Settings:
    name: str  # the model's name, as the responses give it
    folder: Path  # where uploads are written (created and removed by the caller)
    max_upload_bytes: int = 100 * 2**20
    queue: int = 32
    batch: int = 8
    decode_threads: int = 2


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def bad_video(upload: Upload, error: Exception) -> UploadError:
    """A file FFmpeg could not decode: 422 when it starts like a video container (damaged or
    truncated), else 415 (not a video). The message names the client's file, not the temporary one."""
    message = str(error).replace(str(upload.path), upload.name)
    with open(upload.path, "rb") as f:
        head = f.read(512)
    if looks_like_video(head):
        return UploadError(422, message)
    return UploadError(415, f"{upload.describe()} is not a video: FFmpeg finds no video in it and it starts like "
                            f"no video container ({message}); {HOW}")


class Server:
    """The app's state: the model, its thread, the decoding threads, the admission count."""

    def __init__(self, model: Classifier | Captions, settings: Settings):
        self.model, self.settings = model, settings
        self.in_flight = 0  # requests admitted and not yet answered (touched on the event loop only)
        self.batcher: Batcher | None = None
        self.decoders: ThreadPoolExecutor | None = None
        self.description = model.describe(settings.name)

    @property
    def capacity(self) -> int:
        return self.settings.queue + self.settings.batch

    def start(self) -> None:
        self.batcher = Batcher(self.model.run, self.settings.batch)
        self.decoders = ThreadPoolExecutor(self.settings.decode_threads, thread_name_prefix="tubelet-decode")

    def stop(self) -> None:
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self.batcher.close()

    # -- requests -------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the batches ahead at the recent time per batch."""
        ahead = math.ceil(self.in_flight / self.settings.batch)
        return max(1, min(60, math.ceil(ahead * self.batcher.seconds_per_batch)))

    async def classify(self, request: Request) -> Response:
        start = time.perf_counter()
        if self.in_flight >= self.capacity:
            return _error(503, f"the server is busy ({self.in_flight} requests in progress, at most "
                               f"{self.capacity}: --queue {self.settings.queue} + --batch {self.settings.batch}); "
                               "retry after the Retry-After seconds", {"Retry-After": str(self.retry_after())})
        self.in_flight += 1
        upload = Upload(self.settings.folder / f"upload-{uuid.uuid4().hex}")
        try:
            upload = await receive_upload(request.headers, request.stream(), upload.path,
                                          self.settings.max_upload_bytes)
            explain = (request.query_params.get("explain") or upload.fields.get("explain", "")).lower() in TRUE
            if explain and not self.model.explains:
                raise UploadError(400, f"{self.settings.name} gives no attention maps (a captioner, or a tubelet "
                                       "without Pipeline.explain): ask without explain")
            if explain:
                job = Job(explain=upload.path)
            else:
                job = Job(views=await self._wait(request, self.decoders.submit(load_views, upload.path,
                                                                                self.model.clip)))
            result = await self._wait(request, self.batcher.submit(job))
            return JSONResponse({**result, "model": self.settings.name,
                                 "seconds": round(time.perf_counter() - start, 4)})
        except UploadError as e:
            return _error(e.status, str(e))
        except (ClientDisconnect, ClientGone):
            return Response(status_code=499)  # the client left (nobody reads this answer)
        except DataError as e:
            e = bad_video(upload, e)
            return _error(e.status, str(e))
        except Exception as e:  # noqa: BLE001 - a bug or the model failing: an answer, not a dropped connection
            log.exception("POST /v1/classify failed")
            return _error(500, f"the server failed on this request: {type(e).__name__}: {e}")
        finally:
            upload.path.unlink(missing_ok=True)
            self.in_flight -= 1

    @staticmethod
    async def _wait(request: Request, future: Future) -> Any:
        """The future's result; :class:`ClientGone` when the client disconnects first, the future
        then cancelled if it has not started, else awaited (so that its file is no longer read)."""
        waiting = asyncio.wrap_future(future)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.2)
            if done:
                return waiting.result()
            if await request.is_disconnected():
                if not future.cancel():
                    await asyncio.wait({waiting})
                raise ClientGone

    async def model_info(self, request: Request) -> Response:
        return JSONResponse(self.description)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.settings.name, "in_flight": self.in_flight,
                             "capacity": self.capacity, "queued": self.batcher.queued(),
                             "batches": self.batcher.batches, "answered": self.batcher.items})

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail)


def create_app(model: Classifier | Captions, settings: Settings) -> Starlette:
    """The application serving ``model`` (see :func:`.runners.load_runner`); uploads go to
    ``settings.folder``, which must exist."""
    server = Server(model, settings)

    @asynccontextmanager
    async def lifespan(app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = Starlette(routes=[Route("/", server.page), Route("/healthz", server.health),
                            Route("/v1/model", server.model_info),
                            Route("/v1/classify", server.classify, methods=["POST"])],
                    exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    app.state.server = server
    return app


# ---------------------------------------------------------------------------- running it
def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), IPv4 or IPv6."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port, or 0 for any "
                         "free one") from None
    sock.listen(2048)
    return sock


def serve(model: Classifier | Captions, settings: Settings, host: str, port: int) -> None:
    """Serve ``model`` on ``host:port`` until Ctrl-C; prints the address it listens on first."""
    import uvicorn

    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"tubelet serve: {settings.name} on http://{shown}:{bound}/ (uploads up to "
          f"{settings.max_upload_bytes / 2**20:g} MB, in {settings.folder}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(create_app(model, settings), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
