"""The annotation files of public video datasets, as their releases ship them.

``kinetics``  Kinetics-400/600/700 CSV ``label,youtube_id,time_start,time_end,split``; clips named
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
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from .annotations import (AnnotationError, Annotations, Record, check_exists, csv_rows,
                          location, read_class_names, require_columns)


# -- Kinetics ---------------------------------------------------------------------------------
def kinetics_clip_name(youtube_id: str, start: int, end: int, extension: str = ".mp4") -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}{extension}"


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
    require_columns(path, columns, ["label", "youtube_id", "time_start", "time_end"])
    rows = list(csv_rows(path))
    names = list(class_names) if class_names else sorted({r["label"] for _, r in rows})
    ids = {name: i for i, name in enumerate(names)}
    records, missing_list = [], []
    for number, row in rows:
        where = location(path, number)
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
            if not check_exists(candidates[0], where, missing, missing_list):
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
        raise AnnotationError(f"{location(path, e.lineno)}: not valid JSON ({e.msg})") from None
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
        if check_exists(video, where, missing, missing_list):
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
    require_columns(path, columns, ["video_id", "start_timestamp", "stop_timestamp",
                                     "verb_class", "noun_class"])
    rows = list(csv_rows(path))
    if class_names is None:
        files = [path.parent / "EPIC_100_verb_classes.csv", path.parent / "EPIC_100_noun_classes.csv"]
        if all(f.exists() for f in files):
            class_names = [read_class_names(f) for f in files]
    records, missing_list = [], []
    seen: list[dict[int, str]] = [{}, {}]
    videos: dict[str, Path | None] = {}
    for number, row in rows:
        where = location(path, number)
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
                check_exists(candidates[0], where, missing, missing_list)
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
            raise AnnotationError(f"{location(path, number)}: expected '<label>/<file>,<label>,...', "
                                  f"got {','.join(row)!r}")
    names = list(class_names) if class_names else sorted({row[1] for _, row in rows})
    ids = {name: i for i, name in enumerate(names)}
    subfolders = ("training", "validation") if "train" in path.name.lower() else ("validation", "training")
    records, missing_list = [], []
    for number, row in rows:
        where = location(path, number)
        label = row[1].strip()
        if label not in ids:
            raise AnnotationError(f"{where}: unknown label {label!r} ({len(ids)} classes known; "
                                  f"check {MIT_CATEGORIES})")
        candidates = [root / row[0], *(root / sub / row[0] for sub in subfolders)]
        video = next((c for c in candidates if c.exists() or c.is_symlink()), candidates[0])
        if check_exists(video, where, missing, missing_list):
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
        where = location(path, number)
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
        if check_exists(root / video, where, missing, missing_list):
            records.append(Record(root / video, label_id, video))
    return Annotations(records, [list(class_names)], "ucf", str(path), missing_list)
