"""Endless, resumable batch streams over map-style and iterable data sets.

Map-style data: epoch ``e`` visits a permutation drawn from ``(seed, e)``, sharded
across DDP ranks (rank ``r`` takes positions ``r, r + world, …``), in batches of
``batch_size`` (the last incomplete batch is dropped). Because the order is a pure
function of (seed, epoch, step), a run resumed at step ``s`` sees exactly the batches an
uninterrupted run sees from step ``s`` on.

Iterable data (e.g. the BAIR training stream) shards itself across workers and ranks;
it is told the epoch through ``set_epoch`` and, on resume, restarts the epoch in progress.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from seqvae.data.worker_signals import leave_signals_to_trainer


class EpochSampler(Sampler[int]):
    """This rank's indices of epoch ``epoch``, skipping the first ``skip`` of them."""

    def __init__(self, size: int, seed: int, epoch: int, rank: int, world: int, skip: int = 0) -> None:
        self.size, self.seed, self.epoch, self.rank, self.world, self.skip = size, seed, epoch, rank, world, skip

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        usable = (self.size // self.world) * self.world
        return order[:usable][self.rank::self.world].tolist()[self.skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


def batch_stream(dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 num_workers: int = 0, start_step: int = 0, pin_memory: bool = False) -> Iterator[dict]:
    """Yield training batches forever, starting as if ``start_step`` batches were consumed.

    Each DataLoader gets its own generator (for worker seeds): creating one never draws
    from the global RNG, so the model's random stream is the same with and without resume.
    """
    loader_args = dict(batch_size=batch_size, num_workers=num_workers, drop_last=True, pin_memory=pin_memory,
                       persistent_workers=False, worker_init_fn=leave_signals_to_trainer if num_workers else None)

    def generator(epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 4099 + rank)

    if isinstance(dataset, IterableDataset):
        epoch = 0
        while True:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            got_any = False
            for batch in batches_of(DataLoader(dataset, generator=generator(epoch), **loader_args)):
                got_any = True
                yield batch
            if not got_any:
                reason = dataset.why_empty(batch_size) if hasattr(dataset, "why_empty") else ""
                raise ValueError(f"the training data set yielded no full batch of {batch_size}: "
                                 + (reason or "lower train.batch_size or add data"))
            epoch += 1
    per_rank = len(dataset) // world
    per_epoch = per_rank // batch_size
    if per_epoch == 0:
        raise ValueError(
            f"the training split has {len(dataset)} examples, fewer than one batch of {batch_size} per process; "
            "lower train.batch_size"
        )
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        sampler = EpochSampler(len(dataset), seed, epoch, rank, world, skip=offset * batch_size)
        yield from batches_of(DataLoader(dataset, sampler=sampler, generator=generator(epoch), **loader_args))
        epoch, offset = epoch + 1, 0


def batches_of(loader: DataLoader) -> Iterator[dict]:
    """The batches of one pass over ``loader``; its worker processes are shut down as soon as the
    pass ends, also when it ends by an error (e.g. a corrupt record read in a worker) or when the
    stream is closed. Left to garbage collection, they would be terminated by ``multiprocessing``'s
    exit handler, and torch would report their death as an error after the command's own message."""
    batches = start_workers(loader)
    try:
        yield from batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)   # torch's multi-process iterator; idempotent
        if shutdown is not None:
            shutdown()


def start_workers(loader: DataLoader) -> Iterator[dict]:
    """``iter(loader)``, with SIGINT and SIGTERM blocked while its worker processes start: a
    worker inherits the mask, so a signal to the process group that arrives before the
    worker's ``worker_init_fn`` has taken charge of signals (:mod:`seqvae.data.worker_signals`)
    waits for it instead of killing the worker (torch's own worker SIGTERM handler exits on a
    signal from anyone but the trainer). In this process the signals only wait as long as
    the workers take to start."""
    if loader.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
        return iter(loader)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def eval_loader(dataset: Dataset, batch_size: int, rank: int = 0, world: int = 1, num_workers: int = 0) -> DataLoader:
    """Fixed-order batches of this rank's share (``rank::world``) of an evaluation split."""
    generator = torch.Generator().manual_seed(rank)
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, generator=generator)
    indices = list(range(rank, len(dataset), world))
    return DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers,
                      generator=generator)
