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


def noisy_crops(names: tuple[str, ...], size: int, sigma: float, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) grey size×size crops from the centre of each offline picture resized to 1.5·size, shape
    (len(names), 1, size, size), with Gaussian noise of standard deviation sigma (seeded)."""
    clean = []
    for name in names:
        image = load_image(name, size=int(1.5 * size), channels=1, dtype=dtype)
        start = (image.shape[-1] - size) // 2
        clean.append(image[0, :, start:start + size, start:start + size])
    clean = torch.stack(clean)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    return clean, clean + sigma * noise


def load_faces(split: str = "train", size: int = 32) -> torch.Tensor:
    """Grey faces of scikit-image's offline LFW subset as an (N, 1, size, size) float32 tensor in [0, 1].

    The subset holds 100 faces (then 100 non-faces, unused), 25×25, resized with anti-aliasing: faces 0..79 are
    "train" (N = 80), faces 80..99 are "test" (N = 20, held out from training).
    """
    import skimage.data
    import skimage.transform

    splits = {"train": slice(0, 80), "test": slice(80, 100)}
    if split not in splits:
        raise ValueError(f"load_faces: argument 'split' must be 'train' or 'test', got {split!r}")
    faces = np.asarray(skimage.data.lfw_subset()[:100][splits[split]], dtype=np.float64)
    faces = np.stack([skimage.transform.resize(face, (size, size), anti_aliasing=True) for face in faces])
    return torch.from_numpy(np.clip(faces, 0.0, 1.0)).float()[:, None].contiguous()


def shipped_file(owner: str, files: dict[str, str], name: str, script: str):
    """The path data/<files[name]> of a file shipped with the repository; a clear error for an unknown name or a
    missing file (with the `script` that writes it)."""
    from pathlib import Path

    if name not in files:
        raise ValueError(f"{owner}: unknown name {name!r}; available: {sorted(files)}")
    path = Path(__file__).resolve().parents[1] / "data" / files[name]
    if not path.exists():
        raise FileNotFoundError(f"{owner}: {path} is missing; create it with `{script}`")
    return path


def load_digits(split: str = "train") -> torch.Tensor:
    """The 8×8 handwritten digits that ship with scikit-learn (UCI optical digits, 1797 images), (N, 1, 8, 8) in
    [0, 1]: "train" = the first 1500, "test" = the last 297 (never used in training)."""
    from sklearn.datasets import load_digits as sklearn_digits

    splits = {"train": slice(0, 1500), "test": slice(1500, None)}
    if split not in splits:
        raise ValueError(f"load_digits: argument 'split' must be 'train' or 'test', got {split!r}")
    images = torch.from_numpy(sklearn_digits().images[splits[split]]).float() / 16.0
    return images[:, None].contiguous()


def save_weights(tensors: dict[str, torch.Tensor], path: str, settings: dict) -> None:
    """Write tensors (stored as float32) to a safetensors file atomically (temporary file, then rename), with the
    JSON-encoded `settings` as metadata; the file is readable by everyone."""
    import json
    import os
    import tempfile

    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".safetensors.tmp")
    os.close(handle)
    try:
        save_file({name: t.detach().float().contiguous() for name, t in tensors.items()}, temporary,
                  metadata={"settings": json.dumps(settings)})
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
