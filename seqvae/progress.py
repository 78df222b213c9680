"""Progress of a long command for a person (:class:`Bar`): a tqdm bar on a terminal, plain
lines when stdout is a file or a pipe (a log), as the trainer's progress does
(:mod:`seqvae.training.progress`). ``seqvae eval`` counts batches (and the clips I3D has
embedded for FVD), ``seqvae plan`` episodes.

Library code takes a ``progress`` argument (a :class:`Bar`, or None for silence) and calls
:meth:`Bar.update` once per unit of work; the command makes the bar.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class Bar:
    """A count of ``total`` units (None: unknown) named ``desc``.

    On a terminal: a tqdm bar, updated at most every ``interval`` seconds, the latest
    figures beside it; messages (:meth:`write`, or ``update(message=...)``) print above it.
    Otherwise one plain line per update that carries a message, and otherwise at most one
    every ``interval`` seconds (and the last): ``desc 3/16 batch (1.2 min, about 5.1 min
    left)  figures``. ``enabled=False`` prints the messages only.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True,
                 interval: float = 10.0, stream: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream or sys.stdout
        self.done, self.started, self.last_line = 0, time.perf_counter(), float("-inf")
        self.enabled = enabled
        self.bar = None
        isatty = getattr(self.stream, "isatty", None)
        if enabled and isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=min(interval, 1.0),
                            file=self.stream)

    def eta(self) -> float | None:
        """Seconds left at the pace so far (None: no total or nothing done yet)."""
        if self.total is None or self.done == 0:
            return None
        return (time.perf_counter() - self.started) / self.done * max(self.total - self.done, 0)

    def line(self, figures: dict[str, Any]) -> str:
        """The plain line of the state now."""
        elapsed = time.perf_counter() - self.started
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        left = self.eta()
        timing = _minutes(elapsed) + (f", about {_minutes(left)} left" if left is not None and self.done < self.total
                                      else "")
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in figures.items())
        return f"{self.desc} {count} {self.unit} ({timing})" + (f"  {shown}" if shown else "")

    def update(self, n: int = 1, message: str | None = None, **figures: Any) -> None:
        """``n`` more units done; ``message`` (e.g. what the unit found) and ``figures`` shown with it."""
        self.done += n
        if self.bar is not None:
            if message:
                self.bar.write(message, file=self.stream)
            if figures:
                self.bar.set_postfix({k: _fmt(v) for k, v in figures.items()}, refresh=False)
            self.bar.update(n)
            return
        if not self.enabled:
            if message:
                print(message, file=self.stream, flush=True)
            return
        now = time.perf_counter()
        final = self.total is not None and self.done >= self.total
        if message or final or now - self.last_line >= self.interval:
            self.last_line = now
            text = self.line(figures)
            print(f"{message}  [{text}]" if message else text, file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
