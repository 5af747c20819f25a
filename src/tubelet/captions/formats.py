"""Caption files -> a list of :class:`CaptionedVideo` (a video file, its captions, its split).

:func:`read_captions` detects the format from the file:

============  ==================================================================  =========================================
format        file                                                                videos (under ``videos_root``)
============  ==================================================================  =========================================
``csv``       CSV with ``video,caption`` columns (optional ``split``); one row    ``<root>/<video>`` (a relative or
              per caption, several rows per video                                 absolute path)
``json``      JSON list of ``{"video", "caption"}`` or ``{"video", "captions":    the same
              [...]}`` (optional ``"split"``)
``msrvtt``    MSR-VTT ``train_val_videodatainfo.json``: ``{"videos": [{"video_id",  ``<root>/<video_id>.mp4`` or
              "split"}], "sentences": [{"video_id", "caption"}]}``                 ``<root>/TrainValVideo/`` (``TestVideo/``)
``vatex``     VATEX JSON list of ``{"videoID": "<youtube id>_<start>_<end>",      ``<root>/<videoID>.<any video extension>``
              "enCap": [...]}``; the split from the file name (training, val...)
``webvid``    WebVid CSV with ``videoid, contentUrl, duration, page_dir, name``   ``<root>/<page_dir>/<videoid>.mp4``
              columns: ``name`` is the caption; split from the file name
============  ==================================================================  =========================================

``videos_root`` defaults to the caption file's folder (for MSR-VTT also its parent, where the
release keeps ``TrainValVideo/`` beside ``train_val_annotation/``). A folder is read through the
caption file it holds (``captions.csv``, as ``tubelet data synth --captions`` writes).

A video the file lists but that does not exist: with ``missing="error"`` (the default) a
:class:`~tubelet.data.AnnotationError` (a :class:`~tubelet.errors.DataError`) names the first few
and how many; with ``missing="skip"`` they are left out and listed in the result's ``missing``,
as the classification readers do (:mod:`tubelet.data.annotations`). A malformed file is an
``AnnotationError`` naming the file, the line or item, and what is wrong.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..data.annotations import (MISSING_ADVICE, AnnotationError, check_exists, csv_rows, is_video,
                                location, require_columns)

CAPTION_FORMATS = ("csv", "json", "msrvtt", "vatex", "webvid")
# The caption file a dataset folder holds, in the order they are looked for.
CAPTION_FILES = ("captions.csv", "captions.json", "train_val_videodatainfo.json")
WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")
MSRVTT_FOLDERS = ("", "TrainValVideo", "TestVideo")


@dataclass
class CaptionedVideo:
    """One video file, its reference captions (one or more) and its split (None: not given)."""

    path: Path
    captions: list[str]
    split: str | None = None


class CaptionList(list):
    """The videos of a caption file (a ``list[CaptionedVideo]``) and what was left out of it:
    ``missing``, the videos listed but not found (``missing="skip"``); ``format``, ``source``."""

    def __init__(self, videos: list[CaptionedVideo], format: str, source: str, missing: list[str]):
        super().__init__(videos)
        self.format, self.source, self.missing = format, source, missing


def read_captions(path: str | Path, videos_root: str | Path | None = None,
                  missing: str = "error") -> CaptionList:
    """The captioned videos of a caption file (or of the dataset folder holding one)."""
    if missing not in ("error", "skip"):
        raise AnnotationError(f"missing must be 'error' or 'skip', got {missing!r}")
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in CAPTION_FILES if (path / n).is_file()), None)
        if found is None:
            raise AnnotationError(f"{path}: no caption file in the folder (looked for "
                                  f"{', '.join(CAPTION_FILES)})")
        path = found
    if not path.is_file():
        raise AnnotationError(f"caption file {path} does not exist")
    format, entries = _read_entries(path)
    root = Path(videos_root) if videos_root is not None else path.parent
    videos: dict[Path, CaptionedVideo] = {}
    listed: dict[Path, str] = {}  # each video's first place in the file, for the messages
    located: dict[str, Path] = {}  # name in the file -> video file
    folder_index: dict[str, Path] = {}
    if format == "vatex" and root.is_dir():  # the videos by name without extension
        folder_index = {p.stem: p for p in sorted(root.iterdir()) if p.is_file() and is_video(p)}
    for where, name, caption, split in entries:
        if not isinstance(caption, str) or not caption.strip():
            raise AnnotationError(f"{where}: expected a caption (non-empty text), got {caption!r}")
        if name not in located:
            located[name] = _locate(root, name, format, folder_index, path if videos_root is None else None)
        video = located[name]
        listed.setdefault(video, where)
        entry = videos.setdefault(video, CaptionedVideo(video, [], split))
        if entry.split != split:
            raise AnnotationError(f"{where}: video {video} is in split {split!r} here but "
                                  f"{entry.split!r} at {listed[video]}")
        entry.captions.append(caption.strip())
    missing_list: list[str] = []
    kept = [v for v in videos.values() if check_exists(v.path, listed[v.path], "skip", missing_list)]
    if missing_list and missing == "error":
        shown = ", ".join(missing_list[:3]) + (", ..." if len(missing_list) > 3 else "")
        raise AnnotationError(f"{path}: {len(missing_list)} of {len(videos)} videos do not exist "
                              f"under {root}: {shown} ({MISSING_ADVICE})")
    if not kept and not missing_list:
        raise AnnotationError(f"{path}: no captions in the file")
    return CaptionList(kept, format, str(path), missing_list)


# One caption of the file: (where it is, the video's name in the file, the caption, the split).
Entry = tuple[str, str, object, str | None]


def _read_entries(path: Path) -> tuple[str, list[Entry]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            columns = next(csv.reader(f), [])
        if {"videoid", "page_dir", "name"} <= set(columns):
            require_columns(path, columns, WEBVID_COLUMNS)
            return "webvid", _webvid(path)
        require_columns(path, columns, ["video", "caption"])
        return "csv", _plain_csv(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{location(path, e.lineno)}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict) and "videos" in data and "sentences" in data:
            return "msrvtt", _msrvtt(path, data)
        if isinstance(data, list) and data and isinstance(data[0], dict) and "videoID" in data[0]:
            return "vatex", _vatex(path, data)
        if isinstance(data, list):
            return "json", _plain_json(path, data)
        raise AnnotationError(f"{path}: expected a JSON list of {{'video', 'caption(s)'}} objects "
                              "(or VATEX's), or MSR-VTT's {'videos', 'sentences'} object")
    raise AnnotationError(f"{path}: cannot tell the caption format (expected a .csv or .json file: "
                          f"{', '.join(CAPTION_FORMATS)})")


def _split_from_name(path: Path) -> str | None:
    """VATEX / WebVid name their split files (vatex_training_v1.0.json, results_2M_val.csv)."""
    name = path.stem.lower()
    for word, split in (("train", "train"), ("val", "validate"), ("test", "test")):
        if word in name:
            return split
    return None


def _plain_csv(path: Path) -> list[Entry]:
    entries = []
    for line, row in csv_rows(path):
        if not (row["video"] or "").strip():
            raise AnnotationError(f"{location(path, line)}: the video column is empty")
        entries.append((location(path, line), row["video"].strip(), row["caption"],
                        (row.get("split") or "").strip() or None))
    return entries


def _plain_json(path: Path, data: list) -> list[Entry]:
    entries = []
    for number, item in enumerate(data, start=1):
        where = f"{path}, item {number}"
        if not isinstance(item, dict) or not isinstance(item.get("video"), str) or not (
                "caption" in item or "captions" in item):
            raise AnnotationError(f"{where}: expected an object with 'video' and 'caption' or "
                                  f"'captions', got {str(item)[:80]}")
        captions = item["captions"] if "captions" in item else [item["caption"]]
        if not isinstance(captions, list) or not captions:
            raise AnnotationError(f"{where}: 'captions' must be a non-empty list of sentences")
        entries += [(where, item["video"], caption, item.get("split")) for caption in captions]
    return entries


def _msrvtt(path: Path, data: dict) -> list[Entry]:
    splits = {}
    for number, video in enumerate(data["videos"], start=1):
        if not isinstance(video, dict) or "video_id" not in video:
            raise AnnotationError(f"{path}, videos item {number}: expected an object with 'video_id'")
        splits[str(video["video_id"])] = video.get("split")
    entries = []
    for number, sentence in enumerate(data["sentences"], start=1):
        where = f"{path}, sentences item {number}"
        if not isinstance(sentence, dict) or "video_id" not in sentence or "caption" not in sentence:
            raise AnnotationError(f"{where}: expected an object with 'video_id' and 'caption'")
        video_id = str(sentence["video_id"])
        if video_id not in splits:
            raise AnnotationError(f"{where}: video_id {video_id!r} is not one of the file's 'videos'")
        entries.append((where, f"{video_id}.mp4", sentence["caption"], splits[video_id]))
    return entries


def _vatex(path: Path, data: list) -> list[Entry]:
    split = _split_from_name(path)
    entries = []
    for number, item in enumerate(data, start=1):
        where = f"{path}, item {number}"
        if not isinstance(item, dict) or not isinstance(item.get("videoID"), str) or \
                not isinstance(item.get("enCap"), list) or not item["enCap"]:
            raise AnnotationError(f"{where}: expected an object with 'videoID' and a non-empty "
                                  f"'enCap' list, got {str(item)[:80]}")
        entries += [(where, item["videoID"], caption, split) for caption in item["enCap"]]
    return entries


def _webvid(path: Path) -> list[Entry]:
    split = _split_from_name(path)
    entries = []
    for line, row in csv_rows(path):
        if not (row["videoid"] or "").strip() or not (row["page_dir"] or "").strip():
            raise AnnotationError(f"{location(path, line)}: videoid and page_dir must not be empty")
        entries.append((location(path, line), f"{row['page_dir'].strip()}/{row['videoid'].strip()}.mp4",
                        row["name"], split))
    return entries


def _locate(root: Path, name: str, format: str, folder_index: dict[str, Path],
            file: Path | None) -> Path:
    """The video file a caption file names (the first candidate when none exists, for the report).
    ``file``: the caption file when the root is its default (MSR-VTT then also looks beside it)."""
    if format == "vatex":
        return folder_index.get(name, root / f"{name}.mp4")
    if format == "msrvtt":
        roots = [root] + ([file.parent.parent] if file is not None else [])
        candidates = [r / sub / name for r in roots for sub in MSRVTT_FOLDERS]
        return next((c for c in candidates if c.exists()), candidates[0])
    return root / name
