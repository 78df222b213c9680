"""The CPU thread policy: how many intra-op threads torch uses, so that training keeps
most of its speed when the machine is shared (measured in ``tools/bench_threads.py``).

With as many threads as cores, every parallel region waits for the thread the scheduler
parked when another process takes a core (20–60× slower training on 2 cores with one
other busy process); with fewer, an idle machine is used by half. So the count is chosen
from measured step times (:class:`ThreadGovernor`) among the CPUs this process may use
(affinity mask, cgroup quota) and 1; a user's ``train.threads`` or ``OMP_NUM_THREADS``
fixes it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None when unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def other_runnable_tasks(samples: int = 5, interval: float = 0.01) -> int | None:
    """Runnable tasks on the machine besides this one (``procs_running`` of ``/proc/stat``,
    the least of a few readings ``interval`` s apart, less the reading thread itself); None
    where the kernel does not say."""
    import time

    counts = []
    for i in range(samples):
        try:
            for line in Path("/proc/stat").read_text().splitlines():
                if line.startswith("procs_running"):
                    counts.append(int(line.split()[1]))
                    break
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, min(counts) - 1) if counts else None


def choose_threads(requested: int = 0, workers: int = 0) -> int:
    """Intra-op threads: ``requested`` when positive; else ``OMP_NUM_THREADS`` when the user
    set it; else the usable CPUs less one per DataLoader worker (at least 1)."""
    if requested > 0:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, usable_cpus() - max(0, workers))


def configure(requested: int = 0, workers: int = 0) -> int:
    """Apply :func:`choose_threads` to torch; returns the thread count."""
    import torch

    n = choose_threads(requested, workers)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class ThreadGovernor:
    """Picks the intra-op thread count from measured step times, for a loop of similar steps.

    On a shared machine more threads than free cores make every parallel region wait for a
    thread the scheduler has parked: measured 20–60× slower training with 2 threads on 2
    cores and one other busy process, while on an idle machine 2 threads are ~1.5× faster
    than 1. No static count is right for both, so the governor measures: it times a few
    steps with each candidate count, keeps the fastest, and re-checks the others from time
    to time (at once when the current count's step time jumps, e.g. because another job
    started). A probe that is far slower than the current median is cut after one step,
    and after each failed probe the next one waits twice as long, so a steady machine pays
    almost nothing. Use::

        governor = ThreadGovernor.for_this_process(requested=cfg.threads, workers=cfg.num_workers)
        for batch in batches:
            with governor.step():
                train_step(batch)
    """

    def __init__(self, candidates: list[int], window: int = 5, probe_steps: int = 3, interval: int = 100,
                 max_interval: int = 6400, jump: float = 2.0, margin: float = 0.9, start: int | None = None) -> None:
        import torch

        self.torch = torch
        self.candidates = sorted(set(candidates), reverse=True)
        self.window, self.probe_steps, self.base_interval = window, probe_steps, interval
        self.max_interval, self.jump, self.margin = max_interval, jump, margin
        self.current = start if start in self.candidates else self.candidates[0]
        self.times: dict[int, list[float]] = {n: [] for n in self.candidates}
        self.reference: float | None = None      # the current count's median when it was chosen
        self.interval = interval
        self.steps_since_probe = 0
        self.probe: list[int] = []               # counts still to try in the running probe
        self.probe_left = 0                      # steps left for probe[0]
        self.switches: list[tuple[int, int]] = []  # (step, threads) each time the count changed
        self.steps = 0
        torch.set_num_threads(self.current)

    @classmethod
    def for_this_process(cls, requested: int = 0, workers: int = 0, **kwargs) -> "ThreadGovernor":
        """Fixed at ``requested`` (or ``OMP_NUM_THREADS``) when given; else choosing between
        the usable CPUs and 1, starting with 1 when other tasks are runnable right now (so a
        short loop on a busy machine does not spend its first steps collapsed)."""
        fixed = choose_threads(requested, 0) if requested > 0 or os.environ.get("OMP_NUM_THREADS") else 0
        if fixed:
            return cls([fixed], **kwargs)
        cpus = usable_cpus()
        others = other_runnable_tasks() if cpus > 1 else None
        return cls([cpus, 1], start=1 if others else cpus, **kwargs)

    @property
    def active(self) -> int:
        return self.probe[0] if self.probe_left and self.probe else self.current

    def step(self):
        """Context manager timing one step with the thread count the governor chooses."""
        import contextlib
        import time

        @contextlib.contextmanager
        def timed():
            n = self.active
            if self.torch.get_num_threads() != n:
                self.torch.set_num_threads(n)
            start = time.perf_counter()
            yield n
            self.record(n, time.perf_counter() - start)
        return timed()

    def _median(self, n: int) -> float | None:
        t = self.times[n][-self.window:]
        return sorted(t)[len(t) // 2] if t else None

    def record(self, n: int, seconds: float) -> None:
        """Account one step of ``seconds`` run with ``n`` threads (what :meth:`step` does)."""
        self.steps += 1
        self.times[n].append(seconds)
        self.times[n] = self.times[n][-self.window:]
        if self.probe_left and self.probe and n == self.probe[0]:
            current = self._median(self.current)
            self.probe_left -= 1
            too_slow = current is not None and seconds > self.jump * current
            if too_slow or self.probe_left == 0:
                self._finish_probe(n, failed=too_slow)
            return
        self.steps_since_probe += 1
        median = self._median(self.current)
        first = self.reference is None and len(self.times[self.current]) >= self.probe_steps
        jumped = self.reference is not None and len(self.times[n]) >= 3 and median > self.jump * self.reference
        if first:
            self.reference = median
        if len(self.candidates) > 1 and (first or jumped or self.steps_since_probe >= self.interval):
            self.probe = [c for c in self.candidates if c != self.current]
            self.probe_left = self.probe_steps
            if jumped:
                self.interval = self.base_interval

    def _finish_probe(self, n: int, failed: bool) -> None:
        current, trial = self._median(self.current), self._median(n)
        better = not failed and trial is not None and trial < self.margin * current
        if better:
            self.current = n
            self.switches.append((self.steps, n))
            self.interval = self.base_interval
        elif self.steps_since_probe >= self.interval:   # a scheduled probe that lost: wait longer next time
            self.interval = min(self.max_interval, 2 * self.interval)
        self.reference = self._median(self.current)
        self.probe = self.probe[1:]
        self.probe_left = self.probe_steps if self.probe else 0
        self.steps_since_probe = 0
        self.torch.set_num_threads(self.active)


def loop_governor(device, requested: int = 0) -> ThreadGovernor | None:
    """A :class:`ThreadGovernor` for a loop of similar steps on ``device`` (evaluation
    batches, planning calls); None off the CPU."""
    import torch

    return ThreadGovernor.for_this_process(requested) if torch.device(device).type == "cpu" else None


def governed(governor: ThreadGovernor | None):
    """``governor.step()``, or a no-op context without a governor."""
    import contextlib

    return governor.step() if governor is not None else contextlib.nullcontext()
