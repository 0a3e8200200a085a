import pytest

from slimkit.quantization.activation import kernels


@pytest.fixture(autouse=True)
def eager_kernels():
    """Tests run the eager quantize/rescale chains (same math; test_kernels checks compiled equals eager)."""
    kernels.set_compiled(False)
    yield
    kernels.set_compiled(True)
