"""``torch.compile`` of the training step's forward (and loss), set up in one place.

``train.compile``: ``true`` / ``false``, or ``null`` (the default): on for CUDA, off on a
CPU, where an inductor compile of even a tiny SVG costs minutes of CPU time.

What is compiled: ``model(batch)``, i.e. the forward and the −ELBO (the backward is
compiled with it by AOT autograd). The optimizer step (fused Adam: one kernel), the grad
scaler, the update guard and ``commit_step`` stay eager; none of them reads a value on the
host (the guard's verdict is a device tensor, seqvae.training.update_guard), so the host
queues steps ahead of the GPU.

Not yet done: the whole step as one CUDA graph (the recurrence launches many small kernels,
so a step is launch-bound). What stands in the way now that no step reads the host:
``loss.backward()`` runs from Python, so ``torch.compile`` graphs the forward and AOT's
backward separately (``mode="reduce-overhead"`` would make each a CUDA graph, the ~30
kernels of guard and fused Adam staying eager); a hand-captured ``torch.cuda.graph`` of
the whole step would also need the learning rate as a device tensor (the schedule sets a
float, which a graph would freeze), the guard's record slot as a device counter (a Python
index now), static input buffers for the batch, and the optimal-σ head's per-forward
``_pending`` list (a Python side effect) replaced by a buffer.

Recompilation: a training batch always has the same shape (``drop_last=True`` and a fixed
``n_past + n_future``), so the step is compiled for static shapes (``dynamic=False``,
the best kernels) and is traced once; evaluation and generation (other lengths) run the
eager model and never trigger a compile. :func:`graph_count` reads dynamo's own
counters, so a test can check that later steps add no graph. The SVG LSTMs (``nn.LSTM``)
are traced into the graph (:func:`with_rnn`; dynamo's default is a graph break per call).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def resolve(value: bool | None, device: torch.device) -> bool:
    """Whether to compile: ``value`` if given, else on for CUDA only."""
    if value is None:
        return device.type == "cuda"
    if not isinstance(value, bool):
        raise ValueError(f"train.compile must be true, false or null (auto: on for CUDA), got {value!r}")
    return value


def compile_step(module: nn.Module, backend: str = "inductor") -> Callable:
    """``module`` (e.g. the model or its DDP wrapper) compiled for static training shapes."""
    return with_rnn(torch.compile(module, backend=backend, dynamic=False))


def with_rnn(fn: Callable) -> Callable:
    """``fn`` (a compiled callable) traced with ``nn.LSTM`` inside the graph (dynamo's
    ``allow_rnn``): without it every LSTM call is a graph break (8 graphs for a tiny SVG
    step instead of 1, measured), and the step cannot be one graph."""
    def call(*args, **kwargs):
        with torch._dynamo.config.patch(allow_rnn=True):
            return fn(*args, **kwargs)
    return call


def graph_count() -> int:
    """Graphs dynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
