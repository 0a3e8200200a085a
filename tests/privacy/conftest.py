import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tests train tiny models step by step: one thread is as fast, and immune to a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
