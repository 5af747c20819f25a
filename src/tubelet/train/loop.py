"""The training loop: the paper's recipe on raw video files, resumable to the step.

One optimiser step = ``batch_size`` clips over all processes, reached by gradient accumulation
of ``micro_batch_size`` clips per forward. Every random choice of a step (data augmentation,
mixup, dropout, stochastic depth) is drawn from generators seeded by (seed, step, micro-batch,
rank), and every clip's sampling from (seed, epoch, index), so a run resumed from a checkpoint
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import data as tdata
from ..config import RunConfig
from ..errors import TrainingError
from ..models import ViViT, count_parameters, create_model
from . import run
from . import state as ckpt
from .caption import CaptionTask
from .distributed import (Runtime, all_reduce_mean, barrier, gather_model, gather_optimizer_state,
                          init_runtime, is_sharded, load_model_state, load_optimizer_state, wrap_model)
from .evaluate import autocast, evaluate
from .logging import MetricLog, plot_run
from .init import initial_config, initialise
from .metrics import reversed_pair_accuracy
from .optim import EMA, build_optimizer, freeze, learning_rate, set_learning_rate


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from the run seed and step coordinates (stable across processes and runs)."""
    h = seed & 0xFFFFFFFF
    for p in parts:
        h = (h * 0x9E3779B97F4A7C15 + p + 1) & 0x7FFFFFFFFFFFFFFF
    return h


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against target distributions (label smoothing / mixup)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def multi_head_loss(logits: torch.Tensor, targets: list[torch.Tensor], splits: tuple[int, ...]) -> torch.Tensor:
    """The mean of the heads' cross-entropies (EPIC-KITCHENS: verb and noun, paper 4.3)."""
    heads = logits.split(list(splits), dim=-1)
    return sum(soft_cross_entropy(h, t) for h, t in zip(heads, targets)) / len(heads)


