"""An upload, streamed to a file under a size limit: a multipart form's ``video`` field or a raw
request body, and what to answer when it is too large, empty or not a video.

The limit is on the request body as it arrives: a declared ``Content-Length`` over it is refused
before anything is read, and a body without one (chunked) is refused as soon as the bytes read
pass it, so a large upload never reaches the disk or memory whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from . import ServeError

VIDEO_FIELD = "video"
HOW = ("send the video as the multipart form field `video` (curl -F video=@clip.mp4 ...) or as the raw body "
       "with Content-Type video/* or application/octet-stream (curl --data-binary @clip.mp4 -H "
       "'Content-Type: video/mp4' ...)")
NOT_VIDEO_TYPES = ("text/", "image/", "audio/", "application/json", "application/x-www-form-urlencoded")
MAX_FIELD_BYTES = 1024  # a form field other than the video (e.g. explain=1)


class UploadError(ServeError):
    """A request the server answers with ``status`` and this message (413, 415, 400)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """What a request carried: the video's bytes in ``path``, the client's file name and media
    type, its size, and the form's other fields."""

    path: Path
    name: str = "the upload"
    media_type: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name} ({self.media_type or 'no media type'}, {self.size:,} bytes)"


def _declared_not_video(media_type: str | None) -> bool:
    return bool(media_type) and media_type.lower().startswith(NOT_VIDEO_TYPES)


def _megabytes(n: int) -> str:
    return f"{n / 2**20:g} MB"


def looks_like_video(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a video container FFmpeg reads: ISO BMFF
    (mp4, mov, 3gp), RIFF AVI, Matroska / WebM, Ogg, FLV, ASF (wmv), MPEG program or
    transport streams. A damaged file of one of these is a bad video (422), anything else is not
    a video at all (415)."""
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
            or (head[:4] == b"RIFF" and head[8:11] == b"AVI")
            or head.startswith((b"\x1a\x45\xdf\xa3", b"OggS", b"FLV", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",
                                b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))
            or (head[:1] == b"\x47" and (len(head) < 189 or head[188:189] == b"\x47")))


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise UploadError(413, f"the request body is larger than this server's limit of {_megabytes(limit)} "
                                   "(tubelet serve --max-upload-mb): send a shorter or smaller video")
        yield chunk


async def receive_upload(headers, chunks: AsyncIterator[bytes], path: Path, limit: int) -> Upload:
    """Stream a request (its ``headers`` and body ``chunks``) into ``path``; the caller removes
    ``path`` whatever happens. Raises :class:`UploadError` for a body over ``limit`` bytes (413),
    a declared media type that is not a video (415), or an empty body or form without a video
    (400)."""
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise UploadError(413, f"the request body ({int(length):,} bytes) is larger than this server's limit of "
                               f"{_megabytes(limit)} (tubelet serve --max-upload-mb): send a shorter or smaller video")
    content_type = headers.get("content-type", "")
    body = _limited(chunks, limit)
    if content_type.lower().startswith("multipart/form-data"):
        upload = await _receive_form(content_type, body, path)
    else:
        media_type = content_type.split(";")[0].strip() or None
        if _declared_not_video(media_type):
            raise UploadError(415, f"a {media_type} body is not a video: {HOW}")
        upload = Upload(path, media_type=media_type)
        with open(path, "wb") as out:
            async for chunk in body:
                out.write(chunk)
                upload.size += len(chunk)
    if upload.size == 0:
        raise UploadError(400, f"the upload is empty (no video bytes): {HOW}")
    return upload


async def _receive_form(content_type: str, body: AsyncIterator[bytes], path: Path) -> Upload:
    """The ``video`` field of a multipart form into ``path``, the other (short) fields as text."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(400, f"a multipart/form-data body without a boundary: {HOW}")
    upload = Upload(path)
    found = False
    part: dict = {}
    out = open(path, "wb")

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["field"].decode("latin-1").lower()] = part["value"].decode("latin-1")
        part["field"], part["value"] = b"", b""

    def on_headers_finished() -> None:
        nonlocal found
        _, disposition = parse_options_header(part["headers"].get("content-disposition", ""))
        part["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        part["is_video"] = part["name"] == VIDEO_FIELD and not found
        if part["is_video"]:
            found = True
            media_type = part["headers"].get("content-type", "").split(";")[0].strip() or None
            upload.name = disposition.get(b"filename", b"").decode("utf-8", "replace") or upload.name
            upload.media_type = media_type
            if _declared_not_video(media_type):
                raise UploadError(415, f"{upload.name} is {media_type}, not a video: {HOW}")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("is_video"):
            out.write(data[start:end])
            upload.size += end - start
        elif len(part["data"]) + end - start <= MAX_FIELD_BYTES:
            part["data"] += data[start:end]

    def on_part_end() -> None:
        if part.get("name") and part["name"] != VIDEO_FIELD:
            upload.fields[part["name"]] = part["data"].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as e:  # python-multipart's parse errors: a damaged form, not a damaged video
        raise UploadError(400, f"the multipart form cannot be read ({e}): {HOW}") from None
    finally:
        out.close()
    if not found:
        fields = ", ".join(sorted(upload.fields)) or "none"
        raise UploadError(400, f"the form has no `video` field (fields: {fields}): {HOW}")
    return upload
