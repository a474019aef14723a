"""Learning from data: the training engine of the learned priors (`Trainer`, on accelerate and diffusers' schedules
and EMA), and bilevel learning of regularisation parameters (MAID, HOAG, certified lower-level solvers)."""
from imaging.learning.maid import BilevelProblem, BilevelResult, hoag, hypergradient, maid, solve_lower
from imaging.learning.trainer import Trainer, TrainingResult
from imaging.learning.lower_level import LowerLevelResult, RegularisedLeastSquares, accelerated_gradient

__all__ = ["Trainer", "TrainingResult", "maid", "hoag", "hypergradient", "solve_lower", "BilevelProblem", "BilevelResult", "RegularisedLeastSquares",
           "accelerated_gradient", "LowerLevelResult"]
