"""Captioning: plain greedy decoding against speculative decoding, and the GQA cache's bytes.

A trained captioner (``--model``, a run folder of ``tubelet train --task caption``) captions the
centre clips of held-out built-in videos, in batches, greedily:

- plain: one decoder call per word (``autoregressive_generate`` on the video-prefix LM);
- speculative with ``truncated:L`` drafts (the captioner's first L decoder blocks, encoder and
  projection shared) at several K, and with ``--draft`` (another captioner) if given;
- beam search (``--beams``), which looks for another caption: its share of captions that differ
  from greedy and the facts both get right are reported beside its time.

The methods run round-robin in one process (paired samples). The greedy words of every method
are checked to be identical before anything is timed. Each row reports words/s, the ratio over
plain decoding, acceptance (accepted / drafted), words per target call, and where the time goes
(the encoder runs once per batch for every method). The cache table compares the bytes per
cached token of the captioner's decoder with a multi-head decoder of the same width.

    python benchmarks/captions.py --quick --out /tmp/captions.json      # random weights, seconds
    python benchmarks/captions.py --model runs/caption --videos 64 --out benchmarks/results/captions_cpu.json

Times are printed and written, never asserted.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import common  # noqa: F401  (puts src/ on the path)
from common import add_run_args, start, time_interleaved, write_json


def quick_captioner():
    """A small captioner with random weights (large enough that its words vary)."""
    import tubelet
    from tubelet.captions.synth import captions_for
    from tubelet.data.synth import SynthConfig, render_scene
    from tubelet.models.captioner import Captioner, CaptionerConfig, WordVocab
    from tubelet.models.decoder import DecoderConfig
    config = SynthConfig()
    captions = [c for label in range(10) for c in captions_for(
        render_scene(label, np.random.default_rng(label), config).facts, np.random.default_rng(label))]
    torch.manual_seed(0)
    encoder = tubelet.create_model("vivit_micro", num_classes=1, num_frames=8, image_size=64)
    model = Captioner(encoder, WordVocab.build(captions),
                      CaptionerConfig(decoder=DecoderConfig(vocab_size=0, dim=128, num_layers=2, num_heads=4,
                                                            num_kv_heads=1, mlp_dim=384)))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def held_out_clips(model, count: int) -> tuple[torch.Tensor, list[dict]]:
    """(count, 3, T, H, W) centre clips of built-in videos not in the training set (the event-order
    pair included, as in the built-in caption data), and each video's facts."""
    from tubelet.data import normalise
    from tubelet.data.synth import SynthConfig, render_scene
    from tubelet.inference.pipeline import inference_clip, views_of_frames
    config = SynthConfig(seed=777, event_order=True)
    clip = inference_clip(model.encoder, views=1, crops=1)
    scenes = [render_scene(i % len(config.classes), np.random.default_rng([777, i]), config) for i in range(count)]
    views = [views_of_frames(scene.frames, clip)[0] for scene in scenes]
    return normalise(torch.stack(views)), [scene.facts for scene in scenes]


