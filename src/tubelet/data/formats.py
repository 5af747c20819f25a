"""Annotation formats -> a list of :class:`Record` (one annotated clip each) and class names.

Formats (``format=`` names; :func:`detect_format` guesses from the path):

``folder``    ``ROOT/<class>/<video>``; classes in sorted order.
``list``      text lines ``<path> <label>`` (label: an integer or a class name, spaces allowed in
              both: the path ends at its video extension), paths relative to the list file;
              ``#`` starts a comment. Without class names, names come from the labels.
``kinetics``  CSV ``label,youtube_id,time_start,time_end,split``; clips named
              ``<youtube_id>_<start:06d>_<end:06d>.mp4`` in ROOT, ROOT/<label>, ROOT/<split> or
              ROOT/<split>/<label>.
``ssv2``      Something-Something v2: ``something-something-v2-labels.json`` (or ``labels.json``;
              template -> id) beside a ``...-train.json`` / ``...-validation.json`` list; videos
              ``ROOT/<id>.webm`` or ``ROOT/20bn-something-something-v2/<id>.webm``.
``epic``      EPIC-KITCHENS-100 CSV (``EPIC_100_train.csv``): segments of long videos by
              ``start_timestamp`` / ``stop_timestamp``, two labels (``verb_class``, ``noun_class``);
              videos ``ROOT/<participant>/videos/<video_id>.MP4`` (or ``ROOT/<participant>/``,
              ``ROOT/``).
``mit``       Moments in Time: ``trainingSet.csv`` / ``validationSet.csv`` rows
              ``<label>/<file>.mp4,<label>,...`` (no header), names from ``moments_categories.txt``
              (``name,id``); videos in ``ROOT/``, ``ROOT/training/`` or ``ROOT/validation/``.
``ucf``       UCF101 / HMDB51 split lists: ``trainlist01.txt`` (``<class>/<video> <id>``, ids from
              1), ``testlist01.txt`` (``<class>/<video>``: the class is the folder), class names
              from ``classInd.txt`` (``<id> <name>``); videos in ``ROOT/`` or ``ROOT/UCF-101/``.

Every reader raises :class:`AnnotationError` naming the file and line of a malformed line, an
unknown label or (with ``missing="error"``, the default) a missing video; the advice names the
command-line flag (``--missing skip``). Files that are not videos by their extension are listed in
``Annotations.ignored``, never decoded.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import DataError

log = logging.getLogger(__name__)

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


def _where(path: Path, line: int | None) -> str:
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


def _label_id(label: str, names: dict[str, int], where: str) -> int:
    label = label.strip()
    if label in names:
        return names[label]
    if label.lstrip("-").isdigit():
        value = int(label)
        if 0 <= value < len(names) or not names:
            return value
    raise AnnotationError(f"{where}: unknown label {label!r} ({len(names)} classes known; "
                          "check the class-names file)")


def _check_exists(path: Path, where: str, missing: str, missing_list: list[str]) -> bool:
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
            raise AnnotationError(f"{_where(path, number)}: expected '<path> <label>', got {line!r}")
        lines.append((number, *parts))
    if class_names is None and any(not label.lstrip("-").isdigit() for _, _, label in lines):
        class_names = sorted({label for _, _, label in lines})
    ids = {name: i for i, name in enumerate(class_names or [])}
    records, missing_list, ignored = [], [], []
    max_label = -1
    for number, video, label in lines:
        label_id = _label_id(label, ids, _where(path, number))
        if not ids and label_id < 0:
            raise AnnotationError(f"{_where(path, number)}: negative label {label_id}")
        max_label = max(max_label, label_id)
        video_path = root / video
        if not is_video(video_path):
            ignored.append(str(video_path))
        elif _check_exists(video_path, _where(path, number), missing, missing_list):
            records.append(Record(video_path, label_id, video))
    names = list(class_names) if class_names else [str(i) for i in range(max_label + 1)]
    return Annotations(records, [names], "list", str(path), missing_list, ignored)


# -- Kinetics ---------------------------------------------------------------------------------
def kinetics_clip_name(youtube_id: str, start: int, end: int, extension: str = ".mp4") -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}{extension}"


def _csv_rows(path: Path) -> Iterable[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield reader.line_num, row


def _require_columns(path: Path, columns: Iterable[str], needed: Iterable[str]) -> None:
    lacking = [c for c in needed if c not in (columns or [])]
    if lacking:
        raise AnnotationError(f"{_where(path, 1)}: missing column(s) {', '.join(lacking)} "
                              f"(found {', '.join(columns or [])})")


# The same split under the names the Kinetics releases and their mirrors give its folder.
_SPLIT_ALIASES = {"validate": ("val", "validation"), "val": ("validate", "validation"),
                  "train": ("training",), "test": ("testing",)}


def dataset_folder(annotation: Path) -> Path:
    """Where the videos of an annotation file are: its folder, or the folder above an
    ``annotations/`` / ``labels/`` folder (the layout of the Kinetics and SSv2 downloads)."""
    folder = annotation.parent
    return folder.parent if folder.name.lower() in ("annotations", "labels") else folder


def read_kinetics(path: str | Path, root: str | Path | None = None,
                  class_names: list[str] | None = None, missing: str = "error") -> Annotations:
    """Kinetics CSV. Without ``class_names`` the classes are this file's labels, sorted: pass the
    training file's names when reading the validation file."""
    path = Path(path)
    root = Path(root) if root is not None else dataset_folder(path)
    with open(path, newline="", encoding="utf-8") as f:
        columns = csv.DictReader(f).fieldnames
    _require_columns(path, columns, ["label", "youtube_id", "time_start", "time_end"])
    rows = list(_csv_rows(path))
    names = list(class_names) if class_names else sorted({r["label"] for _, r in rows})
    ids = {name: i for i, name in enumerate(names)}
    records, missing_list = [], []
    for number, row in rows:
        where = _where(path, number)
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: time_start/time_end must be numbers, got "
                                  f"{row.get('time_start')!r}, {row.get('time_end')!r}") from None
        label = row["label"] or ""
        if label not in ids:
            raise AnnotationError(f"{where}: unknown label {label!r} ({len(ids)} classes known)")
        name = kinetics_clip_name(row["youtube_id"], start, end)
        split = row.get("split") or ""
        splits = [split] + [s for s in _SPLIT_ALIASES.get(split, ()) if s != split]
        candidates = [root / name, root / label / name,
                      *(root / s / label / name for s in splits), *(root / s / name for s in splits)]
        found = next((c for c in candidates if c.exists() or c.is_symlink()), None)
        if found is None:
            if not _check_exists(candidates[0], where, missing, missing_list):
                continue
            found = candidates[0]
        records.append(Record(found, ids[label], name.rsplit(".", 1)[0]))
    return Annotations(records, [names], "kinetics", str(path), missing_list)


