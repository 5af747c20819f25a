"""Requests per second and latency of `tubelet serve` under load: the real server process on
loopback, many concurrent clients uploading built-in videos, every request answered.

One model (predict.py's: ``vivit_micro``, Model 1, 8 frames of 64x64, random weights with a
non-zero head; the paper's 4 views x 3 crops per video) is saved as a checkpoint and served with
each ``--configs`` setting (``QUEUE:BATCH``, i.e. ``--queue`` and ``--batch``). ``--clients`` threads send
``--requests`` multipart uploads in all (10 built-in 64x64 H.264 videos, one per class, in turn);
a client answered 503 waits the ``Retry-After`` seconds and sends again, and the retries are
counted. Latency is from a request's first byte to its 200, retries included.

    python benchmarks/serve_load.py --quick --out /tmp/serve.json     # about 10 s on 2 CPU cores
    python benchmarks/serve_load.py --out benchmarks/results/serve_cpu.json

Times are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import common  # noqa: F401  (puts src/ on the path)
from common import describe, environment, write_json
from predict import make_model  # the same model as the prediction benchmark


def make_videos() -> list[bytes]:
    """One built-in video (64x64, 16 frames, H.264) per class, as the bytes a client uploads."""
    from tubelet.data.synth import SynthConfig, render, write_mp4

    config, out = SynthConfig(), []
    with tempfile.TemporaryDirectory() as tmp:
        for label in range(len(config.classes)):
            path = Path(tmp) / f"{label}.mp4"
            write_mp4(path, render(label, np.random.default_rng(label), config), fps=config.fps)
            out.append(path.read_bytes())
    return out


def load(served, videos: list[bytes], requests: int, clients: int) -> dict:
    """``requests`` uploads from ``clients`` threads; each retried after Retry-After on 503."""
    latencies, statuses, lock = [], {"503": 0, "other": 0}, threading.Lock()
    next_request = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                i = next(next_request, None)
            if i is None:
                return
            start = time.perf_counter()
            while True:
                status, body, headers = served.upload(videos[i % len(videos)])
                if status != 503:
                    break
                with lock:
                    statuses["503"] += 1
                time.sleep(float(headers.get("Retry-After", "1")))
            with lock:
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    statuses["other"] += 1
                    print(f"  request {i}: {status} {body.get('error')}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ms = sorted(1e3 * x for x in latencies)
    health = served.get("healthz")[1]
    return {"requests": requests, "clients": clients, "answered_200": len(ms), "answered_other": statuses["other"],
            "retries_after_503": statuses["503"], "seconds": seconds, "requests_per_s": len(ms) / seconds,
            "p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
            "max_ms": ms[-1], "model_batches": health["batches"],
            "mean_batch": health["answered"] / max(1, health["batches"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="requests in all, per setting (default: 200)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--configs", default="32:8,32:1,4:4",
                   help="server settings QUEUE:BATCH, comma-separated (default: 32:8,32:1,4:4: the defaults, "
                        "no batching, a queue small enough to answer 503)")
    p.add_argument("--device", default="cpu", help="the server's --device (default: cpu)")
    p.add_argument("--quick", action="store_true", help="40 requests from 8 clients, one setting (2:2, so that "
                                                        "some are answered 503): about 10 s on 2 CPU cores")
    p.add_argument("--out", help="write every row and the environment as JSON here")
    args = p.parse_args()
    if args.quick:
        args.requests, args.clients, args.configs = 40, 8, "2:2"
    env = environment(torch.device(args.device))
    print(describe(env))
    print(f"command: {env['command']}")
    from tubelet.serve.client import running

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp))
        model, videos = Path(tmp) / "ckpt", make_videos()
        for setting in args.configs.split(","):
            queue, batch = setting.split(":")
            with running(model, "--queue", queue, "--batch", batch, "--device", args.device,
                         log=Path(tmp) / "serve.stderr") as served:
                served.upload(videos[0])  # warm-up: the first forward pass
                row = {"queue": int(queue), "batch": int(batch), **load(served, videos, args.requests, args.clients)}
            rows.append(row)
            print(f"queue {queue:>3} batch {batch:>2}: {row['requests_per_s']:6.1f} requests/s, p50 "
                  f"{row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, {row['answered_200']} answered, "
                  f"{row['retries_after_503']} retried after 503", flush=True)
    print()
    print("| queue | batch | clients | requests | requests/s | p50 ms | p99 ms | answered 200 | retries after 503 "
          "| mean batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['queue']} | {r['batch']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['answered_200']} | {r['retries_after_503']} | "
              f"{r['mean_batch']:.2f} |")
    write_json(args.out, {"environment": env, "rows": rows})
    if any(r["answered_200"] != r["requests"] for r in rows):
        raise SystemExit("serve_load.py: some requests were not answered 200 (their errors are printed above)")


if __name__ == "__main__":
    main()
