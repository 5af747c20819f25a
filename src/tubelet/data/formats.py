"""Annotation formats -> a list of :class:`Record` (one annotated clip each) and class names.

Formats (``format=`` names; :func:`detect_format` guesses from the path):

``folder``    ``ROOT/<class>/<video>``; classes in sorted order.
``list``      text lines ``<path> <label>`` (label: an integer or a class name, spaces allowed in
              both: the path ends at its video extension), paths relative to the list file;
              ``#`` starts a comment. Without class names, names come from the labels.
``kinetics``, ``ssv2``, ``epic``, ``mit``, ``ucf``
              the annotation files of public datasets (:mod:`tubelet.data.releases`).

Every reader raises :class:`AnnotationError` naming the file and line of a malformed line, an
unknown label or (with ``missing="error"``, the default) a missing video; the advice names the
command-line flag (``--missing skip``). Files that are not videos by their extension are listed in
``Annotations.ignored``, never decoded.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from .annotations import (MISSING_ADVICE, VIDEO_EXTENSIONS, AnnotationError, Annotations, Record,
                          check_exists, is_video, location, parse_label, read_class_names)
from .releases import (MIT_CATEGORIES, SSV2_LABELS, SSV2_VIDEOS, UCF_CLASSES, UCF_VIDEOS,
                       kinetics_clip_name, parse_timestamp, read_epic, read_kinetics, read_mit,
                       read_ssv2, read_ucf, ssv2_class_name)

__all__ = ["AnnotationError", "Annotations", "FORMATS", "MISSING_ADVICE", "MIT_CATEGORIES", "Record",
           "SSV2_LABELS", "SSV2_VIDEOS", "UCF_CLASSES", "UCF_VIDEOS", "VIDEO_EXTENSIONS",
           "detect_format", "kinetics_clip_name", "parse_timestamp", "read_annotations",
           "read_class_names", "read_folder", "read_list", "ssv2_class_name"]

log = logging.getLogger(__name__)


# -- folder -----------------------------------------------------------------------------------
def read_folder(root: str | Path, class_names: list[str] | None = None) -> Annotations:
    """``ROOT/<class>/<video>``: every video file below a class folder, classes sorted by name.

    Files that are not videos by their extension are listed in ``ignored``; a dangling symbolic
    link stays a record, so the loader reports it by name; a class folder without a video is
    listed in ``empty_classes`` (and logged): its class gets no training example.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = class_names or [p.name for p in folders]
    ids = {name: i for i, name in enumerate(names)}
    records, ignored, empty = [], [], []
    for folder in folders:
        if folder.name not in ids:
            raise AnnotationError(f"{folder}: folder name {folder.name!r} is not a known class "
                                  f"({len(ids)} classes known; check the class-names file)")
        count = 0
        for path in sorted(folder.rglob("*")):
            if path.name.startswith(".") or path.is_dir():
                continue
            if not is_video(path):
                ignored.append(str(path))
                continue
            records.append(Record(path, ids[folder.name], str(path.relative_to(root))))
            count += 1
        if count == 0:
            empty.append(folder.name)
            log.warning("%s: the class folder holds no video; class %r gets no example", folder,
                        folder.name)
    if not records:
        raise AnnotationError(f"{root}: no video files in class folders (expected "
                              "ROOT/<class>/<video>.mp4)")
    return Annotations(records, [list(names)], "folder", str(root), ignored=ignored,
                       empty_classes=empty)


