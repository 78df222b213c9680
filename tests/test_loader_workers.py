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


class _Items(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"frames": torch.full((1, 1, 2, 2), float(i))}


def _signalled_before_init(worker_id):
    """A group's SIGTERM and SIGINT that reach a worker before its init function takes charge
    of signals (a worker of a new epoch starting just as the user stops the run)."""
    subprocess.run(["kill", "-TERM", str(os.getpid())], check=True)   # from another process
    subprocess.run(["kill", "-INT", str(os.getpid())], check=True)
    leave_signals_to_trainer(worker_id)


def test_a_signal_that_reaches_a_starting_worker_waits_for_its_init():
    """The stream starts its workers with SIGINT and SIGTERM blocked, so a worker that the group's
    signal reaches between its fork and its init function neither dies of it (torch's own handler
    exits on a SIGTERM from anyone but the trainer) nor stops at a KeyboardInterrupt: the
    batches arrive, and the signal is judged by its sender once the init has run."""
    from torch.utils.data import DataLoader

    from seqvae.data.loader import batches_of

    loader = DataLoader(_Items(), batch_size=2, num_workers=2, worker_init_fn=_signalled_before_init)
    got = [b["frames"][:, 0, 0, 0, 0].tolist() for b in batches_of(loader)]
    assert got == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    # and the trainer's main thread takes signals again once the workers have started
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, [])


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
