"""imaging: a PyTorch toolbox for inverse problems in imaging, with compiled C++/CUDA operators.

Layers (data flows down): compiled ops (`imaging.ops`) and the conjugate gradient (`imaging.linalg`), forward
operators (`imaging.operators`), priors (`imaging.priors`), then solvers (`imaging.solvers`), sensor-array
calibration (`imaging.calibration`) and learning (`imaging.learning`); `imaging.testing` validates operators,
`imaging.metrics` and `imaging.data` serve examples.
"""
from imaging import _ext, ops  # noqa: F401  (loads the compiled ops and registers their autograd/fake kernels)
from imaging import linalg, operators, priors, solvers, testing  # noqa: F401
from imaging.operators import estimate_noise  # noqa: F401
from imaging.priors import tv_denoise  # noqa: F401
from imaging.solvers import (GSURE, SURE, ConvergenceWarning, Discrepancy, DivergenceError, least_squares,  # noqa: F401
                             tv_reconstruct)

__version__ = "0.1.0"

__all__ = ["operators", "priors", "solvers", "linalg", "testing", "ops", "least_squares", "tv_reconstruct",
           "tv_denoise", "estimate_noise", "Discrepancy", "SURE", "GSURE", "ConvergenceWarning", "DivergenceError",
           "__version__"]
