"""Compiled ops (`torch.ops.imaging.*`) with their autograd and fake kernels, and their pure-torch references.

Each public function here checks its input, runs the compiled kernel when one exists for the tensor's device and
dtype (float32/float64), and the pure-torch reference otherwise (other dtypes such as complex, or no extension).
"""
from imaging.ops.finite_diff import divergence, finite_diff, finite_diff_adjoint
from imaging.ops.foe import foe_energy, foe_grad, foe_hvp
from imaging.ops.gain_sensing import gain_adjoint, gain_forward, gain_normal_pass
from imaging.ops.tv import tv, tv_grad, tv_hvp, tv_prox

__all__ = ["foe_energy", "foe_grad", "foe_hvp", "gain_forward", "gain_adjoint", "gain_normal_pass", "finite_diff",
           "finite_diff_adjoint", "divergence", "tv", "tv_grad", "tv_hvp", "tv_prox"]
