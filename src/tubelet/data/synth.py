"""The built-in motion dataset: procedurally generated clips whose class is their motion.

Every class comes with its time-reversal (moving left / moving right, rotating anticlockwise /
clockwise, growing / shrinking, appearing / disappearing, moving up / down; optionally swaying then
bobbing / bobbing then swaying). A video of the second class of a pair is rendered exactly like
one of the first class and then played backwards, and everything that is not the class (texture,
background, distractors, speeds, noise) is drawn from a distribution that looks the same played
backwards. So the two classes of a pair have identical distributions of *frame sets*: any model
that ignores frame order (a classifier on the mean frame, a bag of frames) is at chance on every
pair, and only temporal modelling can separate them.

Textures are real images: scikit-learn's handwritten digits and crops of scikit-image's
photographs, stored in ``tubelet/assets/textures.npz`` (see ``assets/TEXTURES.md``).

Output (Kinetics layout, readable by :func:`tubelet.data.build_datasets`)::

    OUT/train.csv, OUT/validate.csv     label,youtube_id,time_start,time_end,split
    OUT/<split>/<label>/<id>_000000_000002.mp4    H.264, yuv420p
    OUT/classes.txt                     one class name per line, in label order
    OUT/metadata.json                   classes, their reversed pairs, the generation parameters
    OUT/captions.csv                    with SynthConfig(captions=True): video,caption,split rows,
                                        five sentences per video (tubelet.captions.synth)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import av
import numpy as np

from ..errors import ConfigError, UsageError
from ..fileio import cache_root
from .formats import kinetics_clip_name


class FolderNotEmpty(UsageError, FileExistsError):
    """``tubelet data synth OUT`` with an ``OUT`` that already holds files."""

GENERATOR_VERSION = 5  # bump when the rendering changes, so cached datasets are regenerated

# (first class, its time-reversal, the motion of the first class). Class ids interleave the pairs.
PAIRS: list[tuple[str, str, str]] = [
    ("moving left", "moving right", "translate_x"),
    ("moving up", "moving down", "translate_y"),
    ("rotating anticlockwise", "rotating clockwise", "rotate"),
    ("growing", "shrinking", "scale"),
    ("appearing", "disappearing", "fade"),
]
# Opt-in (SynthConfig(event_order=True)): two events that each look the same played backwards (a
# sideways excursion, an up-and-down one), in one order or the other. Every two-frame window occurs
# in both classes, so a bag of local motions (the average-pool baseline over tubelets) cannot tell
# them apart; only their order can.
EVENT_ORDER_PAIR = ("swaying then bobbing", "bobbing then swaying", "sway_bob")


# The photographs the object crops come from, in the order of textures()["objects"] (equal shares).
PHOTOS = ["astronaut", "coffee", "cat", "rocket"]


@dataclass
class Scene:
    """One rendered video and what the generator knows about it.

    ``frames`` (T, S, S, 3) uint8; ``masks`` (T, S, S) float32, the object's opacity at every pixel
    of every frame (distractors excluded); ``facts``: the object (``kind`` digit or photo, ``tone``
    bright or dark), the ``motion`` of the pair and ``reversed`` (played backwards), the number of
    ``distractors``.
    """

    frames: np.ndarray
    masks: np.ndarray
    facts: dict


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the built-in dataset; the cache folder name is a hash of them."""

    seed: int = 0
    videos_per_class: int = 50  # training videos per class
    val_videos_per_class: int = 20
    size: int = 64  # frames are size x size
    frames: int = 16  # the whole motion fits one 16-frame clip at stride 1
    fps: int = 8
    distractors: int = 1  # at most this many small moving distractors per video
    noise: float = 6.0  # at most this pixel-noise standard deviation (0..255 scale)
    crf: int = 18  # x264 quality (lower: better)
    event_order: bool = False  # add the event-order pair (EVENT_ORDER_PAIR) as classes 10 and 11
    # Training videos per class of the event-order pair (None: videos_per_class). Learning the order
    # takes thousands of distinct videos (benchmarks/RESULTS.md, Table 2 in small).
    order_videos_per_class: int | None = None
    # Also write captions.csv: sentences naming the object, its motion, direction and event order.
    # The videos are the same with or without (the captions draw from their own random stream).
    captions: bool = False

    def __post_init__(self):
        if self.size < 16 or self.size % 2:
            raise ConfigError(f"size must be even and at least 16, got {self.size}")
        if self.frames < (8 if self.event_order else 4):
            raise ConfigError(f"frames must be at least 4 (8 with event_order: two excursions with two "
                             f"still frames between them), got {self.frames}")
        if self.videos_per_class < 1 or self.val_videos_per_class < 0:
            raise ConfigError("videos_per_class must be >= 1 and val_videos_per_class >= 0")
        if self.order_videos_per_class is not None:
            if not self.event_order:
                raise ConfigError("order_videos_per_class sets the event-order pair's videos: it needs "
                                 "event_order=True (--event-order)")
            if self.order_videos_per_class < 1:
                raise ConfigError(f"order_videos_per_class must be >= 1, got {self.order_videos_per_class}")

    @property
    def pairs(self) -> list[tuple[str, str, str]]:
        return PAIRS + [EVENT_ORDER_PAIR] if self.event_order else PAIRS

    @property
    def classes(self) -> list[str]:
        return [name for pair in self.pairs for name in pair[:2]]

    def train_videos(self, label: int) -> int:
        """Training videos of class ``label``."""
        if self.order_videos_per_class and self.pairs[label // 2] == EVENT_ORDER_PAIR:
            return self.order_videos_per_class
        return self.videos_per_class

    def digest(self) -> str:
        # Fields left at None, and opt-in outputs left off, are omitted, so an optional field added
        # later keeps existing caches.
        fields = {k: v for k, v in asdict(self).items()
                  if v is not None and not (k in _OPT_IN and v is False)}
        text = json.dumps({**fields, "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_OPT_IN = {"captions"}  # SynthConfig fields left out of its digest while False
CAPTIONS_PER_VIDEO = 5
CAPTION_STREAM = int.from_bytes(b"captions", "big")  # the captions' rng: (seed, split, label, i, this)

CLASSES: list[str] = SynthConfig().classes  # the default dataset's classes, in label order


@lru_cache(maxsize=1)
def textures() -> dict[str, np.ndarray]:
    """digits (N, 8, 8), objects (M, 32, 32, 3) and backgrounds (K, 64, 64), all uint8."""
    with resources.files("tubelet").joinpath("assets/textures.npz").open("rb") as f:
        with np.load(f) as data:
            return {k: data[k] for k in data.files}


# -- rendering (pure numpy) ---------------------------------------------------------------------
def _sample(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of (h, w, C) ``image`` at continuous pixel coords (u: x, v: y), u, v: (H, W)
    -> (H, W, C). Coordinates outside are clamped to the edge: sprites carry a transparent ring
    (:func:`_with_ring`), so outside a sprite is transparent."""
    h, w = image.shape[:2]
    u, v = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    x0, y0 = np.minimum(u.astype(int), w - 2), np.minimum(v.astype(int), h - 2)
    fx, fy = (u - x0)[..., None], (v - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _with_ring(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) -> (h + 2, w + 2, 4): a 1-pixel transparent ring (colour of the edge) around it."""
    rgb = np.pad(rgba[..., :3], ((1, 1), (1, 1), (0, 0)), mode="edge")
    alpha = np.pad(rgba[..., 3:], ((1, 1), (1, 1), (0, 0)))
    return np.concatenate([rgb, alpha], axis=-1)


def _paste(frame: np.ndarray, sprite: np.ndarray, centre: tuple[float, float], scale: float,
           angle: float, opacity: float = 1.0, mask: np.ndarray | None = None) -> None:
    """Alpha-composite an RGBA ``sprite`` (h, w, 4) onto ``frame`` (S, S, 3) in place.

    The sprite is scaled by ``scale`` (output pixels per sprite pixel), rotated by ``angle``
    radians anticlockwise as seen on screen, and centred at ``centre`` = (x, y). ``mask`` (S, S),
    if given, receives the sprite's opacity at every pixel.
    """
    size = frame.shape[0]
    reach = scale * np.hypot(*sprite.shape[:2]) / 2 + 2  # the sprite lies within this radius
    y0, y1 = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 1, size)
    x0, x1 = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 1, size)
    if y0 >= y1 or x0 >= x1 or opacity <= 0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs - centre[0], ys - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    # Inverse map: screen offset -> sprite offset (y points down, so anticlockwise is -angle).
    u = (cos * dx - sin * dy) / scale + (sprite.shape[1] - 1) / 2
    v = (sin * dx + cos * dy) / scale + (sprite.shape[0] - 1) / 2
    rgba = _sample(sprite, u, v)
    alpha = rgba[..., 3:] * opacity
    window = frame[y0:y1, x0:x1]
    window *= 1 - alpha
    window += alpha * rgba[..., :3]
    if mask is not None:
        mask[y0:y1, x0:x1] = alpha[..., 0]


def _luminance(rgb: np.ndarray) -> float:
    return float(np.mean(rgb[..., :3] @ np.array([0.299, 0.587, 0.114])))


def _background(rng: np.random.Generator, size: int, tex: dict[str, np.ndarray], dark: bool
                ) -> np.ndarray:
    """A static (S, S, 3) float background in [0, 255]: a tinted photo/texture crop or a gradient,
    kept dark or light so the object stands out."""
    low, high = (10.0, 110.0) if dark else (145.0, 245.0)
    if rng.random() < 0.7:
        grey = tex["backgrounds"][rng.integers(len(tex["backgrounds"]))].astype(np.float64)
        ys, xs = np.mgrid[0:size, 0:size] * (grey.shape[0] / size)
        grey = _sample(grey[..., None], xs, ys)[..., 0]
        if rng.random() < 0.5:
            grey = grey[:, ::-1]
        grey = (grey - grey.min()) / max(np.ptp(grey), 1.0)
    else:  # a smooth gradient in a random direction
        ys, xs = np.mgrid[0:size, 0:size] / size
        theta = rng.uniform(0, 2 * np.pi)
        grey = (np.cos(theta) * xs + np.sin(theta) * ys)
        grey = (grey - grey.min()) / max(np.ptp(grey), 1e-6)
    tint = rng.uniform(0.6, 1.0, size=3)
    # Texture at a third of the level range or less: clutter, but the object stays the salient thing.
    level = low + (high - low) * (0.5 + (grey[..., None] - 0.5) * rng.uniform(0.1, 0.35))
    return np.clip(level * tint / tint.max(), 0, 255)


def _object_sprite(rng: np.random.Generator, tex: dict[str, np.ndarray], bright: bool
                   ) -> tuple[np.ndarray, dict]:
    """An RGBA float sprite (h, w, 4), a coloured handwritten digit or a photo crop, bright or dark;
    and what it is: ``{"kind": "digit", "index": i}`` or ``{"kind": "photo", "photo": name}``."""
    if rng.random() < 0.5:
        index = int(rng.integers(len(tex["digits"])))
        digit = tex["digits"][index].astype(np.float64) / 255
        colour = rng.uniform(190, 255, size=3) if bright else rng.uniform(0, 60, size=3)
        rgb = np.broadcast_to(colour, digit.shape + (3,))
        alpha = np.clip(digit * 1.5, 0, 1)[..., None]
        return _with_ring(np.concatenate([rgb, alpha], axis=-1)), {"kind": "digit", "index": index}
    index = int(rng.integers(len(tex["objects"])))
    photo = tex["objects"][index].astype(np.float64)
    photo = photo - photo.mean() + (185 if bright else 70)  # keep its texture, set its level
    photo = np.clip(photo, 0, 255)
    # A thick contrasting frame makes orientation and extent visible on any background.
    border = np.full((36, 36, 3), 255.0 if bright else 0.0)
    border[2:-2, 2:-2] = photo
    sprite = _with_ring(np.concatenate([border, np.ones((36, 36, 1))], axis=-1))
    return sprite, {"kind": "photo", "photo": PHOTOS[index * len(PHOTOS) // len(tex["objects"])]}


def _distractor_sprite(rng: np.random.Generator, tex: dict[str, np.ndarray]) -> np.ndarray:
    digit = tex["digits"][rng.integers(len(tex["digits"]))].astype(np.float64) / 255
    colour = rng.uniform(0, 255, size=3)
    return _with_ring(np.concatenate([np.broadcast_to(colour, digit.shape + (3,)),
                                      np.clip(digit, 0, 1)[..., None]], axis=-1))


def render_forward(motion: str, rng: np.random.Generator, config: SynthConfig) -> Scene:
    """One video of the *first* class of a pair.

    Every nuisance (background, distractor paths, noise) is time-symmetric in distribution, so
    the video played backwards is a sample of the reversed class.
    """
    tex = textures()
    s, t = config.size, config.frames
    dark = bool(rng.random() < 0.5)
    background = _background(rng, s, tex, dark)
    sprite, thing = _object_sprite(rng, tex, bright=dark)
    side = max(sprite.shape[:2])
    base = rng.uniform(0.3, 0.4) * s / side  # sprite scale: the object is 30-40 % of the frame
    progress = np.linspace(0.0, 1.0, t)  # constant speed
    angle0 = rng.uniform(-0.3, 0.3)
    half = base * side / 2
    centre = rng.uniform(half, s - half, size=2)
    scale = np.full(t, base)
    angle = np.full(t, angle0)
    opacity = np.ones(t)
    cx, cy = np.full(t, centre[0]), np.full(t, centre[1])
    if motion in ("translate_x", "translate_y"):
        travel = rng.uniform(0.4, 0.65) * s  # pixels over the whole video
        room = s - 2 * half - travel
        start = half + rng.uniform(0, max(room, 0)) + travel  # moving towards smaller x / y
        path = start - travel * progress
        if motion == "translate_x":
            cx = path
        else:
            cy = path
    elif motion == "rotate":
        # Like a clock hand: the object turns rigidly about a pivot below it, starting at twelve
        # o'clock. A spin about the object's own centre with a random starting angle gives every
        # frame-level statistic the same mean in both directions (only products of features tell
        # them apart), and vivit_micro stayed at chance on that pair in every run; a fixed start
        # gives the direction a first-order cue, as a translation's start and end positions do.
        turn = np.deg2rad(rng.uniform(150, 270)) * progress  # anticlockwise
        angle = angle0 + turn
        radius = rng.uniform(0.15, 0.25) * s
        low, high = min(half + radius, s / 2), max(s - half - radius, s / 2)
        pivot = rng.uniform(low, high, size=2)
        cx = pivot[0] - radius * np.sin(turn)  # y points down: up first, then to the left
        cy = pivot[1] - radius * np.cos(turn)
    elif motion == "scale":
        small = base * rng.uniform(0.33, 0.5)
        scale = small * (base / small) ** progress  # growing, at a constant rate
    elif motion == "fade":
        opacity = progress  # appearing
    elif motion == "sway_bob":
        # Two excursions, each out and back along a sine bump (the same played backwards): first
        # sideways, then up or down. Within any two frames the object moves either horizontally or
        # vertically, never both: at least two still frames separate the excursions, so no window
        # of two frames at stride 1 or 2 spans both and gives the order away locally. The gaps
        # before the first and after the second come from the same range, so the reversed video
        # is a sample of the other order.
        width = (t - 6) // 2  # frames of each excursion away from the rest position
        before, after = rng.integers(0, 2, size=2)
        signs = rng.choice([-1.0, 1.0], size=2)
        # A few pixels per frame, like the translations (twice as far, the object jumps past an
        # 8-pixel patch between the two frames of a tubelet at stride 2).
        reach = rng.uniform(0.1, 0.15, size=2) * s

        def bump(start: int) -> np.ndarray:
            k = np.arange(t) - start
            return np.where((k > 0) & (k <= width), np.sin(np.pi * k / (width + 1)), 0.0)

        # The rest position leaves room for the excursion on its side.
        rest = [rng.uniform(half + max(-sign * r, 0), s - half - max(sign * r, 0))
                for sign, r in zip(signs, reach)]
        cx = rest[0] + signs[0] * reach[0] * bump(before)
        cy = rest[1] + signs[1] * reach[1] * bump(t - 2 - after - width)
    else:
        raise ValueError(f"unknown motion {motion!r}")
    # Distractors: small digits on straight paths in random directions (reversal-symmetric).
    distractors = []
    for _ in range(int(rng.integers(0, config.distractors + 1))):
        d_sprite = _distractor_sprite(rng, tex)
        d_scale = rng.uniform(0.08, 0.14) * s / 8
        start, end = rng.uniform(0, s, size=2), rng.uniform(0, s, size=2)
        distractors.append((d_sprite, d_scale, start, end, rng.uniform(0, 2 * np.pi)))
    noise = rng.uniform(0, config.noise)
    frames = np.empty((t, s, s, 3), np.uint8)
    masks = np.zeros((t, s, s), np.float32)
    for i in range(t):
        frame = background.copy()
        for d_sprite, d_scale, start, end, d_angle in distractors:
            _paste(frame, d_sprite, tuple(start + (end - start) * progress[i]), d_scale, d_angle)
        _paste(frame, sprite, (cx[i], cy[i]), scale[i], angle[i], opacity[i], mask=masks[i])
        if noise > 0:
            frame += rng.normal(0, noise, size=frame.shape)
        frames[i] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    # The object's tone: a bright object on a dark background, a dark one on a light background.
    facts = dict(thing, tone="bright" if dark else "dark", motion=motion, reversed=False,
                 distractors=len(distractors))
    return Scene(frames, masks, facts)


def render_scene(label: int, rng: np.random.Generator, config: SynthConfig) -> Scene:
    """One video of class ``label`` (an index into config.classes), with its masks and facts."""
    scene = render_forward(config.pairs[label // 2][2], rng, config)
    if label % 2:
        scene = Scene(scene.frames[::-1].copy(), scene.masks[::-1].copy(), dict(scene.facts, reversed=True))
    return scene


def render(label: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """(T, S, S, 3) uint8 frames of one video of class ``label`` (an index into config.classes)."""
    return render_scene(label, rng, config).frames


def write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int = 18) -> None:
    """Encode (T, H, W, 3) uint8 frames as H.264 (libx264, yuv420p) in an MP4 file."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # x264's macroblock-tree lookahead made identical inputs encode differently now and then;
        # without it (and with one thread) the same frames always give the same bytes.
        stream.options = {"crf": str(crf), "preset": "veryfast",
                          "x264-params": "no-mbtree=1:rc-lookahead=0"}
        stream.codec_context.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# -- the dataset on disk ------------------------------------------------------------------------
def metadata(config: SynthConfig) -> dict:
    """What metadata.json holds: classes, each class's reversed twin and pair, the parameters."""
    classes = []
    for label, name in enumerate(config.classes):
        pair = label // 2
        classes.append({"id": label, "name": name, "pair": pair, "motion": config.pairs[pair][2],
                        "reverse": config.classes[label ^ 1], "reverse_id": label ^ 1})
    return {"name": "tubelet-synth", "version": GENERATOR_VERSION, "config": asdict(config),
            "classes": classes, "pairs": [[2 * p, 2 * p + 1] for p in range(len(config.pairs))],
            "format": "kinetics", "train": "train.csv", "val": "validate.csv",
            "class_names": "classes.txt", **({"captions": "captions.csv"} if config.captions else {}),
            # A horizontal flip turns moving left into moving right and clockwise into anticlockwise.
            "augment": "none"}


def reversed_classes(folder: str | Path) -> dict[int, int]:
    """Class -> its time-reversed class, from a built-in dataset's metadata.json (else empty): the
    pairs whose "reversed pair top-1" measures whether a model sees the order of frames."""
    meta = Path(folder) / "metadata.json"
    if not meta.is_file():
        return {}
    classes = json.loads(meta.read_text()).get("classes", [])
    return {c["id"]: c["reverse_id"] for c in classes if c.get("reverse_id") is not None}


def generate(out: str | Path, config: SynthConfig = SynthConfig(), progress: bool = True,
             workers: int | None = None) -> Path:
    """Write the dataset to the new folder ``out`` atomically (a temporary sibling, then a rename).

    Deterministic: video ``i`` of class ``c`` in a split depends only on (seed, split, c, i), not
    on ``workers`` (processes; default: the CPU count).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FolderNotEmpty(f"{out} exists and is not empty; choose a new folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write(tmp, config, progress, workers or os.cpu_count() or 1)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _make_video(job: tuple[Path, SynthConfig, str, int, int, int]) -> tuple[dict, list[dict]]:
    """Render and write one video; returns its CSV row and its caption rows (none unless
    config.captions)."""
    folder, config, split, split_id, label, i = job
    rng = np.random.default_rng([config.seed, split_id, label, i])
    scene = render_scene(label, rng, config)
    seconds = int(np.ceil(config.frames / config.fps))
    video_id = f"{split[0]}{label:02d}{i:05d}"
    relative = Path(split, config.classes[label], kinetics_clip_name(video_id, 0, seconds))
    write_mp4(folder / relative, scene.frames, config.fps, config.crf)
    row = {"label": config.classes[label], "youtube_id": video_id, "time_start": 0,
           "time_end": seconds, "split": split}
    captions = []
    if config.captions:
        from ..captions.synth import captions_for
        caption_rng = np.random.default_rng([config.seed, split_id, label, i, CAPTION_STREAM])
        captions = [{"video": relative.as_posix(), "caption": text, "split": split}
                    for text in captions_for(scene.facts, caption_rng, CAPTIONS_PER_VIDEO)]
    return row, captions


def _write(folder: Path, config: SynthConfig, progress: bool, workers: int) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm
    splits = [("train", 0, config.train_videos), ("validate", 1, lambda label: config.val_videos_per_class)]
    jobs = [(folder, config, split, split_id, label, i) for split, split_id, count in splits
            for label in range(len(config.classes)) for i in range(count(label))]
    for split, _, _ in splits:
        for name in config.classes:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
    bar = dict(desc="synth videos", unit="video", total=len(jobs), disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            made = list(tqdm(pool.map(_make_video, jobs, chunksize=16), **bar))
    else:
        made = [_make_video(job) for job in tqdm(jobs, **bar)]
    rows = [row for row, _ in made]
    for split, file in (("train", "train.csv"), ("validate", "validate.csv")):
        with open(folder / file, "w", newline="") as f:
            writer = csv.DictWriter(f, ["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writeheader()
            writer.writerows(row for row in rows if row["split"] == split)
    if config.captions:
        with open(folder / "captions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["video", "caption", "split"])
            writer.writeheader()
            writer.writerows(caption for _, captions in made for caption in captions)
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in config.classes))
    # Written last: its presence marks a complete dataset.
    (folder / "metadata.json").write_text(json.dumps(metadata(config), indent=2) + "\n")


def builtin_dataset(config: SynthConfig = SynthConfig(), cache_dir: str | Path | None = None,
                  progress: bool = True, workers: int | None = None) -> Path:
    """The folder of the built-in dataset for ``config``: reused from the cache, or generated.

    The folder is ``<cache>/synth-<hash of config>``; two processes generating at once both
    succeed and one result is kept.
    """
    folder = Path(cache_dir or cache_root()) / f"synth-{config.digest()}"
    if (folder / "metadata.json").is_file():
        return folder
    if folder.exists():  # left by a generator of an older layout, without its marker
        shutil.rmtree(folder)
    try:
        generate(folder, config, progress, workers)
    except OSError:  # another process renamed its copy into place first
        if not (folder / "metadata.json").is_file():
            raise
    return folder
