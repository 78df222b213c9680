"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore torch's count. For modules of many
    small tensors (tiny nets, the simulator, short clips): on the shared 2-core machines
    extra threads only add hand-offs and spin-waiting (measured 8–10× slower under load).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
