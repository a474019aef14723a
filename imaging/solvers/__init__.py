"""Solvers, one algorithm per file, all returning `Result(x, history, n_iter, converged)` from `run(x0)`."""
from imaging.solvers.base import IterativeSolver, Result
from imaging.solvers.cg import CG, least_squares
from imaging.solvers.fista import FISTA
from imaging.solvers.pdhg import PDHG, tv_reconstruct

__all__ = ["IterativeSolver", "Result", "CG", "least_squares", "PDHG", "FISTA", "tv_reconstruct"]
