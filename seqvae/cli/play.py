"""``seqvae play``: drive the embedded pushing world in a browser, the shipped
action-conditioned model's prediction beside the true simulator (:mod:`seqvae.control.live`).

    seqvae play                                  # http://127.0.0.1:8000/, model pusher-actions
    seqvae play runs/my_actions_run --port 8001  # a model of your own (action-conditioned, pusher data)

The server is the standard library's (``http.server``), bound to 127.0.0.1: the page and
its replies are all it serves, and the page fetches nothing else (its CSS and JavaScript
are inline, :mod:`seqvae.render.play_page`). Endpoints, all answering JSON with the frames
as PNG data URLs:

    GET  /          the page
    GET  /state     the latest frames and figures
    POST /step      {"action": [ax, ay]} (each in [-1, 1]; clamped): one step of truth and model
    POST /dream     {"on": true | false}: the model dreams from the current frame / wakes up
    POST /reset     {"seed": N} (optional): a new episode (default: the next seed)

The model predicts one frame per step, its recurrent state kept, on one CPU thread unless
``--threads`` says otherwise.
"""
from __future__ import annotations

import argparse
import base64
import errno
import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from seqvae.cli.common import check_device

DEFAULT_MODEL = "pusher-actions"
MAX_BODY = 4096


def png_data_url(frame: torch.Tensor) -> str:
    """``uint8 [C, H, W]`` as a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def frame_json(frame: Any) -> dict[str, Any]:
    """A :class:`~seqvae.control.live.LiveFrame` as the page reads it."""
    return {"step": frame.step, "truth": png_data_url(frame.truth), "predicted": png_data_url(frame.predicted),
            "dreaming": frame.dreaming, "dream_steps": frame.dream_steps, "check": frame.check,
            "model_seconds": frame.model_seconds}


class PlayServer(ThreadingHTTPServer):
    """The play page and its endpoints over one :class:`~seqvae.control.live.LiveSession`
    (steps are taken one at a time, under a lock)."""

    daemon_threads = True

    def __init__(self, session: Any, page: str, host: str = "127.0.0.1", port: int = 8000) -> None:
        super().__init__((host, port), PlayHandler)
        self.session, self.page, self.lock = session, page.encode(), threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class PlayHandler(BaseHTTPRequestHandler):
    server: PlayServer

    def log_message(self, format: str, *args: Any) -> None:   # quiet: one line per step would flood a terminal
        pass

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = HTTPStatus.OK) -> None:
        self._reply(status, json.dumps(value).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._reply(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/state":
            with self.server.lock:
                self._json(frame_json(self.server.session.last))
        else:
            self._json({"error": f"no such page {path}; the page is /"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ValueError(f"a request body is at most {MAX_BODY} bytes")
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            session = self.server.session
            with self.server.lock:
                if path == "/step":
                    action = body.get("action")
                    if not isinstance(action, list) or not all(isinstance(v, (int, float)) for v in action):
                        raise ValueError('/step takes {"action": [ax, ay]}')
                    frame = session.step(action)
                elif path == "/dream":
                    frame = session.dream(bool(body.get("on", not session.dreaming)))
                elif path == "/reset":
                    seed = body.get("seed", session.seed + 1)
                    if not isinstance(seed, int):
                        raise ValueError('/reset takes {"seed": N} with an integer N')
                    frame = session.reset(seed)
                else:
                    self._json({"error": f"no such endpoint {path}"}, HTTPStatus.NOT_FOUND)
                    return
                reply = frame_json(frame)
        except ValueError as err:   # bad JSON or arguments: the client's mistake
            self._json({"error": str(err)}, HTTPStatus.BAD_REQUEST)
            return
        self._json(reply)


def make_server(model_name: str = "", checkpoint: str = "", host: str = "127.0.0.1", port: int = 8000,
                seed: int = 0, device: str = "cpu") -> PlayServer:
    """A :class:`PlayServer` (not yet serving) for a shipped model or a checkpoint, in the
    world its data set belongs to."""
    from seqvae import registry
    from seqvae.control.live import LiveSession
    from seqvae.loading import load_model, model_source
    from seqvae.render.play_page import play_page

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"--host {host}: seqvae play serves this machine only (127.0.0.1)")
    source = model_source(checkpoint, model_name or (None if checkpoint else DEFAULT_MODEL))
    model, cfg, _ = load_model(source, torch.device(device))
    worlds = [w for w in registry.WORLDS.values() if w.data_name == cfg.data.name]
    if not worlds:
        raise ValueError(f"{source} was trained on data set {cfg.data.name!r}, which no world simulates; "
                         "seqvae play needs a model of a world's data (e.g. pusher-actions)")
    world = worlds[0]
    check = world.prediction_check() if world.prediction_check is not None else None
    session = LiveSession(world.make_env(cfg.data), model, check, seed=seed)
    page = play_page(f"the {world.name} world", model_name or checkpoint or DEFAULT_MODEL)
    return PlayServer(session, page, host, port)


def run(args: argparse.Namespace) -> None:
    check_device(args.device)
    torch.set_num_threads(args.threads)
    try:
        server = make_server(args.pretrained, args.checkpoint, args.host, args.port, args.seed, args.device)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"port {args.port} is in use; pass --port N (0: any free port)") from None
        raise
    print(f"seqvae play: open {server.url} (arrow keys move the gripper, d dreams, n: new episode; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("seqvae play: stopped")
    finally:
        server.server_close()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("play", help="drive the pushing world in a browser beside the model's live prediction")
    p.add_argument("checkpoint", nargs="?", default="",
                   help="an action-conditioned model of your own (run folder, .pt, .safetensors); "
                        f"default: --pretrained {DEFAULT_MODEL}")
    p.add_argument("--pretrained", default="", metavar="NAME", help=f"a shipped model (default {DEFAULT_MODEL})")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="only this machine: 127.0.0.1 (or localhost)")
    p.add_argument("--seed", type=int, default=0, help="the first episode")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the model")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one frame at a time: the CPU is enough)")
    p.set_defaults(func=run)
