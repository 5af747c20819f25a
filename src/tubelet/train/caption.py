"""``tubelet train --task caption``: what the trainer does differently for a captioner.

The data are videos with reference captions (:func:`tubelet.captions.read_captions`; the built-in
dataset with ``captions.csv``); each video is an item of the same clip dataset the classifier
uses (decoding, augmentation, skipped files, samplers, workers are shared), its "label" the
video's index in the caption list. A training step draws one of the video's captions (seeded by
step and row) and minimises the cross-entropy of each word given the video and the words before
it (teacher forcing, label smoothing from the augment section). Validation captions the centre
clip of every held-out video greedily and scores BLEU-4 and CIDEr-D, and on the built-in
dataset the share of captions whose motion, direction and event order are all right.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import data as tdata
from ..captions import bleu4, caption_facts, cider_d, read_captions
from ..config import RunConfig
from ..data.annotations import Annotations, Record
from ..errors import TrainingError
from ..models import create_model
from ..models.captioner import Captioner, CaptionerConfig, WordVocab, caption_loss
from ..models.decoder import DecoderConfig

FACTS = ("motion", "direction", "order")
HELD_OUT = ("val", "validate", "validation", "test")  # splits a caption file may hold out


def caption_data(cfg: RunConfig, progress: bool) -> tuple[Path, list, list]:
    """(source, training videos, validation videos) of the run's caption data."""
    data = cfg.data.path
    if data is None:
        from ..data.synth import SynthConfig
        data = tdata.builtin_dataset(SynthConfig(captions=True, event_order=True), progress=progress)
    videos = read_captions(data, cfg.data.root, missing=cfg.data.missing)
    train = [v for v in videos if v.split not in HELD_OUT]
    val = [v for v in videos if v.split in HELD_OUT]
    if cfg.data.val is not None:
        val = list(read_captions(cfg.data.val, cfg.data.root, missing=cfg.data.missing))
    elif not val and cfg.data.val_split:
        order = list(range(len(train)))
        random.Random(cfg.runtime.seed).shuffle(order)
        cut = max(1, round(cfg.data.val_split * len(train)))
        val = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])]
    if len(train) < 2:
        raise TrainingError(f"{data}: {len(train)} captioned training video(s); a captioner needs more "
                            "(check the file with tubelet.captions.read_captions)")
    return Path(data), train, val


def clip_set(videos: list, source: Path, clip: tdata.ClipConfig, train: bool, seed: int) -> tdata.VideoClips:
    """The clip dataset of captioned videos: item ``label`` is the video's index in ``videos``."""
    records = [Record(path=Path(v.path), label=i, id=str(v.path)) for i, v in enumerate(videos)]
    missing = list(getattr(videos, "missing", []))
    ann = Annotations(records, [["video"]], format="captions", source=str(source), missing=missing)
    return tdata.VideoClips(ann, clip, train=train, seed=seed)


class CaptionTask:
    """Data, model, loss and validation of a captioning run; the trainer does the rest."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.vocab = None  # a WordVocab of the training captions, or the pretrained decoder's tokenizer

    def train_only(self) -> str | None:
        """What trains: ``optim.train_only`` when given; else, with ``--init``, the projection and the
        decoder around a frozen encoder (the classifier's encoder already tells the motions and their
        order apart; trained on captions as well it lost directions: 79% of captions with every fact
        right against 97% frozen, benchmarks/RESULTS.md); else everything."""
        given = self.cfg.optim.train_only
        return given if given is not None or not self.cfg.model.init else "project,decoder"

    def build_data(self, clip: tdata.ClipConfig, progress: bool) -> tuple[tdata.VideoClips, tdata.VideoClips | None]:
        self.source, self.train_videos, self.val_videos = caption_data(self.cfg, progress)
        if self.cfg.model.decoder == "own":  # a pretrained decoder brings its vocabulary (build_model)
            self.vocab = WordVocab.build(c for v in self.train_videos for c in v.captions)
        self.val_clip = dataclasses.replace(clip, views=1, crops=1)
        seed = self.cfg.runtime.seed
        train = clip_set(self.train_videos, self.source, clip, True, seed)
        val = clip_set(self.val_videos, self.source, self.val_clip, False, seed) if self.val_videos else None
        return train, val

    def build_model(self, encoder: torch.nn.Module | None) -> Captioner:
        """A new captioner on ``encoder`` (a ViViT from --init), else on a fresh registry model: with
        tubelet's own decoder, or with a pretrained one (``--model.decoder smollm2``), frozen."""
        m = self.cfg.model
        if encoder is None:
            encoder = create_model(m.name, num_classes=1, **m.overrides)
        if m.decoder != "own":
            model = Captioner.from_language_model(encoder, m.decoder, CaptionerConfig(max_length=m.caption_length))
            self.vocab = model.vocab
            return model
        decoder = DecoderConfig(vocab_size=len(self.vocab), dim=m.decoder_dim, num_layers=m.decoder_layers,
                                num_heads=m.decoder_heads, num_kv_heads=m.decoder_kv_heads,
                                mlp_dim=3 * m.decoder_dim)
        return Captioner(encoder, self.vocab, CaptionerConfig(decoder=decoder, max_length=m.caption_length))

    def resumed(self, model: Captioner) -> None:
        """A resumed run keeps the vocabulary its checkpoint was trained with."""
        self.vocab = model.vocab

    def loss(self, forward, x: Tensor, labels: Tensor, step: int, micro: int, device: torch.device) -> Tensor:
        """Teacher-forced cross-entropy of one caption per video, drawn with (seed, step, row)."""
        picks = []
        for index in labels.view(-1).tolist():
            captions = self.train_videos[index].captions
            draw = random.Random(f"{self.cfg.runtime.seed}-{step}-{micro}-{index}")
            picks.append(captions[draw.randrange(len(captions))])
        ids = self.vocab.batch(picks, self.cfg.model.caption_length).to(device)
        return caption_loss(forward, x, ids, self.vocab, self.cfg.label_smoothing)

    def evaluate(self, model: Captioner, loader, device: torch.device, progress: bool = False) -> dict[str, Any]:
        """Greedy captions of every validation video and their scores."""
        return caption_metrics(model, loader, self.val_videos, device, progress)


