"""Open a page in headless Chromium and look at it as a person would: a screenshot, the
console's errors (failed loads included), key presses, and JavaScript evaluated in the page.

Talks the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages, each
ended by a NUL byte, on file descriptors 3 and 4), so it needs only the standard library and
a ``chromium`` binary (Debian's ``chromium`` package). The browser runs with a fresh profile
and without background networking, component updates or sync: nothing is fetched.

    python tools/headless_chromium.py runs/demo/index.html --out page.png
    python tools/headless_chromium.py http://127.0.0.1:8000/ --out play.png --keys ArrowRight,ArrowRight --wait 2

Used by the ``slow`` browser tests (tests/test_report.py, tests/test_play.py).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe"]
KEYS = {  # DOM key -> (code, Windows virtual key code) for Input.dispatchKeyEvent
    "ArrowLeft": ("ArrowLeft", 37), "ArrowUp": ("ArrowUp", 38), "ArrowRight": ("ArrowRight", 39),
    "ArrowDown": ("ArrowDown", 40), " ": ("Space", 32), "d": ("KeyD", 68), "r": ("KeyR", 82), "n": ("KeyN", 78),
}


def find_chromium() -> str | None:
    """The Chromium binary on PATH (``chromium``, ``chromium-browser``, ``google-chrome``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium with one page, driven over the DevTools pipe (a context manager)."""

    def __init__(self, width: int = 1280, height: int = 900, binary: str | None = None, timeout: float = 30) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install chromium)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="seqvae-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:   # the pipe ends Chromium expects: it reads fd 3, writes fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            preexec_fn=child_fds, pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)

    # ------------------------------------------------------------------ protocol
    def _send(self, method: str, params: dict[str, Any] | None, session: bool) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _pump(self, deadline: float) -> bool:
        """Read what Chromium sent until ``deadline``; False when nothing came."""
        ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        chunk = os.read(self._from_chrome, 1 << 20)
        if not chunk:
            raise RuntimeError("chromium closed the DevTools pipe")
        self._buffer += chunk
        return True

    def _messages(self):
        while b"\0" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\0", 1)
            yield json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = False) -> dict[str, Any]:
        """Send one command and wait for its result (events that arrive meanwhile are kept)."""
        want = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            for message in self._messages():
                if message.get("id") == want:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})
                self.events.append(message)
            if not self._pump(deadline):
                raise TimeoutError(f"chromium did not answer {method} in {self.timeout:g} s")

    def wait(self, seconds: float) -> None:
        """Let the page run for ``seconds``, collecting its events."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pump(deadline)
            self.events.extend(self._messages())

    # ------------------------------------------------------------------- the page
    def open(self, url: str, settle: float = 1.0) -> None:
        """Navigate to ``url`` (a path becomes a file:// URL), wait for its load event, then ``settle`` s."""
        if "://" not in url and not url.startswith(("about:", "data:")):
            url = Path(url).resolve().as_uri()
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if not self._pump(deadline):
                raise TimeoutError(f"{url} did not finish loading in {self.timeout:g} s")
            self.events.extend(self._messages())
        self.wait(settle)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def press(self, key: str) -> None:
        """Press and release one key (a DOM ``key`` such as ``ArrowRight``) through the browser's input."""
        code, vk = KEYS.get(key, (key, 0))
        common = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", **common, **({"text": key} if len(key) == 1 else {})},
                  session=True)
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **common}, session=True)

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": metrics["width"],
                                                            "height": metrics["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def console_errors(self) -> list[str]:
        """Errors the page reported: console.error calls, uncaught exceptions, and log entries
        of level error (a resource that failed to load)."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                     for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                errors.append(f"exception: {text}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def blank_fraction(png: str | Path) -> float:
    """The share of a screenshot's pixels that have its most common colour (1.0: blank)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    return float(counts.max() / len(pixels))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="a page: a file path or a URL")
    p.add_argument("--out", default="screenshot.png", help="the screenshot (PNG)")
    p.add_argument("--width", type=int, default=1280, help="viewport width")
    p.add_argument("--height", type=int, default=900, help="viewport height")
    p.add_argument("--wait", type=float, default=1.0, help="seconds to let the page run after loading")
    p.add_argument("--keys", default="", help="comma-separated keys to press after loading (e.g. ArrowRight,d)")
    p.add_argument("--full-page", action="store_true", help="capture the whole page, not only the viewport")
    args = p.parse_args(argv)
    with Chromium(args.width, args.height) as browser:
        browser.open(args.url, settle=args.wait)
        for key in [k for k in args.keys.split(",") if k]:
            browser.press(" " if key == "Space" else key)
            browser.wait(0.3)
        browser.wait(args.wait if args.keys else 0)
        shot = browser.screenshot(args.out, full_page=args.full_page)
        errors = browser.console_errors()
    print(f"wrote {shot} ({blank_fraction(shot):.0%} of it one colour)")
    for line in errors:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
