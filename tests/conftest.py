"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tensors are small: one intra-op thread is fastest, and on a busy 2-core machine a
    second OpenMP thread makes each tiny product wait for a descheduled partner (measured: the engine
    tests took 7 minutes with 2 threads and about 25 s with 1). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
