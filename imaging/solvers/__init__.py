"""Solvers, one algorithm per file, all returning `Result(x, history, iterations, converged)` from `run(x0)`."""
from imaging.solvers.accelerated_gradient import AcceleratedGradient
from imaging.solvers.base import ConvergenceWarning, DivergenceError, IterativeSolver, Result
from imaging.solvers.cg import CG, least_squares
from imaging.solvers.ddrm import DDRM
from imaging.solvers.diffpir import DiffPIR
from imaging.solvers.dps import DPS
from imaging.solvers.fista import FISTA
from imaging.solvers.flair import Flair, calibrated_weights, flow_velocity_error
from imaging.solvers.pdhg import PDHG, tv_reconstruct
from imaging.solvers.pnp import PnPADMM, PnPPGD, relax
from imaging.solvers.parameter_choice import GSURE, SURE, Discrepancy, ParameterSearch
from imaging.solvers.red_diff import RedDiff

__all__ = ["IterativeSolver", "Result", "ConvergenceWarning", "DivergenceError", "Discrepancy", "SURE", "GSURE",
           "ParameterSearch", "CG", "least_squares", "PDHG", "FISTA", "AcceleratedGradient", "tv_reconstruct", "RedDiff",
           "Flair", "flow_velocity_error", "calibrated_weights", "PnPADMM", "PnPPGD", "relax", "DPS", "DiffPIR",
           "DDRM"]
