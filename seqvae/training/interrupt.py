"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, stop.

:class:`StopSignals` catches SIGINT and SIGTERM while the training loop runs (every rank
under DDP: ``torchrun`` forwards signals to each worker, and the ranks agree through one
all-reduce per step, so they stop after the same step even when only one was signalled).
The loop asks :meth:`StopSignals.requested` after each finished step; it then writes a
checkpoint atomically and raises :class:`TrainingInterrupted`, which the command line
turns into one line (where the checkpoint is and how to resume) and exit status
128 + signal (130 for SIGINT, 143 for SIGTERM). A second signal stops at once: the
exception is raised wherever the process is; checkpoints and metric lines are written
atomically, so nothing is corrupted (the last complete checkpoint stays). Copies of the
first signal within :data:`REPEAT_WINDOW_S` count once: a Ctrl-C under ``torchrun`` reaches
each worker twice (from the terminal, and forwarded by torchrun), which must not cancel
the checkpoint. DataLoader workers leave both signals to the trainer
(:mod:`seqvae.data.worker_signals`: a Ctrl-C or a ``kill -TERM -- -PGID`` reaches the whole process
group, and the trainer shuts its workers down after the checkpoint); only their trainer's own
SIGTERM (how a worker that does not stop in time is terminated) ends a worker.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import torch

from seqvae import dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_S = 1.0   # a signal this soon after the first is a copy of it, not a second request


class TrainingInterrupted(BaseException):
    """Training stopped on SIGINT/SIGTERM. ``saved``: a checkpoint of ``step`` was written
    first; otherwise (a second signal) the run folder's last checkpoint is the latest.

    A ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int, step: int, run_dir: Path | None, saved: bool) -> None:
        self.signum, self.step, self.run_dir, self.saved = signum, step, run_dir, saved
        self.exit_code = 128 + signum
        self.resume_command: str | None = None   # the command line that resumes (set by the CLI)
        self.quiet = not dist.is_main()            # only rank 0 tells the user
        super().__init__(signum, step)

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        resume = self.resume_command or "train(cfg, resume=True)"
        if self.run_dir is None:
            return f"{name}: stopped at step {self.step}; nothing was written (dry run)"
        ckpt = self.run_dir / "checkpoint.pt"
        if self.saved:
            return f"{name}: stopped after step {self.step}, checkpoint saved to {ckpt}; resume with: {resume}"
        return (f"{name} again: stopped at once during step {self.step + 1}; {ckpt} (if present) is the last complete "
                f"checkpoint; resume with: {resume}")


class StopSignals:
    """A context manager that turns SIGINT/SIGTERM into a stop request (see the module).

    Handlers can only be installed from the main thread; elsewhere the defaults stay.
    The previous handlers are restored on exit.
    """

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.signum = 0            # the first signal received (0: none)
        self.received_at = 0.0     # when (time.monotonic)
        self.step = 0              # the step in progress, for the message of a second signal
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            if time.monotonic() - self.received_at < REPEAT_WINDOW_S:
                return   # a copy of the first (terminal + torchrun), not a second request
            # the second signal: stop now (atomic writes keep every file whole)
            raise TrainingInterrupted(signum, self.step, self.run_dir, saved=False)
        self.signum, self.received_at = signum, time.monotonic()
        if dist.is_main():  # os.write: safe inside a handler, whatever print was doing
            name = signal.Signals(signum).name
            os.write(2, f"\n{name} received: finishing step {self.step + 1}, then writing a checkpoint "
                        "(send it again to stop at once)\n".encode())

    def requested(self, device: torch.device) -> int:
        """The signal that asks every rank to stop after this step (0: none); all ranks
        agree (one all-reduce under DDP)."""
        if not dist.is_initialized():
            return self.signum
        flag = torch.tensor([float(self.signum)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())
