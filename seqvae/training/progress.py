"""Training progress for a person: a tqdm bar on a terminal (updated at most once a
second), plain lines every ``log_every`` steps when stdout is a file or a pipe. Progress is
shown against whichever limit ends the run: ``train.steps``, or the time limit when it
will come first (the bar's total is then the projected last step)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int, deadline: float | None, enabled: bool, log_every: int) -> None:
        self.total, self.start, self.deadline, self.log_every = total, start, deadline, log_every
        self.started = time.perf_counter()
        self.step = start
        self.bar = None
        self.plain = enabled and not sys.stdout.isatty()
        if enabled and not self.plain:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, desc="train", mininterval=1.0)

    def projected_last_step(self) -> int:
        """The step the run will end at: ``total``, or earlier when the time limit comes first."""
        if self.deadline is None or self.step <= self.start:
            return self.total
        now = time.perf_counter()
        rate = (self.step - self.start) / max(now - self.started, 1e-9)
        return int(min(self.total, self.step + rate * max(self.deadline - now, 0.0)))

    def update(self, step: int, figures: dict[str, float] | None = None) -> None:
        """Advance to ``step``; ``figures`` (at logging steps) are shown beside it."""
        self.step = step
        if self.bar is not None:
            last = self.projected_last_step()
            if last != self.bar.total:
                self.bar.total = last
            self.bar.update(step - self.bar.n)
            if figures:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items()}, refresh=False)
        elif self.plain and figures is not None:
            elapsed = time.perf_counter() - self.started
            limit = ""
            if self.deadline is not None:
                limit = f", {max(self.deadline - time.perf_counter(), 0) / 60:.1f} min of the time limit left"
            shown = "  ".join(f"{k} {v:.4g}" for k, v in figures.items())
            print(f"step {step}/{self.projected_last_step()} ({elapsed / 60:.1f} min{limit})  {shown}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
