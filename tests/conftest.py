"""Shared test set-up: the whole suite runs on one intra-op thread.

Its tensors are small (tiny nets, the simulator, short clips): extra threads only add
hand-offs, and on a shared 2-core machine a second thread makes every parallel region wait
for whichever core another process holds (measured 8–60× slower under load). One thread
keeps ``make test`` steady whatever else runs. ``OMP_NUM_THREADS`` is set before torch
loads, so the trainer's thread governor (``seqvae.threads``) keeps one thread too. Caches
(``XDG_CACHE_HOME``) go to a temporary folder.
"""
import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# caches the code writes (e.g. the video frame cache) go to a fresh folder, not the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="seqvae-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, whatever the previous test left behind."""
    torch.set_num_threads(1)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip where no CUDA GPU is found."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def pusher_test_batch():
    """24 test-split episodes of 14 steps of the shipped models' pushing world (2 objects),
    stacked into one batch; frames float in [0, 1]."""
    from seqvae.worlds.pusher.dataset import PusherDataConfig, PusherDataset
    from seqvae.worlds.pusher.world import PusherConfig

    world = PusherConfig(num_objects=2, gripper_radius=0.18, object_radius=0.2, texture_contrast=0.35)
    items = PusherDataset(PusherDataConfig(seq_len=14, world=world), "test").__getitems__(list(range(24)))
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    batch["frames"] = batch["frames"].float() / 255
    return batch
