"""Solvers, one algorithm per file, all returning `Result(x, history, n_iter, converged)` from `run(x0)`."""
from imaging.solvers.base import IterativeSolver, Result
from imaging.solvers.cg import CG, least_squares

__all__ = ["IterativeSolver", "Result", "CG", "least_squares"]