# -- list file --------------------------------------------------------------------------------
def split_list_line(line: str, root: Path) -> tuple[str, str] | None:
    """``<path> <label>`` -> (path, label), spaces allowed in both.

    A tab separates them when there is one; otherwise the path ends at the first word that ends
    with a video extension, else at the longest prefix that exists under ``root``, else at the
    last space.
    """
    if "\t" in line:
        path, _, label = line.rpartition("\t")
        return (path.strip(), label.strip()) if path.strip() and label.strip() else None
    words = line.split(" ")
    cuts = [i for i in range(1, len(words)) if words[i - 1] and "".join(words[i:]).strip()]
    for i in cuts:
        if Path(words[i - 1]).suffix.lower() in VIDEO_EXTENSIONS:
            return " ".join(words[:i]), " ".join(words[i:]).strip()
    for i in reversed(cuts):
        if (root / " ".join(words[:i])).exists():
            return " ".join(words[:i]), " ".join(words[i:]).strip()
    parts = line.rsplit(maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def read_list(path: str | Path, root: str | Path | None = None, class_names: list[str] | None = None,
              missing: str = "error") -> Annotations:
    """Lines ``<path> <label>``; paths relative to ``root`` (default: the list file's folder).

    Labels are class names or integers. Without ``class_names``: integers are class ids if every
    label is one, else every label is a name and the classes are the names, sorted.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = split_list_line(line, root)
        if parts is None:
            raise AnnotationError(f"{location(path, number)}: expected '<path> <label>', got {line!r}")
        lines.append((number, *parts))
    if class_names is None and any(not label.lstrip("-").isdigit() for _, _, label in lines):
        class_names = sorted({label for _, _, label in lines})
    ids = {name: i for i, name in enumerate(class_names or [])}
    records, missing_list, ignored = [], [], []
    max_label = -1
    for number, video, label in lines:
        label_id = parse_label(label, ids, location(path, number))
        if not ids and label_id < 0:
            raise AnnotationError(f"{location(path, number)}: negative label {label_id}")
        max_label = max(max_label, label_id)
        video_path = root / video
        if not is_video(video_path):
            ignored.append(str(video_path))
        elif check_exists(video_path, location(path, number), missing, missing_list):
            records.append(Record(video_path, label_id, video))
    names = list(class_names) if class_names else [str(i) for i in range(max_label + 1)]
    return Annotations(records, [names], "list", str(path), missing_list, ignored)


# -- detection --------------------------------------------------------------------------------
FORMATS = ("folder", "list", "kinetics", "ssv2", "epic", "mit", "ucf")


def detect_format(path: str | Path) -> str:
    """The format of an annotation path: a folder, a ``.json`` (SSv2), a ``.csv`` (Kinetics or
    EPIC-KITCHENS by its columns) or any other text file (list)."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise AnnotationError(f"{path} does not exist")
    if path.suffix == ".json":
        return "ssv2"
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            first = next(csv.reader(f), [])
        columns = set(first)
        if {"verb_class", "noun_class"} <= columns:
            return "epic"
        if {"youtube_id", "label"} <= columns:
            return "kinetics"
        if first and Path(first[0]).suffix.lower() in VIDEO_EXTENSIONS:
            return "mit"
        raise AnnotationError(f"{location(path, 1)}: cannot tell the CSV format from its columns "
                              f"({', '.join(sorted(columns))}); pass --format kinetics, epic or mit")
    if (path.parent / UCF_CLASSES).is_file() and re.match(r"(train|test)list\d+\.txt$", path.name):
        return "ucf"
    return "list"


def read_annotations(path: str | Path, format: str | None = None, root: str | Path | None = None,
                     class_names: list[str] | list[list[str]] | str | Path | None = None,
                     missing: str = "error") -> Annotations:
    """Read any supported format (``format=None``: detected). ``class_names`` may be a file."""
    format = format or detect_format(path)
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    if format not in FORMATS:
        raise AnnotationError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if missing not in ("error", "skip"):
        raise AnnotationError(f"missing must be 'error' or 'skip', got {missing!r}")
    if format == "folder":
        return read_folder(path, class_names)
    if format == "list":
        return read_list(path, root, class_names, missing)
    if format == "kinetics":
        return read_kinetics(path, root, class_names, missing)
    if format == "ssv2":
        return read_ssv2(path, root, class_names, missing)
    if format == "mit":
        return read_mit(path, root, class_names, missing)
    if format == "ucf":
        return read_ucf(path, root, class_names, missing)
    if class_names is not None and class_names and isinstance(class_names[0], str):
        raise AnnotationError("EPIC-KITCHENS has two heads: pass class_names as [verbs, nouns]")
    return read_epic(path, root, class_names, missing)