def cache_bytes_per_token(model) -> dict:
    """Bytes of keys and values one cached token takes in the captioner's decoder, and in the same
    decoder with multi-head attention (one key/value head per query head)."""
    cfg = model.decoder.cfg
    per_head = 2 * cfg.head_dim * 4  # key + value, float32
    return {"layers": cfg.num_layers, "heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads,
            "bytes_gqa": cfg.num_layers * cfg.num_kv_heads * per_head,
            "bytes_mha": cfg.num_layers * cfg.num_heads * per_head}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a captioner's run or checkpoint folder (required unless --quick)")
    p.add_argument("--draft", help="another captioner (same vocabulary) as a draft, besides truncated:L")
    p.add_argument("--videos", type=int, default=32, help="held-out videos captioned per call (default: 32)")
    p.add_argument("--batch", type=int, default=16, help="videos per batch (default: 16)")
    p.add_argument("--ks", default="2,4", help="draft lengths K to try (default: 2,4)")
    p.add_argument("--layers", help="the truncated:L drafts to try, a comma list of L (default: every L below the "
                                    "model's decoder blocks; e.g. 2,15,29 for SmolLM2's 30)")
    p.add_argument("--beams", type=int, default=4, help="also time beam search with this many beams and score "
                                                        "its captions' facts (1: skip; default: 4)")
    p.add_argument("--quick", action="store_true", help="a random-weight captioner, few videos: a smoke run")
    add_run_args(p, warmup=1, repeats=5)
    args = p.parse_args()
    if args.quick:
        args.videos, args.batch, args.repeats = min(args.videos, 4), min(args.batch, 4), min(args.repeats, 2)
    elif not args.model:
        p.error("--model is required (a run folder of tubelet train --task caption), or --quick")
    device, env = start(args)
    from tubelet.captions.pipeline import load_captioner
    model = quick_captioner().to(device) if args.quick else load_captioner(args.model, device)
    clips, facts = held_out_clips(model, args.videos)
    clips = clips.to(device)
    batches = clips.split(args.batch)
    layers = [int(n) for n in args.layers.split(",")] if args.layers else range(1, model.decoder.cfg.num_layers)
    drafts = {f"truncated:{n}": model.truncated(n) for n in layers}
    if args.draft:
        drafts["draft"] = load_captioner(args.draft, device)
    ks = [int(k) for k in args.ks.split(",")]

    def method(draft=None, k: int = 4, beams: int = 1):
        def run():
            return [model.caption(b, draft=draft, k=k, beams=beams) for b in batches]
        return run

    methods = {"plain": method()}
    methods.update({f"{name} K={k}": method(d, k) for name, d in drafts.items() for k in ks})
    if args.beams > 1:
        methods[f"beams={args.beams}"] = method(beams=args.beams)
    # the greedy words of every method, and the statistics of one pass
    from tubelet.captions import facts_correct
    reference = None
    stats = {}
    for name, fn in methods.items():
        outs = fn()
        words = [t for texts, _ in outs for t in texts]
        if reference is None:
            reference = words
        if name.startswith("beams="):  # a search for another caption: how often it differs, and its facts
            stats["beam_search"] = {"beams": args.beams, "differs_from_greedy": float(np.mean(
                [a != b for a, b in zip(words, reference)])), "facts_correct": float(np.mean(
                [facts_correct(w, f) for w, f in zip(words, facts)]))}
        elif words != reference:
            raise SystemExit(f"{name}: greedy captions differ from plain decoding; the benchmark stops")
        s = [o.stats for _, o in outs]
        generated = sum(len(ids) for _, o in outs for ids in o.tokens)  # the captions' words (and <eos>)
        stats[name] = {"words": generated, "target_calls": sum(x.target_calls for x in s),
                       "draft_calls": sum(x.draft_calls for x in s),
                       "acceptance": (sum(x.accepted for x in s) / max(sum(x.drafted for x in s), 1)
                                      if " K=" in name else None)}
    timings = time_interleaved(methods, device, warmup=args.warmup, repeats=args.repeats, min_repeat_ms=0)
    base = timings["plain"].median
    rows = []
    print(f"\n{args.videos} held-out videos in batches of {args.batch}; greedy captions identical for every "
          f"method; e.g. {reference[0]!r}")
    print(f"{'method':<18} {'words/s':>8} {'ms/caption':>10} {'x plain':>8} {'spread':>13} {'accept':>7} "
          f"{'words/target call':>18}")
    for name, t in timings.items():
        if isinstance(t, str):
            print(f"{name:<18} failed: {t}")
            continue
        st = stats[name]
        ratios = sorted(b / x for b, x in zip(timings["plain"].ms, t.ms))
        row = {"method": name, "words_per_s": st["words"] / (t.median / 1e3),
               "ms_per_caption": t.median / args.videos, "ratio": base / t.median,
               "ratio_min": ratios[0], "ratio_max": ratios[-1], **st,
               "words_per_target_call": st["words"] / st["target_calls"], "timing": t.summary()}
        rows.append(row)
        acc = "-" if st["acceptance"] is None else f"{st['acceptance']:.2f}"
        print(f"{name:<18} {row['words_per_s']:8.1f} {row['ms_per_caption']:10.1f} {row['ratio']:7.2f}x "
              f"{row['ratio_min']:5.2f}-{row['ratio_max']:.2f}x {acc:>7} {row['words_per_target_call']:18.2f}")
    greedy_facts = float(np.mean([facts_correct(w, f) for w, f in zip(reference, facts)]))
    print(f"\nfacts correct (motion, direction and order) over the {args.videos} videos: greedy {greedy_facts:.3f}"
          + (f", beam search ({args.beams} beams) {stats['beam_search']['facts_correct']:.3f}, its caption "
             f"differing from greedy for {stats['beam_search']['differs_from_greedy']:.1%}"
             if "beam_search" in stats else ""))
    cache = cache_bytes_per_token(model)
    print(f"\nkey/value cache per token: {cache['bytes_gqa']} bytes with {cache['kv_heads']} key/value head(s) of "
          f"{cache['heads']} ({cache['layers']} layers), {cache['bytes_mha']} bytes multi-head "
          f"({cache['bytes_mha'] / cache['bytes_gqa']:.0f}x)")
    write_json(args.out, {"environment": env, "rows": rows, "cache": cache, "example": reference[:5],
                          "greedy_facts_correct": greedy_facts, "beam_search": stats.get("beam_search")})


if __name__ == "__main__":
    main()
