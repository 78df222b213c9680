#!/usr/bin/env python
"""The README's still of ``seqvae play``: the page in headless Chromium after a scripted
drive — arrow keys pressed toward the first object until it is pushed, then ``d`` (dream)
and more pushing, so the still shows the model on its own beside the truth.

    python tools/still_play.py --out seqvae/pretrained/pusher_actions_play.png --seed 5

The keys go through the browser's input (tools/headless_chromium.py), the server is
``seqvae play``'s own (:func:`seqvae.cli.play.make_server`) on a free port of 127.0.0.1.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def toward(env, k: int = 0) -> str:
    """The arrow key that moves the gripper most directly toward object ``k``."""
    d = env.state.object_pos[0, k] - env.state.gripper_pos[0]
    if abs(float(d[0])) > abs(float(d[1])):
        return "ArrowRight" if float(d[0]) > 0 else "ArrowLeft"
    return "ArrowDown" if float(d[1]) > 0 else "ArrowUp"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--seed", type=int, default=5, help="the episode")
    p.add_argument("--follow", type=int, default=8, help="steps toward the object while the model follows")
    p.add_argument("--dream", type=int, default=6, help="steps (same direction) while it dreams")
    p.add_argument("--width", type=int, default=1100, help="viewport width")
    p.add_argument("--height", type=int, default=620, help="viewport height")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from seqvae.cli.play import make_server
    from tools.headless_chromium import Chromium, blank_fraction

    server = make_server(port=0, seed=args.seed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = server.session.env
    try:
        with Chromium(args.width, args.height) as browser:
            browser.open(server.url, settle=1.0)
            key = "ArrowRight"
            for _ in range(args.follow):
                key = toward(env)
                browser.press(key)
                browser.wait(0.35)
            browser.press("d")
            browser.wait(0.35)
            for _ in range(args.dream):
                browser.press(key)
                browser.wait(0.35)
            browser.wait(0.5)
            shot = browser.screenshot(args.out)
            errors = browser.console_errors()
    finally:
        server.shutdown()
        server.server_close()
    last = server.session.last
    print(f"wrote {shot}: step {last.step}, dreaming {last.dreaming} ({last.dream_steps} steps), object error "
          f"{last.check.get('error', float('nan')):.3f}; {blank_fraction(shot):.0%} of it one colour")
    for line in errors:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
