import pytest
import torch

from imaging import _ext

requires_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason=f"compiled extension not loaded ({_ext.LOAD_ERROR})")
requires_cuda = pytest.mark.skipif(not (_ext.HAS_CUDA and torch.cuda.is_available()),
                                   reason="needs a CUDA device and imaging built with CUDA")


def pytest_report_header(config):
    return f"imaging: {_ext.describe()}; torch {torch.__version__}"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded: their tensors are small, and intra-op threads fight with other processes (the
    examples' subprocesses, a parallel build). Tests of threaded kernels ask for `threads` explicitly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def threads():
    """Use two intra-op threads inside the test (the threaded CPU kernels split their rows between them)."""
    torch.set_num_threads(2)
    yield 2
