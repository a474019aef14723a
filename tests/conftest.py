import pytest
import torch

from imaging import _ext

requires_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason=f"compiled extension not loaded ({_ext.LOAD_ERROR})")
requires_cuda = pytest.mark.skipif(not (_ext.HAS_CUDA and torch.cuda.is_available()),
                                   reason="needs a CUDA device and imaging built with CUDA")


def pytest_report_header(config):
    return f"imaging: {_ext.describe()}; torch {torch.__version__}"
