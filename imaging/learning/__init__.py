"""Learning regularisation parameters from data: lower-level solvers with certified accuracy (and, to come, the
bilevel method MAID)."""
from imaging.learning.maid import BilevelProblem, BilevelResult, hoag, hypergradient, maid, solve_lower
from imaging.learning.trainer import Trainer, TrainingResult
from imaging.learning.lower_level import LowerLevelResult, RegularisedLeastSquares, accelerated_gradient

__all__ = ["Trainer", "TrainingResult", "maid", "hoag", "hypergradient", "solve_lower", "BilevelProblem", "BilevelResult", "RegularisedLeastSquares",
           "accelerated_gradient", "LowerLevelResult"]
