"""Forward operators A: the abstraction (`Operator`, `LinearOperator`) and the catalogue.

| operator | problem | shapes |
|---|---|---|
| `Identity` | denoising | (N, C, H, W) -> same |
| `Blur` (+ `gaussian_kernel`, `box_kernel`, `motion_kernel`) | deblurring | (N, C, H, W) -> same |
| `Downsampling` | super-resolution | (N, C, H, W) -> (N, C, H/f, W/f) |
| `Inpainting` | inpainting | (N, C, H, W) -> same (zeros where missing) |
| `CompressedSensing`, `StructuredCompressedSensing` | compressed sensing | (N, C, H, W) -> (N, m) |
| `MRI` (+ `cartesian_mask`) | undersampled MRI | (N, C, H, W) -> complex (N, C, H, W) |
| `Radon` | parallel-beam CT | (N, C, H, W) -> (N, C, n_angles, n_detectors) |
| `FiniteDifference` | gradient (regularisers) | (N, C, *S) -> (N, C, len(S), *S) |
"""
from imaging.operators.base import FunctionOperator, Identity, LinearOperator, Operator, check_input
from imaging.operators.blur import Blur, Downsampling, box_kernel, gaussian_kernel, motion_kernel
from imaging.operators.fourier import MRI, cartesian_mask
from imaging.operators.gradient import FiniteDifference
from imaging.operators.noise import GaussianNoise, PoissonNoise, estimate_noise
from imaging.operators.sampling import CompressedSensing, Inpainting, StructuredCompressedSensing, dct_matrix
from imaging.operators.tomography import Radon

__all__ = [
    "Operator", "LinearOperator", "FunctionOperator", "Identity", "check_input",
    "Blur", "Downsampling", "gaussian_kernel", "box_kernel", "motion_kernel",
    "Inpainting", "CompressedSensing", "StructuredCompressedSensing", "dct_matrix",
    "MRI", "cartesian_mask", "Radon", "FiniteDifference", "GaussianNoise", "PoissonNoise", "estimate_noise",
]