def micro_batch(batch_size: int, micro_batch_size: int | None, world_size: int) -> int:
    """Clips per forward pass per process: by default the global batch over the processes.

    The global batch is then reached with ``batch_size / (micro x world_size)`` accumulation steps.
    """
    if micro_batch_size is None:
        if batch_size % world_size:
            raise TrainingError(f"batch_size={batch_size} cannot be split over {world_size} processes; "
                                f"choose a multiple of {world_size}")
        return batch_size // world_size
    if batch_size % (micro_batch_size * world_size):
        raise TrainingError(
            f"batch_size={batch_size} is not a multiple of micro_batch_size={micro_batch_size} x "
            f"{world_size} process(es); choose a micro batch that divides {batch_size // world_size} "
            "(or leave --micro-batch-size out)")
    return micro_batch_size


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the run to stop at the next step boundary, with a checkpoint.

    A second Ctrl-C interrupts at once. Outside the main thread (no signal handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of the current epoch already consumed


class Trainer:
    def __init__(self, cfg: RunConfig, rt: Runtime | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.rt = rt or init_runtime()
        self.progress = progress and self.rt.is_main
        self.run_dir = Path(cfg.runtime.out) if cfg.runtime.out else None
        self.train_skips: tdata.SkipReport | None = None  # the training loader's, once it starts
        self.saved_step: int | None = None  # the step of the last checkpoint written
        self.task = CaptionTask(cfg) if cfg.model.task == "caption" else None  # None: classification

    # ------------------------------------------------------------------ set-up
    def _build_data(self) -> None:
        """The datasets, clipped as the model will see them (its frames and size come first)."""
        cfg = self.cfg
        geometry = initial_config(cfg)  # the model's config but for its classes
        size = geometry.image_size
        self.clip = tdata.ClipConfig(num_frames=geometry.num_frames, stride=cfg.clip.stride or 2,
                                     size=size[0] if size[0] == size[1] else size,
                                     views=cfg.clip.views, crops=cfg.clip.crops, shuffle_frames=cfg.clip.shuffle_frames)
        if self.task is not None:
            self.train_set, self.val_set = self.task.build_data(self.clip, self.progress)
            self.reverse_of, self.class_splits, self.class_names, self.head_names = {}, (), None, None
            return
        data = cfg.data.path
        if data is None:
            data = str(tdata.builtin_dataset(progress=self.progress and self.rt.is_main))
        self.train_set, self.val_set = tdata.build_datasets(
            data, cfg.data.val, format=None if cfg.data.format == "auto" else cfg.data.format,
            root=cfg.data.root, missing=cfg.data.missing, clip=self.clip, seed=cfg.runtime.seed,
            **({"val_split": cfg.data.val_split} if cfg.data.val_split is not None else {}))
        self.reverse_of = tdata.reversed_classes(data)  # the built-in dataset's time-reversed pairs
        self.class_splits = tuple(self.train_set.num_classes)
        self.class_names = tuple(tuple(names) for names in self.train_set.class_names)
        self.head_names = self.train_set.head_names
        if len(self.class_splits) == 1 and self.class_splits[0] < 2:
            raise TrainingError(f"{data}: the training data has {self.class_splits[0]} class(es); a classifier "
                                "needs at least two (check the layout with `tubelet data inspect`)")

    def _build_model(self, init_state: dict | None) -> None:
        cfg = self.cfg
        if init_state is not None:  # resume: the checkpoint's model, as saved
            model = init_state["model"]
            if self.task is not None:
                self.task.resumed(model)
        elif self.task is not None:
            encoder = None
            if cfg.model.init:
                encoder, self.init_steps = initialise(cfg, num_classes=1, class_names=None, log=self._log)
            model = self.task.build_model(encoder)
        else:
            num_classes = self.class_splits if len(self.class_splits) > 1 else self.class_splits[0]
            if cfg.model.init:
                model, self.init_steps = initialise(cfg, num_classes=num_classes, class_names=self.class_names,
                                                    log=self._log)
            else:
                model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.overrides)
        model.info = run.model_info(cfg, model, self.class_names, self.head_names, self.clip.stride)
        if cfg.runtime.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)
        self.model: ViViT = model.to(self.rt.device)
        train_only = self.task.train_only() if self.task is not None else cfg.optim.train_only
        if train_only != cfg.optim.train_only:
            self._log(f"--init {cfg.model.init}: the encoder stays frozen; training "
                      f"{train_only.replace(',', ' and ')} (--optim.train-only encoder,project,decoder trains it too)")
        freeze(self.model, train_only)  # before DDP / FSDP take the trainable parameters
        self.ema = EMA(self.model, cfg.optim.ema) if cfg.optim.ema else None
        self.wrapped = wrap_model(self.model, self.rt, cfg.runtime.parallel)
        if self.ema is not None and is_sharded(self.wrapped):  # the average is sharded like the model
            self.ema.model = wrap_model(self.ema.model, self.rt, "fsdp")
        self.forward = torch.compile(self.wrapped) if cfg.runtime.compile else self.wrapped

    def _log(self, msg: str) -> None:
        if self.rt.is_main:
            tqdm.write(msg)

    # ------------------------------------------------------------------ schedule
    def _schedule(self) -> None:
        opt, rt = self.cfg.optim, self.rt
        self.micro = micro_batch(opt.batch_size, opt.micro_batch_size, rt.world_size)
        self.accumulation = opt.batch_size // (self.micro * rt.world_size)
        self.steps_per_epoch = max(1, len(self.train_set) // opt.batch_size)
        total = math.ceil(opt.epochs * self.steps_per_epoch)
        if opt.uptrain_fraction is not None:
            source_steps = getattr(self, "init_steps", None)
            if not source_steps:
                raise TrainingError("uptrain_fraction needs --init from a tubelet training run (its "
                                    "checkpoints record how many steps it trained)")
            total = max(1, round(opt.uptrain_fraction * source_steps))
        if opt.max_steps is not None:
            total = min(total, opt.max_steps)
        self.total_steps = total
        self.warmup_steps = round(opt.warmup_epochs * self.steps_per_epoch)

    # ------------------------------------------------------------------ one step
    def _micro_batches(self, progress: Progress):
        """Yield (epoch, index in epoch, micro-batch) forever, starting at ``progress``'s position.

        One loader for the whole run (its worker processes persist); its sampler moves from epoch
        to epoch, and a resumed run starts the epoch after the micro-batches already consumed.
        """
        sampler = tdata.ClipSampler(len(self.train_set), shuffle=True, seed=self.cfg.runtime.seed,
                                    rank=self.rt.rank, world_size=self.rt.world_size, drop_last=True)
        loader = tdata.make_loader(self.train_set, sampler, batch_size=self.micro, workers=self.cfg.data.workers,
                                   pin_memory=self.rt.device.type == "cuda")
        self.train_skips = loader.skip_report
        usable = self.steps_per_epoch * self.accumulation
        epoch, skip = progress.epoch, progress.micro_in_epoch
        while True:
            sampler.set_epoch(epoch, skip=skip * self.micro)
            # islice stops before the loader decodes a batch past the epoch's last full step
            for i, batch in enumerate(itertools.islice(loader, usable - skip), start=skip):
                yield epoch, i, batch
            self._end_of_epoch(loader, epoch)
            epoch, skip = epoch + 1, 0

    def _end_of_epoch(self, loader: Any, epoch: int) -> None:
        report = getattr(loader, "skip_report", None)
        if report is not None and report.count and self.rt.is_main:
            self._log(report.summary(epoch))

    def _train_step(self, micro_batches: list[dict], step: int) -> float:
        cfg, rt = self.cfg, self.rt
        seed = cfg.runtime.seed
        lr = learning_rate(step, base=cfg.optim.lr, total=self.total_steps, warmup=self.warmup_steps,
                           minimum=cfg.optim.min_lr)
        set_learning_rate(self.optimizer, lr)
        total_loss = 0.0
        for m, batch in enumerate(micro_batches):
            gen = torch.Generator(device=rt.device).manual_seed(step_seed(seed, step, m, rt.rank))
            torch.manual_seed(step_seed(seed, step, m, rt.rank, 1))  # dropout, stochastic depth
            x = tdata.normalise(batch["video"].to(rt.device, non_blocking=True))  # -> (B, C, T, H, W)
            x = self.augment(x, generator=gen)
            if self.task is None:
                targets = tdata.soft_targets(batch["label"], self.class_splits, cfg.label_smoothing, rt.device)
                if cfg.mixup_alpha > 0:
                    x, targets = tdata.mixup(x, targets, cfg.mixup_alpha, generator=gen)
            last = m == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.wrapped, "no_sync") else self.wrapped.no_sync()
            with sync:
                with autocast(rt.device, cfg.runtime.precision):
                    if self.task is not None:  # a captioner: teacher forcing on one caption per video
                        loss = self.task.loss(self.forward, x, batch["label"], step, m, rt.device)
                    else:
                        logits = self.forward(x)
                if self.task is None:
                    loss = multi_head_loss(logits, targets, self.class_splits)
                (loss / len(micro_batches)).backward()
            total_loss += loss.item() / len(micro_batches)
        if not math.isfinite(total_loss):
            raise TrainingError(
                f"the loss became {total_loss} at step {step} (learning rate {lr:.3g}); the run stops "
                f"here and the last good checkpoint in {self.run_dir / 'checkpoints'} is kept. Try a "
                "lower --lr, --grad-clip 1, or --precision fp32, then --resume")
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.lr = lr
        return total_loss

    # ------------------------------------------------------------------ checkpoints
    def _save(self, progress: Progress) -> None:
        """A checkpoint of the full model and training state (every rank takes part in the gather)."""
        model = gather_model(self.wrapped, self.model, self.rt)
        optimizer = gather_optimizer_state(self.wrapped, self.optimizer, self.rt)
        ema = gather_model(self.ema.model, self.ema.model, self.rt) if self.ema else None
        if self.rt.is_main:
            state = {"optimizer": optimizer, "step": progress.step, "epoch": progress.epoch,
                     "micro_in_epoch": progress.micro_in_epoch, "rng": ckpt.rng_states(),
                     "ema": ema.state_dict() if ema is not None else None, "total_steps": self.total_steps,
                     "class_names": self.class_names, "head_names": self.head_names,
                     "train_config": self.cfg.to_dict()}
            ckpt.save_checkpoint(self.run_dir, model, state, progress.step)
        self.saved_step = progress.step
        barrier(self.rt)

    def _save_final(self, metrics: dict, steps: int) -> None:
        """``final/``: the model (the EMA weights if kept), with its classes, preprocessing and results."""
        model = (gather_model(self.ema.model, self.ema.model, self.rt) if self.ema
                 else gather_model(self.wrapped, self.model, self.rt))
        if self.rt.is_main:
            run.save_final(self.run_dir, model, metrics, steps)
        barrier(self.rt)

    # ------------------------------------------------------------------ the run
    def fit(self, resume: bool = False) -> dict:
        cfg, rt = self.cfg, self.rt
        if self.run_dir is None:  # every rank picks the folder before any rank creates one
            self.run_dir = run.default_run_dir(run.run_name(cfg.preset, cfg.model.task), resume)
            self.cfg = cfg = cfg.with_values({"runtime.out": str(self.run_dir)})
            barrier(rt)
        run.check_new_run(self.run_dir, resume)
        seed_everything(cfg.runtime.seed)  # the same initial weights on every rank and in every run
        self._build_data()
        progress = Progress()
        loaded = None
        if resume:
            path = ckpt.latest_checkpoint(self.run_dir)
            if path is not None:
                model, saved = ckpt.load_checkpoint(path, map_location="cpu")
                loaded = {"model": model, **saved}
                progress = Progress(saved["step"], saved["epoch"], saved["micro_in_epoch"])
                self._log(f"resuming {self.run_dir} from {path.name} (step {progress.step})")
        self._build_model(loaded)
        self._schedule()
        if rt.is_main:  # only now that data and model are known to be valid
            run.create_run_dir(self.run_dir, cfg, resume)
        barrier(rt)
        self.optimizer = build_optimizer(self.wrapped, cfg.optim)
        self.augment = tdata.build_augmentation(cfg.augment.preset,
                                                magnitude=cfg.augment.randaugment_magnitude).to(rt.device)
        if loaded is not None:
            load_optimizer_state(self.wrapped, self.optimizer, loaded["optimizer"], rt)
            ckpt.set_rng_states(loaded["rng"])
            if self.ema is not None and loaded.get("ema"):
                load_model_state(self.ema.model, loaded["ema"], rt)
        log = MetricLog(self.run_dir, enabled=rt.is_main)
        log.truncate_after(progress.step)
        if rt.is_main and loaded is None:
            self._log(f"training {cfg.model.name} ({count_parameters(self.model) / 1e6:.2f}M parameters, "
                      f"{self.model.config.kind}) on {len(self.train_set)} clips for {self.total_steps} "
                      f"steps of {cfg.optim.batch_size} clips ({self.accumulation} x {self.micro} per process, "
                      f"{rt.world_size} process(es)); run folder {self.run_dir}")
        self.lr = 0.0
        result = self._loop(progress, log)
        log.close()
        return result

    def _loop(self, progress: Progress, log: MetricLog) -> dict:
        cfg, rt = self.cfg, self.rt
        bar = tqdm(total=self.total_steps, initial=progress.step, desc="training", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        stream = self._micro_batches(progress)
        eval_interval = round(cfg.runtime.eval_every * self.steps_per_epoch) if cfg.runtime.eval_every else 0
        metrics: dict = {}
        window_clips, window_wait, window_start = 0, 0.0, time.perf_counter()
        with StopRequest() as stop:
            try:
                while progress.step < self.total_steps:
                    batches, wait = [], 0.0
                    for _ in range(self.accumulation):
                        t0 = time.perf_counter()
                        epoch, index, batch = next(stream)
                        wait += time.perf_counter() - t0
                        batches.append(batch)
                    loss = self._train_step(batches, progress.step)
                    progress.step += 1
                    progress.epoch = epoch
                    progress.micro_in_epoch = index + 1
                    if progress.micro_in_epoch >= self.steps_per_epoch * self.accumulation:
                        progress.epoch, progress.micro_in_epoch = epoch + 1, 0
                    window_clips += sum(len(b["video"]) for b in batches) * rt.world_size
                    window_wait += wait
                    bar.update(1)
                    if progress.step % cfg.runtime.log_every == 0 or progress.step == self.total_steps:
                        elapsed = time.perf_counter() - window_start
                        loss_avg = all_reduce_mean(loss, rt)
                        record = {"loss": loss_avg, "lr": self.lr, "epoch": progress.epoch,
                                  "clips_per_s": window_clips / elapsed, "data_wait": window_wait / elapsed}
                        log.write("train", progress.step, **record)
                        bar.set_postfix(loss=f"{loss_avg:.3f}", lr=f"{self.lr:.2e}",
                                        clips_s=f"{record['clips_per_s']:.1f}",
                                        wait=f"{100 * record['data_wait']:.0f}%")
                        window_clips, window_wait, window_start = 0, 0.0, time.perf_counter()
                    else:
                        log.write("train", progress.step, loss=loss, lr=self.lr, epoch=progress.epoch)
                    if progress.step % cfg.runtime.checkpoint_every == 0 or progress.micro_in_epoch == 0:
                        self._save(progress)
                    if eval_interval and progress.step % eval_interval == 0 and progress.step < self.total_steps:
                        metrics = self.validate(progress.step, log)
                    # one process stops at once; several agree at the logging steps (a collective on
                    # every step would synchronise the devices on the hot path)
                    if (not rt.distributed or progress.step % cfg.runtime.log_every == 0) and \
                            all_reduce_mean(float(stop.requested), rt) > 0:
                        bar.close()
                        if self.saved_step != progress.step:
                            self._save(progress)
                        raise KeyboardInterrupt(f"stopped at step {progress.step} of {self.total_steps} with a "
                                                f"checkpoint; continue with: tubelet train --out {self.run_dir} "
                                                "--resume")
            except torch.OutOfMemoryError as e:
                raise TrainingError(
                    f"out of memory with {self.micro} clips per forward pass: use a smaller "
                    f"--micro-batch-size (the global --batch-size {cfg.optim.batch_size} is kept by gradient "
                    "accumulation), --grad-checkpointing true, or --precision bf16") from e
            finally:
                bar.close()
        if self.saved_step != progress.step:  # the last step's checkpoint may be written already
            self._save(progress)
        metrics = self.validate(progress.step, log)
        skips = self.train_skips.run_files if self.train_skips else {}
        metrics["train_skipped"] = [f"{path}: {why}" for path, why in sorted(skips.items())]
        if rt.is_main:
            plot_run(self.run_dir, metrics.get("confusion"), self.class_names[0] if self.class_names else None)
        self._save_final(metrics, progress.step)
        return metrics

    def validate(self, step: int, log: MetricLog) -> dict:
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        sampler = tdata.ClipSampler(len(self.val_set), shuffle=False, seed=self.cfg.runtime.seed,
                                    rank=self.rt.rank, world_size=self.rt.world_size, drop_last=False, epoch=0)
        loader = tdata.make_loader(self.val_set, sampler, batch_size=max(1, self.micro // 2),
                                   workers=self.cfg.data.workers, pin_memory=self.rt.device.type == "cuda")
        model = self.ema.model if self.ema else self.model
        if self.task is not None:
            return self._validate_captions(model, loader, step, log)
        metrics = evaluate(model, loader, self.rt, class_splits=self.class_splits, head_names=self.head_names,
                           average=self.cfg.clip.average, precision=self.cfg.runtime.precision,
                           progress=self.progress, total=len(loader))
        if self.reverse_of and len(self.class_splits) == 1:
            metrics["reversed_pair_top1"] = reversed_pair_accuracy(metrics["scores"], metrics["labels"],
                                                                   self.reverse_of)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        log.write("eval", step, **scalars, skipped=len(metrics["skipped"]), skipped_files=metrics["skipped"])
        if self.rt.is_main:
            shown = ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f}%" for k, v in scalars.items()
                              if k.endswith(("top1", "top5")))
            self._log(f"step {step}: validation on {metrics['count']} videos "
                      f"({self.cfg.clip.views} views x {self.cfg.clip.crops} crops): {shown}")
        return metrics

    def _validate_captions(self, model, loader, step: int, log: MetricLog) -> dict:
        metrics = self.task.evaluate(model, loader, self.rt.device, progress=self.progress)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        by_motion = {"facts_correct_by_motion": metrics["facts_correct_by_motion"]} \
            if "facts_correct_by_motion" in metrics else {}
        log.write("eval", step, **scalars, **by_motion, skipped=len(metrics["skipped"]),
                  skipped_files=metrics["skipped"])
        if self.rt.is_main:
            shown = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in scalars.items() if k != "count")
            self._log(f"step {step}: captions of {metrics['count']} validation videos: {shown}")
            for example in metrics.get("examples", [])[:2]:
                self._log(f"  {Path(example['video']).name}: {example['caption']!r} (reference: "
                          f"{example['reference']!r})")
        return metrics
