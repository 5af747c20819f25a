"""A `tubelet serve` process and a client for it in the standard library: what the tests and the
load benchmark start and talk to (``urllib`` / ``http.client`` only, so a client needs nothing
from the serve extra).

    with running("runs/default", "--batch", "4") as server:
        status, body, headers = server.upload(Path("clip.mp4").read_bytes())
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import ServeError

STARTED = re.compile(r"on (http://\S+/) \(.* in (\S+); Ctrl-C stops\)")


def multipart(data: bytes, filename: str, media_type: str, fields: dict[str, str]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart form with ``data`` as its ``video`` file, as a browser sends it."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{filename}"\r\n'
                 f"Content-Type: {media_type}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Served:
    """A running server: its base URL, its upload folder, the process."""

    url: str
    uploads: Path
    process: subprocess.Popen

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def get(self, path: str) -> tuple[int, dict]:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
            return r.status, json.loads(r.read())

    def post(self, body, content_type: str | None, path: str = "v1/classify",
             timeout: float = 120) -> tuple[int, dict, http.client.HTTPMessage]:
        """(status, JSON body, headers (case-insensitive)) of a POST; ``body`` may be an
        iterable of chunks (sent chunked)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("POST", "/" + path, body=body,
                               headers={"Content-Type": content_type} if content_type else {})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}"), response.msg
        finally:
            connection.close()

    def upload(self, data: bytes, filename: str = "clip.mp4", media_type: str = "video/mp4",
               fields: dict[str, str] | None = None, path: str = "v1/classify"):
        """:meth:`post` of ``data`` as the form's ``video`` file, with other ``fields``."""
        return self.post(*multipart(data, filename, media_type, fields or {}), path=path)


@contextlib.contextmanager
def running(checkpoint: str | Path, *flags: str, env: dict[str, str] | None = None, log: Path | None = None,
            timeout: float = 60) -> Iterator[Served]:
    """`python -m tubelet serve CHECKPOINT --port 0 FLAGS` on loopback until /healthz answers;
    stopped with Ctrl-C (SIGINT) at the end. Its stderr goes to ``log`` (default: discarded)."""
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log or os.devnull, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "tubelet", "serve", str(checkpoint), "--port", "0",
                                    "--host", "127.0.0.1", *flags], stdout=subprocess.PIPE, stderr=stderr,
                                   text=True, env=env)

    def failed(what: str) -> ServeError:
        process.kill()
        process.wait()
        return ServeError(f"tubelet serve {what}: {log.read_text()[-3000:] if log else '(stderr not kept)'}")

    try:
        found = STARTED.search(process.stdout.readline())
        if not found:
            raise failed("did not start")
        served = Served(found.group(1), Path(found.group(2)), process)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if served.get("healthz")[0] == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise failed("did not answer /healthz")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(2)  # SIGINT: Ctrl-C
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