# -- Something-Something v2 -------------------------------------------------------------------
SSV2_LABELS = ("something-something-v2-labels.json", "labels.json")
SSV2_VIDEOS = "20bn-something-something-v2"


def ssv2_class_name(template: str) -> str:
    """The class of an SSv2 item: its template with the ``[something]`` placeholders filled in
    as the word itself ("Putting [something] on [something]" -> "Putting something on something")."""
    return re.sub(r"\[([^\]]*)\]", r"\1", template).strip()


def read_ssv2(path: str | Path, root: str | Path | None = None,
              class_names: list[str] | str | Path | None = None, missing: str = "error") -> Annotations:
    """SSv2 ``...-train.json`` / ``...-validation.json``; class names from ``class_names`` (a list
    or the labels file), else ``something-something-v2-labels.json`` / ``labels.json`` beside it."""
    path = Path(path)
    folder = dataset_folder(path)
    if root is None:
        root = folder / SSV2_VIDEOS if (folder / SSV2_VIDEOS).is_dir() else folder
    root = Path(root)
    if class_names is None:
        labels = next((path.parent / n for n in SSV2_LABELS if (path.parent / n).is_file()), None)
        if labels is None:
            raise AnnotationError(f"{path}: SSv2 needs {SSV2_LABELS[0]} (template -> id) beside "
                                  "the split file")
        class_names = labels
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    names = list(class_names)
    ids = {name: i for i, name in enumerate(names)}
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{_where(path, e.lineno)}: not valid JSON ({e.msg})") from None
    if not isinstance(items, list):
        raise AnnotationError(f"{path}: expected a JSON list of {{'id', 'template'}} objects")
    records, missing_list = [], []
    for number, item in enumerate(items, start=1):
        where = f"{path}, item {number}"
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise AnnotationError(f"{where}: expected an object with 'id' and 'template', got "
                                  f"{str(item)[:80]}")
        template = ssv2_class_name(item["template"])
        if template not in ids:
            raise AnnotationError(f"{where}: unknown label {template!r} ({len(ids)} classes known; "
                                  "check the labels file)")
        video = root / f"{item['id']}.webm"
        if _check_exists(video, where, missing, missing_list):
            records.append(Record(video, ids[template], str(item["id"])))
    return Annotations(records, [names], "ssv2", str(path), missing_list)


