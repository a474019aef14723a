"""imaging: a PyTorch toolbox for inverse problems in imaging, with compiled C++/CUDA operators.

Layers (data flows down): compiled ops (`imaging.ops`), forward operators (`imaging.operators`), solvers
(`imaging.solvers`); `imaging.testing` validates operators, `imaging.metrics` and `imaging.data` serve examples.
"""
from imaging import _ext, ops  # noqa: F401  (loads the compiled ops and registers their autograd/fake kernels)
from imaging import operators, priors, solvers, testing  # noqa: F401
from imaging.operators import estimate_noise  # noqa: F401
from imaging.priors import tv_denoise  # noqa: F401
from imaging.solvers import GSURE, SURE, ConvergenceWarning, Discrepancy, least_squares, tv_reconstruct  # noqa: F401

__version__ = "0.1.0"