@torch.no_grad()
def caption_metrics(model: Captioner, loader, videos: list, device: torch.device, progress: bool = False
                    ) -> dict[str, Any]:
    """Greedy captions of the videos of ``loader`` (a :func:`clip_set` of ``videos``, one view each)
    scored against their references: BLEU-4, CIDEr-D and, when the references state the built-in
    dataset's facts, ``facts_correct``; ``count``, ``skipped`` and a few ``examples``."""
    from tqdm import tqdm
    was_training = model.training
    model.eval()
    predicted: dict[int, str] = {}
    skipped = []
    for batch in tqdm(loader, desc="captioning", unit="batch", disable=not progress, leave=False):
        skipped += [f"{path}: {why}" for path, why in batch.get("skipped", [])]
        if "video" not in batch:
            continue
        clips = tdata.normalise(batch["video"][:, 0].to(device))  # the one (centre) view
        texts, _ = model.caption(clips)
        predicted.update(zip(batch["label"].view(-1).tolist(), texts))
    model.train(was_training)
    if not predicted:
        return {"count": 0, "skipped": skipped}
    refs = {i: videos[i].captions for i in predicted}
    metrics: dict[str, Any] = {"count": len(predicted), "bleu4": bleu4(predicted, refs),
                               "cider_d": cider_d(predicted, refs) if len(predicted) > 1 else 0.0,
                               "skipped": skipped}
    truths = {i: caption_facts(refs[i][0]) for i in predicted}
    if all(t["motion"] is not None for t in truths.values()):  # captions that state the facts
        right = {i: all(caption_facts(predicted[i]).get(f) == truths[i].get(f) for f in FACTS) for i in predicted}
        metrics["facts_correct"] = sum(right.values()) / len(right)
        by_motion: dict[str, list[bool]] = {}
        for i, ok in right.items():
            by_motion.setdefault(truths[i]["motion"], []).append(ok)
        metrics["facts_correct_by_motion"] = {m: sum(v) / len(v) for m, v in sorted(by_motion.items())}
    metrics["examples"] = [{"video": str(videos[i].path), "caption": predicted[i], "reference": refs[i][0]}
                           for i in sorted(predicted)[:5]]
    return metrics


def evaluate_captioner(model: Captioner, cfg: RunConfig, device: torch.device, batch_size: int,
                       progress: bool = True) -> dict[str, Any]:
    """`tubelet eval` of a captioner: the held-out videos of ``--data`` (all of them when the file
    names no split), captioned greedily and scored."""
    from ..inference.pipeline import inference_clip
    videos = read_captions(cfg.data.path, cfg.data.root, missing=cfg.data.missing)
    held_out = [v for v in videos if v.split in HELD_OUT] or list(videos)
    clip = dataclasses.replace(inference_clip(model.encoder, stride=cfg.clip.stride, views=1, crops=1),
                               shuffle_frames=cfg.clip.shuffle_frames)
    dataset = clip_set(held_out, Path(cfg.data.path), clip, False, cfg.runtime.seed)
    sampler = tdata.ClipSampler(len(dataset), shuffle=False, seed=0, drop_last=False, epoch=0)
    loader = tdata.make_loader(dataset, sampler, batch_size=batch_size, workers=cfg.data.workers,
                               pin_memory=device.type == "cuda")
    return caption_metrics(model, loader, held_out, device, progress)
