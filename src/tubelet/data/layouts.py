"""Datasets as they are downloaded: which files of a folder are the training and validation splits.

:func:`detect_layout` recognises a dataset folder by the file names its release uses, looking in
the folder itself and in the sub-folders those releases put their annotations in:

============  ===========================================================================  ==========
layout        files                                                                        videos
============  ===========================================================================  ==========
``epic``      ``EPIC_100_train.csv``, ``EPIC_100_validation.csv``,                         ``<P01>/videos/<P01_01>.MP4``
              ``EPIC_100_verb_classes.csv``, ``EPIC_100_noun_classes.csv``
``ssv2``      ``something-something-v2-{train,validation,labels}.json``                    ``20bn-something-something-v2/<id>.webm``
``mit``       ``trainingSet.csv``, ``validationSet.csv``, ``moments_categories.txt``       ``training/``, ``validation/``
``ucf``       ``classInd.txt``, ``trainlist01.txt``, ``testlist01.txt`` (UCF101, HMDB51)    ``UCF-101/<class>/<video>``
``kinetics``  ``train.csv``, ``validate.csv`` (or ``val.csv``), ``test.csv``               ``<split>/[<label>/]<id>_<start>_<end>.mp4``
``list``      ``train.txt``, ``val.txt``                                                   relative to the list
``folder``    ``train/``, ``val/`` (or ``validation/``) class folders                      ``<class>/<video>``
============  ===========================================================================  ==========

Anything else is a single annotation file or class folder (the training split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .formats import MIT_CATEGORIES, SSV2_LABELS, SSV2_VIDEOS, UCF_CLASSES, UCF_VIDEOS

# Sub-folders the releases keep their annotation files in (Kinetics' CVDF mirror: annotations/;
# SSv2: labels/; EPIC-KITCHENS: its annotations repository; UCF101: ucfTrainTestlist/).
ANNOTATION_FOLDERS = ("", "annotations", "labels", "epic-kitchens-100-annotations",
                      "ucfTrainTestlist", "testTrainMulti_7030_splits", "splits")

# layout -> format, [train file names], [validation file names], class-names file or None.
LAYOUTS = (
    ("epic", "epic", ["EPIC_100_train.csv"], ["EPIC_100_validation.csv"], None),
    ("ssv2", "ssv2", ["something-something-v2-train.json", "train.json"],
     ["something-something-v2-validation.json", "validation.json", "val.json"], None),
    ("mit", "mit", ["trainingSet.csv"], ["validationSet.csv"], MIT_CATEGORIES),
    ("ucf", "ucf", ["trainlist01.txt"], ["testlist01.txt"], UCF_CLASSES),
    ("kinetics", "kinetics", ["train.csv"], ["validate.csv", "val.csv", "validation.csv"], None),
    ("list", "list", ["train.txt"], ["val.txt", "validation.txt"], None),
)
CLASS_FILES = ("classes.txt", "class_names.txt")


@dataclass(frozen=True)
class Layout:
    """The splits of a dataset folder: annotation files (or class folders) and where names come from.

    ``root`` is the folder the videos are under (None: the reader's default for its format);
    ``class_names`` a class-names file, or None when the reader finds its own.
    """

    name: str
    format: str
    train: Path
    val: Path | None
    root: Path | None = None
    class_names: Path | None = None


def _find(folder: Path, names: list[str]) -> Path | None:
    for sub in ANNOTATION_FOLDERS:
        for name in names:
            if (folder / sub / name).is_file():
                return folder / sub / name
    return None


def _class_names_file(folder: Path) -> Path | None:
    return next((folder / n for n in CLASS_FILES if (folder / n).is_file()), None)


def detect_layout(folder: str | Path) -> Layout | None:
    """The :class:`Layout` of a dataset folder holding a training split, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for name, format, train_names, val_names, names_file in LAYOUTS:
        train = _find(folder, train_names)
        if train is None:
            continue
        val = _find(train.parent, val_names) or _find(folder, val_names)
        if name == "ssv2" and not any((train.parent / n).is_file() for n in SSV2_LABELS):
            continue  # a train.json without SSv2's labels file is not SSv2
        if name == "ucf" and not (train.parent / UCF_CLASSES).is_file():
            continue
        names = train.parent / names_file if names_file else _class_names_file(folder)
        return Layout(name, format, train, val, _video_root(name, folder, train),
                      names if names and names.is_file() else None)
    for train_name in ("train", "training"):
        if (folder / train_name).is_dir():
            val = next((folder / n for n in ("val", "validation", "validate", "test")
                        if (folder / n).is_dir()), None)
            return Layout("folder", "folder", folder / train_name, val,
                          class_names=_class_names_file(folder))
    return None


def _video_root(layout: str, folder: Path, train: Path) -> Path | None:
    """Where the videos of a detected layout are (None: the reader's default, beside the file)."""
    if layout == "ssv2":
        return folder / SSV2_VIDEOS if (folder / SSV2_VIDEOS).is_dir() else folder
    if layout == "ucf":
        return next((folder / n for n in UCF_VIDEOS if (folder / n).is_dir()), folder)
    return folder if layout == "mit" or train.parent != folder else None
