import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests share 2 cores; fixed thread count keeps timings and reductions stable."""
    torch.set_num_threads(2)
    yield
