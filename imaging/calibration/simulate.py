r"""Simulated blind-calibration problems: the sensor-array scenario of the demo (phantom image, vignetting × PRNU
gains, random sensing, optional noise) and a smooth-gain subspace.

    problem = sensor_array_problem(size=64, snapshots=10, operator="dct-mask", snr=30)
    result = imaging.calibration.pgd(problem.sensing, problem.y, x_true=problem.x, gains_true=problem.gains)

Everything is generated in code from seeds (the phantom ships with scikit-image): nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from imaging.calibration.sensing import DenseGainSensing, GainSensing, RandomMaskDCTSensing
from imaging.operators.sampling import dct_matrix

OPERATORS = ("dense", "dct-mask")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shepp_logan(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The Shepp–Logan phantom (scikit-image's, values in [0, 1]) resized with anti-aliasing to (size, size)."""
    import numpy as np
    import skimage.data
    import skimage.transform

    if not isinstance(size, int) or size < 1:
        raise ValueError(f"shepp_logan: argument 'size' must be a positive int, got {size!r}")
    image = skimage.transform.resize(skimage.data.shepp_logan_phantom(), (size, size), anti_aliasing=True)
    return torch.from_numpy(np.clip(image, 0.0, 1.0)).to(dtype)


def vignetting_gains(shape: tuple[int, int], prnu: float = 0.1, strength: float = 0.25, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Pixel gains of a sensor array, flattened row-major to (H·W,), with mean 1:

        d = (1 − strength·(x² + y²)) · (1 + prnu·N(0, 1))   on the grid [−1, 1]² (x along W, y along H),

    i.e. radial vignetting (down to 1 − 2·strength in the corners) times photo-response non-uniformity. The defaults
    give gains in about [0.45, 1.5] (ρ ≈ 0.55 around the mean)."""
    H, W = shape
    if 2 * strength >= 1 or strength < 0 or prnu < 0:
        raise ValueError(f"vignetting_gains: need 0 <= strength < 0.5 and prnu >= 0 so the gains stay positive, got "
                         f"strength={strength}, prnu={prnu}")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    noise = torch.randn(H, W, generator=_generator(seed), dtype=torch.float64)
    d = ((1 - strength * (xx ** 2 + yy ** 2)) * (1 + prnu * noise)).clamp_min(1e-3).reshape(-1)
    return (d / d.mean()).to(dtype)


def smooth_gain_basis(shape: tuple[int, int], k: int = 4, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The k×k lowest-frequency 2-D DCT atoms on an (H, W) grid as orthonormal columns, shape (H·W, k·k); column 0
    is the constant atom. Pass it as `gain_basis` to `pgd` for gains known to vary smoothly."""
    H, W = shape
    if not (1 <= k <= min(H, W)):
        raise ValueError(f"smooth_gain_basis: argument 'k' must lie in [1, min(H, W)] = [1, {min(H, W)}], got {k}")
    rows, cols = dct_matrix(H, torch.float64)[:k], dct_matrix(W, torch.float64)[:k]   # (k, H), (k, W)
    atoms = torch.einsum("ih,jw->hwij", rows, cols).reshape(H * W, k * k)
    return atoms.to(dtype)


@dataclass
class SensorArrayProblem:
    """One simulated problem: y = diag(gains) A_l x (+ noise) for l = 1..p.

    sensing: the operator (p snapshots, m = n = H·W); y: (1, p, m) measurements; x: (1, n) true image (flattened
    row-major); gains: (1, m) true gains (mean 1); shape: (H, W); snr: the SNR in dB of y (None: noiseless)."""

    sensing: GainSensing
    y: torch.Tensor
    x: torch.Tensor
    gains: torch.Tensor
    shape: tuple[int, int]
    snr: float | None = None

    def image(self, flat: torch.Tensor) -> torch.Tensor:
        """(n,) or (1, n) -> (H, W)."""
        return flat.reshape(self.shape)


def add_noise(y: torch.Tensor, snr: float | None, seed: int = 0) -> torch.Tensor:
    """y + ν with Gaussian ν scaled per problem (rows of the leading dim) so that ‖ν‖/‖y‖ = 10^(−snr/20) exactly;
    snr=None or inf returns y unchanged."""
    if snr is None or snr == float("inf"):
        return y
    noise = torch.randn(y.shape, generator=_generator(seed), dtype=torch.float64).to(y.dtype).to(y.device)
    dims = tuple(range(1, y.dim()))
    scale = 10 ** (-snr / 20) * torch.linalg.vector_norm(y, dim=dims, keepdim=True) \
        / torch.linalg.vector_norm(noise, dim=dims, keepdim=True)
    return y + scale * noise


def sensor_array_problem(size: int = 64, snapshots: int = 10, operator: str = "dense", snr: float | None = None,
                         seed: int = 0, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                         ) -> SensorArrayProblem:
    """The demo's sensor-array scenario: the Shepp–Logan phantom (size×size) seen through p = `snapshots` random
    sensing matrices by a size×size array of pixels with vignetting × PRNU gains (`vignetting_gains`).

    operator: "dense" (i.i.d. N(0, 1) matrices, p·n² entries: 671 MB in float32 at 64×64, p = 10) or "dct-mask"
    (√n · DCT2 · diag(random signs), matrix-free; not covered by the theory). snr: dB (None: noiseless), with
    ‖ν‖/‖y‖ = 10^(−snr/20). The gains, the matrices and the noise use the seeds seed, seed + 1 and seed + 2."""
    if operator not in OPERATORS:
        raise ValueError(f"sensor_array_problem: argument 'operator' must be one of {OPERATORS}, got {operator!r}")
    if snapshots < 1 or size < 1:
        raise ValueError(f"sensor_array_problem: 'size' and 'snapshots' must be >= 1, got {size}, {snapshots}")
    shape = (size, size)
    n = size * size
    x = shepp_logan(size, dtype).reshape(1, n).to(device)
    gains = vignetting_gains(shape, seed=seed, dtype=dtype).reshape(1, n).to(device)
    if operator == "dense":
        sensing: GainSensing = DenseGainSensing.gaussian(snapshots, n, n, dtype=dtype, device=device, seed=seed + 1)
    else:
        sensing = RandomMaskDCTSensing.random(snapshots, shape, dtype=dtype, device=device, seed=seed + 1)
    with torch.no_grad():
        y = add_noise(sensing(x, gains), snr, seed + 2)
    return SensorArrayProblem(sensing, y, x, gains, shape, snr)


__all__ = ["shepp_logan", "vignetting_gains", "smooth_gain_basis", "sensor_array_problem", "SensorArrayProblem",
           "add_noise", "OPERATORS"]
