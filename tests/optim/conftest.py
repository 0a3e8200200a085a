import pytest

from slimkit.timing import fixed_threads


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster, and does not stall when other processes hold the cores."""
    with fixed_threads(1):
        yield
