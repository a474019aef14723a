"""Regression tests for the reliability report (issue 16), operators, data and metrics: impossible parameters that
were silently accepted and inputs that failed deep in torch now give a clear error naming the user's argument (the
case names of `benchmarks/robustness.py` in the ids)."""
import pytest
import torch

from imaging.data import load_image
from imaging.metrics import psnr, ssim
from imaging.operators import (MRI, Blur, CompressedSensing, Downsampling, Inpainting, LinearOperator, PoissonNoise,
                               Radon, box_kernel, cartesian_mask, gaussian_kernel, motion_kernel)

NAN = float("nan")
HUGE = 2 ** 70
Y = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
NAN_MASK = torch.where(torch.eye(8) > 0, NAN, 1.0)

CASES = [
    ("Radon-n_detectors-zero", "Radon: argument 'n_detectors' must be a positive integer",
     lambda: Radon((8, 8), 4, n_detectors=0)),
    ("Radon-n_detectors-negative", "Radon: argument 'n_detectors' must be a positive integer",
     lambda: Radon((8, 8), 4, n_detectors=-1)),
    ("Radon-image_shape-zero", "Radon: argument 'image_shape' must be a tuple of 2 positive integers",
     lambda: Radon((0, 8), 4)),
    ("Radon-angles-2**70", "Radon: argument 'angles' must be a positive integer up to 2\\*\\*31",
     lambda: Radon((8, 8), HUGE)),
    ("motion_kernel-angle-nan", "motion_kernel: argument 'angle' must be a finite number",
     lambda: motion_kernel(5.0, angle=NAN)),
    ("motion_kernel-length-nan", "motion_kernel: argument 'length' must be a positive finite number",
     lambda: motion_kernel(NAN)),
    ("CompressedSensing-in_shape-zero", "CompressedSensing: argument 'in_shape' must be a tuple of positive integers",
     lambda: CompressedSensing(4, (1, 0, 8))),
    ("CompressedSensing-m-2**70", "CompressedSensing: argument 'm' must be a positive integer",
     lambda: CompressedSensing(HUGE, (1, 8, 8))),
    ("cartesian_mask-center_fraction-negative", "cartesian_mask: argument 'center_fraction' must be a number in",
     lambda: cartesian_mask((8, 8), center_fraction=-1.0)),
    ("cartesian_mask-center_fraction-nan", "cartesian_mask: argument 'center_fraction' must be a number in",
     lambda: cartesian_mask((8, 8), center_fraction=NAN)),
    ("cartesian_mask-acceleration-nan", "cartesian_mask: argument 'acceleration' must be a finite number >= 1",
     lambda: cartesian_mask((8, 8), acceleration=NAN)),
    ("cartesian_mask-shape-2**70", "cartesian_mask: argument 'shape' must be a tuple of 2 positive integers",
     lambda: cartesian_mask((8, HUGE))),
    ("MRI-mask-nan", "MRI: argument 'mask' has non-finite values", lambda: MRI(NAN_MASK)),
    ("psnr-data_range-nan", "psnr: argument 'data_range' must be a finite number > 0",
     lambda: psnr(Y, Y.flip(0), data_range=NAN)),
    ("psnr-data_range-zero", "psnr: argument 'data_range' must be a finite number > 0",
     lambda: psnr(Y, Y.flip(0), data_range=0.0)),
    ("ssim-data_range-nan", "ssim: argument 'data_range' must be a finite number > 0",
     lambda: ssim(Y, Y.flip(0), data_range=NAN)),
    ("gaussian_kernel-size-negative", "gaussian_kernel: argument 'size' must be a positive integer",
     lambda: gaussian_kernel(1.0, size=-3)),
    ("gaussian_kernel-size-2**70", "gaussian_kernel: argument 'size' must be a positive integer",
     lambda: gaussian_kernel(1.0, size=HUGE)),
    ("gaussian_kernel-sigma-huge", "gaussian_kernel: argument 'sigma' is too large", lambda: gaussian_kernel(1e300)),
    ("box_kernel-size-float", "box_kernel: size must be a positive integer", lambda: box_kernel(2.5)),
    ("box_kernel-size-2**70", "box_kernel: size must be a positive integer", lambda: box_kernel(HUGE)),
    ("Downsampling-factor-2**70", "Downsampling: argument 'factor' must be a positive integer",
     lambda: Downsampling(HUGE)),
    ("Inpainting-random-shape-2**70", "Inpainting.random: argument 'shape' must be a tuple of positive integers",
     lambda: Inpainting.random((HUGE,), 0.5)),
    ("load_image-size-float", "load_image: argument 'size' must be a positive integer",
     lambda: load_image("camera", size=2.5)),
    ("load_image-size-2**70", "load_image: argument 'size' must be a positive integer",
     lambda: load_image("camera", size=HUGE)),
    ("PoissonNoise-nan-intensity", "PoissonNoise: argument 'z' \\(the intensities\\) must be finite",
     lambda: PoissonNoise(10.0)(torch.full((1, 1, 4, 4), NAN))),
    ("Downsampling-1x1", "Downsampling: kernel 7x7 is larger than the image 1x1 allows with mode='reflect'",
     lambda: Downsampling(2)(Y[..., :1, :1])),
    ("Blur-reflect-1x1", "Blur: kernel 7x7 is larger than the image 1x1", lambda: Blur(gaussian_kernel(1.0),
                                                                                        mode="reflect")(Y[..., :1, :1])),
    ("pinv-x0-wrong-shape", "Blur.pinv: argument 'x0' of shape \\(2, 1, 4, 4\\) is not an input",
     lambda: Blur(gaussian_kernel(1.0)).pinv(Y, x0=torch.zeros(2, 1, 4, 4, dtype=torch.float64))),
    ("pinv-x0-other-shape", "Blur.pinv: argument 'x0' must have the shape of Aᴴy",
     lambda: Blur(gaussian_kernel(1.0)).pinv(Y, x0=torch.zeros(2, 1, 16, 16, dtype=torch.float64))),
]


