"""DataLoader workers of training (issue 23, items 1 and 7): a SIGTERM sent to the whole process
group leaves them to the trainer (only the trainer's own SIGTERM ends one), and they are shut
down as soon as their batch stream ends, also by an error, never left to the exit handlers."""
import gc
import multiprocessing
import os
import signal
import subprocess
import time

import pytest
import torch
from torch.utils.data import Dataset

from seqvae.data.loader import batch_stream
from seqvae.data.worker_signals import leave_signals_to_trainer


def _worker(ready):
    leave_signals_to_trainer(0)
    ready.set()
    while True:
        time.sleep(0.05)


def _wait_exit(proc, timeout=10.0):
    proc.join(timeout)
    return proc.exitcode


def test_a_worker_ignores_sigterm_from_others_and_obeys_its_trainer():
    ctx = multiprocessing.get_context("fork")   # what DataLoader uses on Linux
    ready = ctx.Event()
    proc = ctx.Process(target=_worker, args=(ready,), daemon=True)
    proc.start()
    try:
        assert ready.wait(10)
        # a SIGTERM from another process (a shell's kill -TERM -- -PGID, a batch system's stop)
        subprocess.run(["kill", "-TERM", str(proc.pid)], check=True)
        os.kill(proc.pid, signal.SIGINT)                       # a terminal's Ctrl-C
        assert _wait_exit(proc, 1.0) is None and proc.is_alive()
        proc.terminate()                                       # the trainer's own SIGTERM: how DataLoader ends it
        assert _wait_exit(proc) == -signal.SIGTERM
    finally:
        if proc.is_alive():
            proc.kill()


class _BrokenAt(Dataset):
    """Items 0.. of a map-style data set; item ``bad`` raises (a corrupt record)."""

    def __init__(self, size, bad):
        self.size, self.bad = size, bad

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        if i == self.bad:
            raise ValueError(f"record {i} is corrupt")
        return {"frames": torch.full((1, 1, 2, 2), float(i))}


@pytest.mark.parametrize("how", ["error", "close"])
def test_workers_are_shut_down_when_the_stream_ends(how):
    gc.collect()
    before = set(multiprocessing.active_children())
    gc.disable()   # the workers must stop without the help of garbage collection
    try:
        stream = batch_stream(_BrokenAt(16, bad=5 if how == "error" else -1), batch_size=2, seed=0, num_workers=2)
        first = next(stream)
        assert first["frames"].shape == (2, 1, 1, 2, 2)
        assert len(set(multiprocessing.active_children()) - before) == 2
        if how == "error":
            with pytest.raises(ValueError, match="record 5 is corrupt"):
                for _ in range(16):
                    next(stream)
        else:
            stream.close()
        assert set(multiprocessing.active_children()) - before == set()   # joined already, none left for atexit
    finally:
        gc.enable()
