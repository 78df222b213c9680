"""The training wing: the one training loop (:func:`train`, :mod:`seqvae.training.loop`)
and what only it uses — the session it builds and restores (``session``, ``checkpointing``),
the update guard, the run folder, the metrics log, progress, the figures it saves, the
learning-rate schedule and the stop signals."""
from seqvae.training.interrupt import TrainingInterrupted
from seqvae.training.loop import train
from seqvae.training.run_folder import RunFolderError

__all__ = ["train", "RunFolderError", "TrainingInterrupted"]
