"""What a training DataLoader worker does with SIGINT and SIGTERM: it leaves them to the trainer.

A Ctrl-C in a terminal reaches the whole process group, and so does ``kill -TERM -- -PGID``
(a batch system's or systemd's stop signals every process of the job). The trainer
(:mod:`seqvae.training.interrupt`) then finishes its step, writes a checkpoint and shuts its
workers down. A worker that died of the signal first would make torch raise "DataLoader
worker (pid N) is killed by signal" in the trainer wherever it happens to be, even inside the
checkpoint's ``torch.save``. So a worker ignores SIGINT, and every SIGTERM but its parent's:
the DataLoader ends a worker that does not stop in time with ``terminate()`` (SIGTERM from the
trainer), which must keep working. A worker whose parent is gone stops too (torch's own
watchdog ends it within seconds; a SIGTERM then ends it at once).

Python's signal handlers do not see who sent a signal, so SIGTERM is blocked in every thread
of the worker and one thread waits for it with ``sigwaitinfo``, which says the sender.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading


def leave_signals_to_trainer(worker_id: int = 0) -> None:
    """``worker_init_fn`` of training DataLoaders (see the module). The worker may start with
    SIGINT and SIGTERM blocked (:func:`seqvae.data.loader.start_workers`), a signal to the
    group pending: an ignored SIGINT is discarded, a pending SIGTERM goes to the waiting thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a forked worker inherits the trainer's handler
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if not hasattr(signal, "sigwaitinfo"):   # e.g. macOS: SIGTERM keeps its default (a group's SIGTERM ends workers)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return
    parent = multiprocessing.parent_process()
    trainer = parent.pid if parent is not None and parent.pid else os.getppid()
    # blocked here, before the worker starts any other thread: every later thread inherits the mask
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_wait_for_terminate, args=(trainer, os.getppid()), name="seqvae-sigterm", daemon=True
                     ).start()


def _wait_for_terminate(trainer: int, parent: int) -> None:
    """Wait for a SIGTERM from ``trainer`` (or any, once ``parent`` is gone); then die of it."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == trainer or os.getppid() != parent:
            break
    # the default action of SIGTERM, delivered to this thread only: the worker ends as terminate() expects
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
