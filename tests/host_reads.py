"""Record host reads of tensor values: what would stall the host on a GPU (a device → host
sync) if the tensor lived there.

On CUDA, ``.item()``, ``float(t)`` / ``int(t)`` / ``bool(t)`` / ``t.__index__()``,
``.tolist()``, ``.numpy()``, ``.cpu()`` / ``.to("cpu")`` (named so: a move to the training device,
a ``torch.device``, is no read) wait for every kernel queued before
them; ``torch.tensor(x, device=...)`` copies from pageable host memory, which waits too. A CPU
test cannot see a sync, but it can see these calls: :class:`HostReads` patches them for
the duration of a block and records each with its call site (the innermost frame outside
torch), so a test can say which code read what. Reads of tensors in ``ignore`` (e.g. host-side
counters that live on the host on any device) are not recorded.
"""
from __future__ import annotations

import contextlib
import traceback

import torch

_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
_TORCH_DIR = str(torch.__file__).rsplit("/", 1)[0]


class HostReads:
    """``with HostReads() as reads: ...``; ``reads.calls`` lists ``(tag, what, site)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, str, str]] = []
        self.tag: object = None          # attributes reads to a phase, e.g. the step number
        self.paused = 0
        self.ignore: set[int] = set()    # ids of tensors whose reads are not counted
        self._stack = contextlib.ExitStack()

    def _site(self) -> str:
        for frame in reversed(traceback.extract_stack()[:-2]):
            if not frame.filename.startswith(_TORCH_DIR) and not frame.filename.endswith("host_reads.py"):
                return f"{'/'.join(frame.filename.split('/')[-2:])}:{frame.lineno} {frame.line}"
        return "?"

    def _record(self, what: str, tensor=None) -> None:
        if self.paused or (tensor is not None and id(tensor) in self.ignore):
            return
        self.paused += 1                 # the bookkeeping itself must not count
        try:
            self.calls.append((self.tag, what, self._site()))
        finally:
            self.paused -= 1

    @contextlib.contextmanager
    def pause(self):
        """Reads inside the block are not recorded (e.g. the data loader's host-side work)."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    def __enter__(self) -> "HostReads":
        for name in _METHODS:
            real = getattr(torch.Tensor, name)

            def patched(t, *args, _real=real, _name=name, **kwargs):
                self._record(_name, t)
                return _real(t, *args, **kwargs)
            self._stack.enter_context(_patch(torch.Tensor, name, patched))
        real_to = torch.Tensor.to

        def to(t, *args, **kwargs):
            target = kwargs.get("device", args[0] if args else None)
            if isinstance(target, str) and torch.device(target).type == "cpu":   # .to("cpu"): to the host
                self._record("to(cpu)", t)
            return real_to(t, *args, **kwargs)
        self._stack.enter_context(_patch(torch.Tensor, "to", to))
        real_tensor = torch.tensor

        def tensor(*args, **kwargs):
            if kwargs.get("device") is not None:
                self._record("torch.tensor(device=...)")
            return real_tensor(*args, **kwargs)
        self._stack.enter_context(_patch(torch, "tensor", tensor))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def at(self, tag) -> list[tuple[str, str]]:
        return [(what, site) for t, what, site in self.calls if t == tag]


@contextlib.contextmanager
def _patch(owner, name, value):
    real = owner.__dict__.get(name, getattr(owner, name))
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, real)

