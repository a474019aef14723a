"""imaging: a PyTorch toolbox for inverse problems in imaging, with compiled C++/CUDA operators."""
from imaging import _ext, ops  # noqa: F401  (loads the compiled ops and registers their autograd/fake kernels)

__version__ = "0.1.0"