@pytest.mark.parametrize("message, call", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_impossible_parameters_get_a_clear_error(message, call):
    with pytest.raises(ValueError, match=message):
        call()


def test_valid_parameters_still_work():
    assert Radon((8, 8), 4, n_detectors=5)(Y).shape == (2, 1, 4, 5)
    assert motion_kernel(5.0, angle=30).isfinite().all()
    assert box_kernel((2, 3)).shape == (2, 3) and gaussian_kernel(1.0, size=4).shape == (4, 4)
    assert cartesian_mask((8, 8), acceleration=2.0, center_fraction=0.0).shape == (8, 8)
    assert Inpainting.random(8, 0.5).mask.shape == (8,)
    assert load_image("camera", size=(6, 5)).shape == (1, 1, 6, 5)
    assert psnr(Y, Y.flip(0), data_range=torch.tensor(1.0)).shape == (2,)
    A = Downsampling(2, mode="zeros")
    assert A(Y[..., :1, :1]).shape == (2, 1, 1, 1)  # zero padding needs no pixels to reflect


class Square(LinearOperator):
    def forward(self, x):
        return x ** 2


def test_pinv_refuses_an_operator_whose_forward_is_not_linear():
    """4/square-pinv: the derived adjoint of x ** 2 is a gradient at 0, so the CG returned garbage."""
    A = Square()
    with pytest.raises(ValueError, match="Square.pinv: the operator Square is a LinearOperator but its forward is "
                                         "not linear"):
        A.pinv(A(Y))
    B = Blur(gaussian_kernel(1.0))
    torch.testing.assert_close(B(B.pinv(B(Y), tol=1e-10, max_iter=500)), B(Y), rtol=1e-6, atol=1e-6)
    assert B.__dict__["_linearity_checked"]  # checked once, cached for the next call


def test_pinv_reports_an_overflowing_scale_instead_of_a_zero_answer():
    """2/pinv-1e10: in float32 ⟨Aᴴy, Aᴴy⟩ overflows, which made the CG's threshold inf and x = 0 'converged'."""
    B = Blur(gaussian_kernel(1.0))
    y = B(Y.float())
    with pytest.raises(FloatingPointError, match="pinv: ‖Aᴴy‖² overflows torch.float32.*rescale A \\(and y\\) or "
                                                 "use float64"):
        (1e10 * B).pinv(1e10 * y)


def test_a_declared_in_shape_that_does_not_match_is_named():
    """3/downsampling-declared-wrong-in_shape: the adjoint of a declared (1, 60, 60) on 32x32 data failed in torch's
    expand. (Applying the operator to other shapes stays allowed: in_shape only settles the adjoint's input.)"""
    A = Downsampling(2)
    A.in_shape = (1, 60, 60)
    with pytest.raises(ValueError, match=r"Downsampling.adjoint: argument 'y' of shape \(1, 1, 32, 32\) is not an "
                                         r"output of the declared in_shape \(1, 60, 60\)"):
        A.adjoint(torch.zeros(1, 1, 32, 32))
    assert A.adjoint(torch.zeros(1, 1, 30, 30)).shape == (1, 1, 60, 60)

    class Subsample(LinearOperator):
        def __init__(self):
            super().__init__(in_shape=(1, 8, 8))

        def forward(self, x):
            return x[..., ::2, ::2]

    with pytest.raises(ValueError, match=r"Subsample.adjoint: argument 'y' must have the operator's output shape "
                                         r"\(1, 1, 4, 4\) \(the output of its in_shape \(1, 8, 8\)\)"):
        Subsample().adjoint(torch.zeros(1, 1, 5, 5))
