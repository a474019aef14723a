"""Blur specifics: the FFT 'same' convolution equals conv2d on the padded image; kernel builders."""
import pytest
import torch
import torch.nn.functional as F

from imaging.operators import Blur, Downsampling, box_kernel, gaussian_kernel, motion_kernel
from imaging.operators.blur import _pad_widths, pad


@pytest.mark.parametrize("kernel", [motion_kernel(7, 30.0), box_kernel((4, 5)), gaussian_kernel(1.0, size=6)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_same_convolution_matches_conv2d(kernel, mode):
    x = torch.randn(2, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weight = kernel.flip(-2, -1)[None, None].expand(3, 1, -1, -1)  # conv2d correlates: flip for a convolution
    expected = F.conv2d(pad(x, _pad_widths(tuple(kernel.shape)), mode), weight, groups=3)
    torch.testing.assert_close(Blur(kernel, mode=mode)(x), expected, rtol=1e-12, atol=1e-12)


def test_kernel_builders_are_normalised_and_centred():
    for k in (gaussian_kernel(1.5), gaussian_kernel((1.0, 2.0)), box_kernel(3), motion_kernel(9, 45.0)):
        assert abs(float(k.sum()) - 1) < 1e-12 and (k >= 0).all()
    g = gaussian_kernel(1.0, size=5)
    assert g.argmax() == 12 and torch.allclose(g, g.flip(0)) and torch.allclose(g, g.T)
    impulse = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    impulse[..., 4, 4] = 1
    torch.testing.assert_close(Blur(g, mode="zeros")(impulse)[0, 0, 2:7, 2:7], g)  # the PSF is the kernel


def test_box_downsampling_is_block_average():
    x = torch.arange(36, dtype=torch.float64).reshape(1, 1, 6, 6)
    expected = F.avg_pool2d(x, 3)
    torch.testing.assert_close(Downsampling(3, filter="box")(x), expected)


@pytest.mark.parametrize("bad, match", [(torch.ones(2, 2, 2, 2), "'kernel' must be a real tensor"),
                                        (torch.full((3, 3), float("nan")), "finite")])
def test_bad_kernels(bad, match):
    with pytest.raises(ValueError, match=match):
        Blur(bad)
    with pytest.raises(ValueError, match="'mode' must be one of"):
        Blur(box_kernel(3), mode="wrap")
