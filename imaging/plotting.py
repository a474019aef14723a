"""Figures for examples and benchmarks (matplotlib, headless), written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `fig` as PNG to `path` atomically (temporary file in the same folder, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(handle)
    try:
        fig.savefig(temporary, dpi=dpi, bbox_inches="tight", format="png")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def to_display(image: torch.Tensor):
    """(C, H, W) or (H, W) tensor -> numpy array for imshow (magnitude of complex, channels last, clipped to [0, 1])."""
    image = image.detach().cpu()
    image = image.abs() if image.is_complex() else image
    if image.dim() == 3:
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    return image.clamp(0, 1).double().numpy()


def mosaic(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, 1, H, W) images -> one (rows·(H+1) − 1, columns·(W+1) − 1) image on a white background, 1-px gaps."""
    count, _, height, width = images.shape
    rows = -(-count // columns)
    canvas = torch.ones(rows * (height + 1) - 1, columns * (width + 1) - 1, dtype=images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        canvas[row * (height + 1):row * (height + 1) + height,
               column * (width + 1):column * (width + 1) + width] = image[0]
    return canvas
