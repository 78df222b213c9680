"""How fast ``seqvae play`` predicts: the shipped model's frames per second on this CPU,
one frame per step with its recurrent state kept (:mod:`seqvae.control.live`).

Three figures, each over ``--steps`` steps after a short warm-up, following the truth and
dreaming: the model's own step (``model frames/s``), a whole session step (simulator,
model and the colour tracker's check: ``session steps/s``), and a whole round trip through
the server as the page makes it (``POST /step`` over HTTP on 127.0.0.1, two PNGs encoded
and decoded: ``HTTP steps/s``). The page's own rate is the last, minus the browser's drawing.

    python tools/bench_play.py --threads 1 --steps 100
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def policy(i: int) -> list[float]:
    """Sweep right and left, drifting down: the gripper meets objects now and then."""
    return [1.0 if (i // 12) % 2 == 0 else -1.0, 0.4 if (i // 30) % 2 == 0 else -0.4]


def http_steps(url: str, steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        body = json.dumps({"action": policy(i)}).encode()
        request = urllib.request.Request(url + "step", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            json.loads(reply.read())
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--steps", type=int, default=100, help="steps per measurement")
    p.add_argument("--pretrained", default="pusher-actions", help="the shipped model")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from seqvae.cli.play import make_server
    from seqvae.control.live import measure_steps

    server = make_server(args.pretrained, port=0, seed=0)
    session = server.session
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"{args.pretrained}, {args.threads} thread(s), {args.steps} steps each; load average "
          f"{os.getloadavg()[0]:.2f} over 1 min, {os.cpu_count()} CPUs")
    try:
        for mode in ("following", "dreaming"):
            session.reset(0)
            session.dream(mode == "dreaming")
            measure_steps(session, 5, policy)                                         # warm-up
            figures = measure_steps(session, args.steps, policy)
            session.reset(0)
            session.dream(mode == "dreaming")
            rate = http_steps(server.url, args.steps)
            print(f"{mode}: model {figures['model_frames_per_s']:.1f} frames/s, session {figures['steps_per_s']:.1f} "
                  f"steps/s, HTTP {rate:.1f} steps/s")
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