# -- EPIC-KITCHENS-100 ------------------------------------------------------------------------
def parse_timestamp(text: str) -> float:
    """``HH:MM:SS.ff`` (or plain seconds) -> seconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(text)
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


def read_epic(path: str | Path, root: str | Path | None = None,
              class_names: list[list[str]] | None = None, missing: str = "error") -> Annotations:
    """EPIC-KITCHENS-100 CSV: labels are ``(verb_class, noun_class)``.

    Class names come from ``class_names``, else from ``EPIC_100_verb_classes.csv`` and
    ``EPIC_100_noun_classes.csv`` beside the file, else from the ``verb`` / ``noun`` columns.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    with open(path, newline="", encoding="utf-8") as f:
        columns = csv.DictReader(f).fieldnames
    _require_columns(path, columns, ["video_id", "start_timestamp", "stop_timestamp",
                                     "verb_class", "noun_class"])
    rows = list(_csv_rows(path))
    if class_names is None:
        files = [path.parent / "EPIC_100_verb_classes.csv", path.parent / "EPIC_100_noun_classes.csv"]
        if all(f.exists() for f in files):
            class_names = [read_class_names(f) for f in files]
    records, missing_list = [], []
    seen: list[dict[int, str]] = [{}, {}]
    videos: dict[str, Path | None] = {}
    for number, row in rows:
        where = _where(path, number)
        try:
            label = (int(row["verb_class"]), int(row["noun_class"]))
            start, end = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: verb_class/noun_class must be integers and timestamps "
                                  "HH:MM:SS.ff") from None
        if end <= start:
            raise AnnotationError(f"{where}: stop_timestamp {row['stop_timestamp']} is not after "
                                  f"start_timestamp {row['start_timestamp']}")
        for head, (key, value) in enumerate(zip(("verb", "noun"), label)):
            if class_names is not None and not 0 <= value < len(class_names[head]):
                raise AnnotationError(f"{where}: unknown {key}_class {value} "
                                      f"({len(class_names[head])} {key} classes)")
            seen[head].setdefault(value, row.get(key) or str(value))
        video_id = row["video_id"]
        if video_id not in videos:
            participant = row.get("participant_id") or video_id.split("_")[0]
            candidates = [root / participant / "videos" / f"{video_id}{ext}" for ext in (".MP4", ".mp4")]
            candidates += [root / participant / f"{video_id}{ext}" for ext in (".MP4", ".mp4")]
            candidates += [root / f"{video_id}{ext}" for ext in (".MP4", ".mp4")]
            videos[video_id] = next((c for c in candidates if c.exists()), None)
            if videos[video_id] is None:
                _check_exists(candidates[0], where, missing, missing_list)
        if videos[video_id] is None:
            continue
        records.append(Record(videos[video_id], label, row.get("narration_id") or f"{video_id}@{number}",
                              start, end))
    if class_names is None:
        class_names = [[names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
                       for names in seen]
    return Annotations(records, [list(n) for n in class_names], "epic", str(path), missing_list)


# -- Moments in Time ---------------------------------------------------------------------------
MIT_CATEGORIES = "moments_categories.txt"


def read_mit(path: str | Path, root: str | Path | None = None,
             class_names: list[str] | None = None, missing: str = "error") -> Annotations:
    """Moments in Time ``trainingSet.csv`` / ``validationSet.csv``: rows ``<label>/<file>,<label>,
    ...`` without a header. Names from ``class_names``, else ``moments_categories.txt`` beside the
    file, else the labels, sorted. Videos in ``root`` or its ``training/`` / ``validation/``."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if class_names is None and (path.parent / MIT_CATEGORIES).is_file():
        class_names = read_class_names(path.parent / MIT_CATEGORIES)
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(number, row) for number, row in enumerate(csv.reader(f), start=1) if row]
    for number, row in rows:
        if len(row) < 2:
            raise AnnotationError(f"{_where(path, number)}: expected '<label>/<file>,<label>,...', "
                                  f"got {','.join(row)!r}")
    names = list(class_names) if class_names else sorted({row[1] for _, row in rows})
    ids = {name: i for i, name in enumerate(names)}
    subfolders = ("training", "validation") if "train" in path.name.lower() else ("validation", "training")
    records, missing_list = [], []
    for number, row in rows:
        where = _where(path, number)
        label = row[1].strip()
        if label not in ids:
            raise AnnotationError(f"{where}: unknown label {label!r} ({len(ids)} classes known; "
                                  f"check {MIT_CATEGORIES})")
        candidates = [root / row[0], *(root / sub / row[0] for sub in subfolders)]
        video = next((c for c in candidates if c.exists() or c.is_symlink()), candidates[0])
        if _check_exists(video, where, missing, missing_list):
            records.append(Record(video, ids[label], row[0]))
    return Annotations(records, [names], "mit", str(path), missing_list)


# -- UCF101 / HMDB51 split lists --------------------------------------------------------------------
UCF_CLASSES = "classInd.txt"
UCF_VIDEOS = ("UCF-101", "UCF101", "hmdb51", "HMDB51", "videos")


def read_ucf(path: str | Path, root: str | Path | None = None,
             class_names: list[str] | None = None, missing: str = "error") -> Annotations:
    """UCF101-style split lists: ``trainlist01.txt`` lines ``<class>/<video> <id>`` (ids from 1,
    as in ``classInd.txt``), ``testlist01.txt`` lines ``<class>/<video>`` (the class is the folder).
    Videos in ``root``, or a ``UCF-101/`` (``hmdb51/``, ``videos/``) folder beside the lists or
    one level up."""
    path = Path(path)
    if class_names is None:
        classes = path.parent / UCF_CLASSES
        if not classes.is_file():
            raise AnnotationError(f"{path}: UCF101-style split lists need {UCF_CLASSES} beside them")
        class_names = read_class_names(classes)
    if root is None:
        places = [path.parent, path.parent.parent]
        root = next((p / n for p in places for n in UCF_VIDEOS if (p / n).is_dir()), path.parent)
    root = Path(root)
    ids = {name: i for i, name in enumerate(class_names)}
    records, missing_list = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        where = _where(path, number)
        video, _, label = line.partition(" ") if Path(line.split(" ")[0]).suffix else (line, "", "")
        if label.strip():
            if not label.strip().isdigit() or not 1 <= int(label) <= len(class_names):
                raise AnnotationError(f"{where}: unknown class id {label.strip()!r} (ids 1-"
                                      f"{len(class_names)} from {UCF_CLASSES})")
            label_id = int(label) - 1
        else:
            folder = Path(video).parts[0] if len(Path(video).parts) > 1 else ""
            if folder not in ids:
                raise AnnotationError(f"{where}: the folder of {video!r} is not a class of "
                                      f"{UCF_CLASSES}")
            label_id = ids[folder]
        if _check_exists(root / video, where, missing, missing_list):
            records.append(Record(root / video, label_id, video))
    return Annotations(records, [list(class_names)], "ucf", str(path), missing_list)


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
        raise AnnotationError(f"{_where(path, 1)}: cannot tell the CSV format from its columns "
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
