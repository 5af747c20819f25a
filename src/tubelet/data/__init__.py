"""Video data: decoding, clip sampling, annotation formats, augmentation and the built-in dataset.

The training loop's path through this package::

    train_set, val_set = build_datasets(builtin_dataset(), clip=ClipConfig(16, stride=1, size=64))
    # any layout as downloaded: build_datasets("~/k400", root=..., missing="skip", val_split=0.1)
    loader = make_loader(train_set, batch_size=64, workers=8, seed=0)
    augment = build_augmentation("none")         # "kinetics", "randaugment", "epic", "ssv2"
    for epoch in range(epochs):
        loader.set_epoch(epoch)                       # skip=n clips to resume mid-epoch
        for batch in loader:                          # batch["data_wait"]: seconds waited
            x = augment(normalise(batch["video"].to(device)))   # (B, C, T, H, W) in [-1, 1]
            targets = soft_targets(batch["label"], train_set.num_classes, 0.1, device)
            x, targets = mixup(x, targets, alpha=0.3, generator=augment.generator)
        loader.skip_report.files                      # {path: reason} of this pass, each once
"""

from .augment import (PRESETS, AugmentConfig, VideoAugment, build_augmentation, mixup, normalise,
                      randaugment, soft_targets)
from .dataset import (ClipConfig, VideoClips, build_datasets, build_eval_dataset, collate_clips,
                      evaluation_views, load_eval_views, load_splits)
from .decode import DecodeError, VideoIndex, VideoNotFound, VideoReader, index_video, read_frames
from .formats import (AnnotationError, Annotations, Record, detect_format, read_annotations,
                      read_class_names)
from .layouts import Layout, detect_layout
from .loader import ClipLoader, ClipSampler, SkipReport, TooManySkippedFiles, make_loader
from .sampling import crop_boxes, evaluation_clips, training_clip
from .synth import SynthConfig, builtin_dataset, reversed_classes

__all__ = [
    "AnnotationError", "Annotations", "AugmentConfig", "ClipConfig", "ClipLoader", "ClipSampler",
    "DecodeError", "Layout", "PRESETS", "Record", "SkipReport", "SynthConfig",
    "TooManySkippedFiles", "VideoAugment", "VideoClips", "VideoIndex", "VideoNotFound",
    "VideoReader", "build_augmentation", "build_datasets", "build_eval_dataset", "builtin_dataset",
    "collate_clips", "crop_boxes", "detect_format", "detect_layout", "evaluation_clips",
    "evaluation_views", "index_video", "load_eval_views", "load_splits", "make_loader", "mixup", "normalise", "randaugment", "read_annotations", "read_class_names",
    "read_frames", "reversed_classes", "soft_targets", "training_clip",
]
