"""The thread policy: CPU counting and the governor that picks threads from step times."""
from __future__ import annotations

import os

import pytest
import torch

from seqvae import threads
from seqvae.threads import ThreadGovernor


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def simulate(cost, steps: int) -> tuple[float, ThreadGovernor]:
    """Drive a governor with simulated step times ``cost(step, threads)``; total time spent."""
    governor = ThreadGovernor([2, 1])
    total = 0.0
    for i in range(steps):
        n = governor.active
        total += cost(i, n)
        governor.record(n, cost(i, n))
    return total, governor


def idle(i, n):
    return {2: 0.5, 1: 0.75}[n]          # two threads 1.5× faster on an idle machine


def busy(i, n):
    return {2: 13.0, 1: 0.8}[n]          # one other busy process: two threads collapse


def test_on_an_idle_machine_it_keeps_all_threads_and_probing_costs_little():
    total, governor = simulate(idle, 1000)
    assert governor.current == 2 and governor.switches == []
    assert total < 1.02 * 1000 * 0.5                       # within 2 % of always using 2 threads


def test_under_load_it_drops_to_one_thread_within_a_few_steps():
    total, governor = simulate(busy, 1000)
    assert governor.switches[0] == (6, 1) and governor.current == 1
    assert total < 1.15 * 1000 * 0.8                       # 2 threads throughout: 16× slower
    assert governor.interval > governor.base_interval      # failed probes back off


def test_it_follows_the_load_when_it_comes_and_goes():
    total, governor = simulate(lambda i, n: busy(i, n) if 300 <= i < 600 else idle(i, n), 1000)
    assert [n for _, n in governor.switches] == [1, 2]
    assert 300 <= governor.switches[0][0] < 320 and 600 <= governor.switches[1][0] < 900
    assert total < 1.15 * (700 * 0.5 + 300 * 0.8)


def test_a_requested_or_environment_count_is_fixed(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ThreadGovernor.for_this_process(requested=3).candidates == [3]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ThreadGovernor.for_this_process().candidates == [1]
    assert threads.choose_threads(0, workers=5) == 1


def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cpus() == 4 and threads.choose_threads(0, workers=1) == 3
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)   # a cgroup quota of 1.5 CPUs
    assert threads.usable_cpus() == 1 and threads.choose_threads(0, workers=2) == 1


def test_the_governor_sets_torch_threads_for_each_step():
    governor = ThreadGovernor([2, 1], probe_steps=1)
    seen = []
    for _ in range(4):
        with governor.step() as n:
            seen.append((n, torch.get_num_threads()))
    assert all(n == t for n, t in seen) and {n for n, _ in seen} == {1, 2}


def test_it_starts_with_one_thread_when_other_tasks_are_runnable(monkeypatch):
    """A short loop (an evaluation, a few planning calls) on a busy machine should not spend
    its first steps collapsed: the starting count follows the run queue, the probes the rest."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "other_runnable_tasks", lambda: 1)
    assert ThreadGovernor.for_this_process().current == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(threads, "other_runnable_tasks", lambda: 0)
    assert ThreadGovernor.for_this_process().current == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr(threads, "other_runnable_tasks", lambda: None)      # unknown: all usable CPUs
    assert ThreadGovernor.for_this_process().current == 2


def test_the_run_queue_is_read_from_proc_stat():
    import subprocess
    import sys

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here")
    before = threads.other_runnable_tasks()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        during = threads.other_runnable_tasks(samples=5, interval=0.02)
    finally:
        busy.kill()
        busy.wait()
    assert before is not None and during is not None and during >= 1
