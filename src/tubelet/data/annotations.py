"""What every annotation reader shares: the records, the class names, and how errors are worded.

A :class:`Record` is one annotated clip (a video or a segment of one, and its label or labels);
:class:`Annotations` the records of one split with the class names of each head and what was left
out (missing videos, files that are not videos, empty class folders). Errors name the file and
line and what to do; the advice for a missing video names the command-line flag (``--missing
skip``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import DataError

VIDEO_EXTENSIONS = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv",
                    ".flv", ".wmv", ".3gp", ".ts"}


class AnnotationError(DataError):
    """A malformed annotation, an unknown label or a missing video, with file and line."""


@dataclass(frozen=True)
class Record:
    """One annotated clip: a video (or a segment of one) and its label(s).

    ``label`` is an int, or a tuple of ints for several heads (EPIC-KITCHENS verb, noun).
    ``start`` / ``end`` are seconds from the video's first frame (``None``: the whole video).
    """

    path: Path
    label: int | tuple[int, ...]
    id: str
    start: float | None = None
    end: float | None = None


@dataclass
class Annotations:
    """The records of one split and the class names of each head (one head for most data)."""

    records: list[Record]
    class_names: list[list[str]]
    format: str
    source: str
    missing: list[str] = field(default_factory=list)  # videos not found, with missing="skip"
    ignored: list[str] = field(default_factory=list)  # files that are not videos by extension
    empty_classes: list[str] = field(default_factory=list)  # class folders without a video

    @property
    def num_classes(self) -> list[int]:
        return [len(names) for names in self.class_names]


def location(path: Path, line: int | None) -> str:
    return f"{path}, line {line}" if line is not None else str(path)


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a file: one per line (line ``i`` is class ``i``), ``<id> <name>`` lines,
    a JSON list, a JSON ``{name: id}`` object, or an EPIC-style CSV with ``id,key`` columns."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"class-names file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return [name for name, _ in sorted(data.items(), key=lambda kv: int(kv[1]))]
        return [str(x) for x in data]
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "id" in rows[0] and "key" in rows[0]:
            return [r["key"] for r in sorted(rows, key=lambda r: int(r["id"]))]
        raise AnnotationError(f"{path}: a class-names CSV needs 'id' and 'key' columns")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern, id_first in ((r"^(\d+)[\s,]+(.+)$", True), (r"^(.+?)\s*[,\t]\s*(\d+)$", False)):
        numbered = [re.match(pattern, n) for n in names]
        if names and all(numbered):  # "<id> <name>" (classInd.txt) or "<name>,<id>" (MiT)
            pairs = sorted((int(m.group(1 if id_first else 2)), m.group(2 if id_first else 1).strip())
                           for m in numbered)
            ids = [i for i, _ in pairs]
            if ids in (list(range(len(pairs))), list(range(1, len(pairs) + 1))):  # from 0 or 1
                return [name for _, name in pairs]
    return names


def parse_label(label: str, names: dict[str, int], where: str) -> int:
    label = label.strip()
    if label in names:
        return names[label]
    if label.lstrip("-").isdigit():
        value = int(label)
        if 0 <= value < len(names) or not names:
            return value
    raise AnnotationError(f"{where}: unknown label {label!r} ({len(names)} classes known; "
                          "check the class-names file)")


def check_exists(path: Path, where: str, missing: str, missing_list: list[str]) -> bool:
    if path.exists():
        return True
    if missing == "skip":
        missing_list.append(str(path))
        return False
    raise AnnotationError(f"{where}: video {path} does not exist ({MISSING_ADVICE})")


MISSING_ADVICE = ("check --root, or pass --missing skip (missing='skip' in Python) to leave out "
                  "missing videos")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def csv_rows(path: Path) -> Iterable[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield reader.line_num, row


def require_columns(path: Path, columns: Iterable[str], needed: Iterable[str]) -> None:
    lacking = [c for c in needed if c not in (columns or [])]
    if lacking:
        raise AnnotationError(f"{location(path, 1)}: missing column(s) {', '.join(lacking)} "
                              f"(found {', '.join(columns or [])})")
