"""Do the attention maps of Models 1-4 lie on the moving object? The share of each map's mass on
the object's pixels, against the share a uniform map puts there (the pixels the object covers).

The videos are the validation split of the built-in dataset, rendered again by
``tubelet.data.synth.render_scene`` with the dataset's own random streams (the frames the
dataset encodes, and the object's opacity in every frame); each model sees the first view the
pipeline's ``explain`` takes (the middle clip at the checkpoint's stride, centre crop), and the
mask is cut the same way (``tubelet.inference.explain.object_share``). The models are the run
folders of ``experiments/table2_small.py`` (Models 1-4 and the average-pool baseline; folders
that do not exist are skipped), and any ``--model`` folder.

    python benchmarks/attention_maps.py --quick --out /tmp/maps.json      # random tiny models, seconds
    python benchmarks/attention_maps.py --model tests/fixtures/models/micro-synth --videos 200 --random-control
    python benchmarks/attention_maps.py --runs 'runs/table2_small/{kind}_lr0.0003/final' --videos 200 \\
        --out benchmarks/results/attention_maps.json

Prints a table and writes JSON; nothing is asserted. A ratio of 1 is a map no better than uniform.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import common  # noqa: F401  (puts src/ on the path)
from common import environment, write_json

KINDS = {
    "spatiotemporal": "Model 1 (spatio-temporal)",
    "factorised_encoder": "Model 2 (factorised encoder)",
    "factorised_self_attention": "Model 3 (factorised self-attention)",
    "factorised_dot_product": "Model 4 (factorised dot-product)",
    "average_pool": "average-pool baseline",
}


def quick_models() -> dict[str, torch.nn.Module]:
    """Models 1-4 and the baseline at vivit_micro's input (8 frames of 64x64 at stride 2), one small
    layer, random weights: a smoke test of the whole measurement, not a result."""
    import tubelet
    from tubelet.data.synth import CLASSES
    from tubelet.models.info import ModelInfo, Preprocessing
    from tubelet.models.registry import VARIANTS

    classifier = dict(VARIANTS.values())
    models = {}
    for kind, title in KINDS.items():
        torch.manual_seed(0)
        model = tubelet.create_model("vivit_micro", kind=kind, classifier=classifier[kind], hidden_size=32,
                                     num_layers=1, num_heads=2, mlp_dim=32, temporal_layers=1).eval()
        model.info = ModelInfo(class_names=[CLASSES], preprocessing=Preprocessing(8, (64, 64), frame_stride=2))
        models[f"{title}, random"] = model
    return models


def folder_models(pattern: str, extra: list[str]) -> dict[str, torch.nn.Module]:
    import tubelet

    models = {}
    for kind, title in KINDS.items():
        folder = Path(pattern.format(kind=kind))
        if (folder / "config.json").is_file():
            models[title] = tubelet.load_model(folder, map_location="cpu")
        else:
            print(f"skipped {title}: no model in {folder} (python experiments/table2_small.py trains it)")
    for folder in extra:
        model = tubelet.load_model(folder, map_location="cpu")
        models[f"{KINDS[model.config.kind]}: {folder}"] = model
    return models


def with_random_weights(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture, classes and preprocessing with freshly drawn weights (seed 0): what
    the architecture and the pixels give without training."""
    import tubelet

    torch.manual_seed(0)
    fresh = tubelet.ViViT(model.config).eval()
    fresh.info = model.info
    return fresh


def measure(model: torch.nn.Module, videos: int, seed: int) -> dict:
    """Mean object share and uniform share of the map over ``videos`` validation videos."""
    from tubelet.data.synth import SynthConfig, render_scene
    from tubelet.inference import inference_clip
    from tubelet.inference.explain import object_share

    config = SynthConfig(seed=seed)
    clip = inference_clip(model, views=1, crops=1)
    shares, seconds = [], 0.0
    for n in range(videos):  # round-robin over the classes: video n // classes of class n % classes
        label, i = n % len(config.classes), n // len(config.classes)
        scene = render_scene(label, np.random.default_rng([config.seed, 1, label, i]), config)  # split 1: validate
        start = time.perf_counter()
        shares.append(object_share(model, scene.frames, scene.masks, clip))
        seconds += time.perf_counter() - start
    on, uniform = np.array(shares).T
    return {"videos": videos, "object_share": float(on.mean()), "uniform_share": float(uniform.mean()),
            "ratio": float(on.mean() / uniform.mean()), "median_video_ratio": float(np.median(on / uniform)),
            "videos_above_uniform": float((on > uniform).mean()), "ms_per_map": 1000 * seconds / videos,
            "frames": model.config.num_frames, "stride": clip.stride}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/table2_small/{kind}_lr0.0003/final",
                   help="model folders of the five kinds, '{kind}' replaced by each (default: the runs of "
                        "experiments/table2_small.py)")
    p.add_argument("--model", action="append", default=[], metavar="FOLDER", help="another model folder (repeatable)")
    p.add_argument("--videos", type=int, default=100, help="validation videos per model (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="the built-in dataset's seed (default: 0, the dataset's)")
    p.add_argument("--random-control", action="store_true",
                   help="also measure each model with random weights (same architecture and preprocessing)")
    p.add_argument("--quick", action="store_true", help="tiny random-weight models on 2 videos: a smoke test")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"))
    print(f"device: {env['device']} | torch {env['torch']} | commit {env['git_commit']}\ncommand: {env['command']}")
    models = quick_models() if args.quick else folder_models(args.runs, args.model)
    if not models:
        p.error("no model found: train them with `python experiments/table2_small.py` or name one with --model")
    if args.random_control and not args.quick:
        models.update({f"{name}, random weights": with_random_weights(m) for name, m in list(models.items())})
    videos = 2 if args.quick else args.videos
    rows = []
    for name, model in models.items():
        rows.append({"model": name, "kind": model.config.kind, **measure(model, videos, args.seed)})
    print("\n| model | videos | map on object | uniform (object's pixels) | ratio | videos above uniform | ms / map |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['videos']} | {100 * r['object_share']:.1f}% | {100 * r['uniform_share']:.1f}% | "
              f"{r['ratio']:.2f} | {100 * r['videos_above_uniform']:.0f}% | {r['ms_per_map']:.0f} |")
    write_json(args.out, {"rows": rows, "environment": env})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
