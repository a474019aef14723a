"""Test images that ship offline with scikit-image, as tensors (N, C, H, W) in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch

OFFLINE_IMAGES = ("camera", "astronaut", "coins", "moon", "shepp_logan_phantom", "brick", "grass", "gravel",
                  "coffee", "chelsea", "rocket", "text", "page", "horse", "clock", "hubble_deep_field", "immunohistochemistry")


def load_image(name: str = "camera", size: int | tuple[int, int] | None = None, channels: int | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A scikit-image test image as a (1, C, H, W) tensor in [0, 1].

    Args:
        name: one of OFFLINE_IMAGES (they ship with scikit-image; nothing is downloaded).
        size: resize to (size, size) or (H, W) with anti-aliasing; None keeps the original size.
        channels: 1 (grey) or 3 (RGB); None keeps the image's own.
    """
    import skimage.color
    import skimage.data
    import skimage.transform

    if name not in OFFLINE_IMAGES:
        raise ValueError(f"load_image: argument 'name' must be one of {OFFLINE_IMAGES}, got {name!r}")
    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if image.max() > 1.0:
        image = image / 255.0
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if channels == 1 and image.ndim == 3:
        image = skimage.color.rgb2gray(image)
    elif channels == 3 and image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    elif channels not in (None, 1, 3):
        raise ValueError(f"load_image: argument 'channels' must be 1, 3 or None, got {channels!r}")
    if size is not None:
        shape = (size, size) if isinstance(size, int) else tuple(size)
        image = skimage.transform.resize(image, shape + image.shape[2:], anti_aliasing=True)
    image = np.clip(image, 0.0, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(dtype)
    return (tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]).contiguous()
