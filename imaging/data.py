"""Test images that ship offline with scikit-image, as tensors (N, C, H, W) in [0, 1]."""
from __future__ import annotations

import numbers

import numpy as np
import torch

from imaging._optional import require

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
        try:
            shape = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        except TypeError:
            shape = ()
        if len(shape) != 2 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and 0 < n <= 2 ** 31
                                      for n in shape):
            raise ValueError(f"load_image: argument 'size' must be a positive integer up to 2**31 or (H, W) of them, "
                             f"got {size!r}")
        shape = tuple(int(n) for n in shape)
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
    """The path imaging/weights/<files[name]> of a file shipped inside the package (package data: found from any
    working directory, in an editable or a regular install); a clear error for an unknown name or a missing file
    (with the `script` that writes it)."""
    from pathlib import Path

    if name not in files:
        raise ValueError(f"{owner}: unknown name {name!r}; available: {sorted(files)}")
    path = Path(__file__).resolve().parent / "weights" / files[name]
    if not path.exists():
        raise FileNotFoundError(f"{owner}: {path} is missing; create it with `{script}`")
    return path


def load_digits(split: str = "train") -> torch.Tensor:
    """The 8×8 handwritten digits that ship with scikit-learn (UCI optical digits, 1797 images), (N, 1, 8, 8) in
    [0, 1]: "train" = the first 1500, "test" = the last 297 (never used in training)."""
    require("sklearn", "load_digits")
    from sklearn.datasets import load_digits as sklearn_digits

    splits = {"train": slice(0, 1500), "test": slice(1500, None)}
    if split not in splits:
        raise ValueError(f"load_digits: argument 'split' must be 'train' or 'test', got {split!r}")
    images = torch.from_numpy(sklearn_digits().images[splits[split]]).float() / 16.0
    return images[:, None].contiguous()


def save_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors (as they are) to a safetensors file atomically (temporary file in the same folder, then
    rename), readable by everyone; a failure leaves an existing file untouched."""
    import os
    import tempfile

    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".safetensors.tmp")
    os.close(handle)
    try:
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, temporary, metadata=metadata)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_weights(tensors: dict[str, torch.Tensor], path: str, settings: dict) -> None:
    """Write tensors (stored as float32) to a safetensors file atomically, with the JSON-encoded `settings` as
    metadata."""
    import json

    save_safetensors({name: t.float() for name, t in tensors.items()}, path, {"settings": json.dumps(settings)})


def load_weights(path, owner: str) -> tuple[dict[str, torch.Tensor], object]:
    """The tensors and the JSON-decoded settings metadata ({} when absent) of a safetensors file (as written by
    `save_weights`), with clear errors naming `owner` and the path: a missing file, a folder, a file that is not
    safetensors (empty, truncated, a corrupt header), unreadable settings and tensors holding NaN or infinite
    values (a corrupt checkpoint would otherwise load and answer NaN). The settings' type is the caller's to check."""
    import json
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{owner}: {path} does not exist")
    if not path.is_file():
        raise IsADirectoryError(f"{owner}: {path} is not a file; pass the .safetensors file itself")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            raw = (f.metadata() or {}).get("settings", "{}")
    except SafetensorError as error:
        raise ValueError(f"{owner}: {path} is not a readable safetensors file ({error})") from None
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{owner}: {path} has unreadable settings metadata ({error})") from None
    for key, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{owner}: {path}: tensor {key!r} holds non-finite values (NaN or inf); the file is "
                             f"corrupt")
    return tensors, settings


# --- image folders ------------------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg", ".bmp")


def read_image(path: str, channels: int | None = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One image file (PNG, TIFF, NPY, JPEG or BMP) as a (C, H, W) tensor.

    Integer images are scaled to [0, 1] by their type's maximum (uint8 / 255, uint16 / 65535); float images (TIFF,
    NPY: e.g. CT slices in their own units) keep their values. `channels=1` converts RGB to grey, 3 repeats a grey
    image, None keeps what the file holds.
    """
    from pathlib import Path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"read_image: {str(path)!r} is not one of the supported kinds {IMAGE_SUFFIXES}")
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(path)
    else:
        import imageio.v3 as iio

        array = iio.imread(path)
    array = np.asarray(array)
    if array.dtype.kind in "ui":
        array = array.astype(np.float64) / float(np.iinfo(array.dtype).max)
    elif array.dtype.kind != "f":
        raise ValueError(f"read_image: {str(path)!r} holds {array.dtype} data, expected integers or floats")
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] not in (1, 3):
        array = np.moveaxis(array[..., :3], -1, 0)  # H, W, C -> C, H, W
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"read_image: {str(path)!r} has shape {array.shape}, expected (H, W), (H, W, 3) or (C, H, W)")
    if channels == 1 and array.shape[0] == 3:
        import skimage.color

        array = skimage.color.rgb2gray(np.moveaxis(array, 0, -1))[None]
    elif channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    elif channels not in (None, 1, 3) or (channels is not None and array.shape[0] != channels):
        raise ValueError(f"read_image: cannot give {channels} channels from {str(path)!r} ({array.shape[0]} channels)")
    if not np.isfinite(array).all():
        raise ValueError(f"read_image: {str(path)!r} contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def save_text_atomically(path, text: str) -> None:
    """Write a text file atomically (a temporary file in the same folder, then a rename)."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_image(path, image: torch.Tensor, *, overwrite: bool = False) -> None:
    """Write one image (C, H, W) or (H, W) atomically (a temporary file in the same folder, then a rename: an
    interruption leaves no partial file). By suffix: PNG, 8-bit (values clipped to [0, 1]; 16-bit with
    ".16.png"), TIFF float32 and NPY (the values as they are, complex included). An existing file is an error
    unless `overwrite`."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff", ".npy"):
        raise ValueError(f"write_image: {str(path)!r} must end with .png, .tif, .tiff or .npy")
    if path.exists() and not overwrite:
        raise FileExistsError(f"write_image: {str(path)!r} exists (pass overwrite=True to replace it)")
    array = image.detach().cpu().numpy()
    if array.ndim == 3 and suffix != ".npy":
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=suffix)
    os.close(handle)
    try:
        if suffix == ".npy":
            np.save(temporary, array, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(temporary, array.astype(np.float32))
        else:
            import imageio.v3 as iio

            deep = path.name.lower().endswith(".16.png")
            scale, kind = (65535, np.uint16) if deep else (255, np.uint8)
            iio.imwrite(temporary, np.round(np.clip(array, 0, 1) * scale).astype(kind), extension=".png")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def image_files(folder: str) -> list:
    """The image files (IMAGE_SUFFIXES) directly in `folder`, sorted by name; a clear error when there are none."""
    from pathlib import Path

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image_files: {str(folder)!r} is not a folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"image_files: {str(folder)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_folder(folder: str, channels: int | None = 1, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Every image of a folder (sorted by name) as a list of (1, C, H, W) tensors (sizes may differ)."""
    return [read_image(path, channels, dtype)[None] for path in image_files(folder)]


class PatchDataset(torch.utils.data.Dataset):
    """Random patches of a folder of images (or of a list of (1, C, H, W) / (C, H, W) tensors), for training
    denoisers and generative priors on your own pictures.

    Item `i` of the dataset is a dict, a deterministic function of (seed, i) (so a run is reproducible, resumes
    exactly and splits across processes without repeating patches):
      - "clean": a random `patch_size`² crop (C, p, p) of an image picked with probability proportional to its
        area, randomly rotated by a multiple of 90° and flipped when `augment` is True (only flipped left-right
        with `augment="flip"`, for pictures with an up, such as faces);
      - with `sigma` (a number, or a range (σ_min, σ_max) drawn uniformly per item): "sigma" (a 0-d tensor) and
        "noisy" = clean + σ·n, n ~ N(0, 1);
      - `transform(item, generator)` may add more per-item randomness (e.g. diffusion timesteps) from the item's
        own generator.
    `length` is the number of items an epoch holds (patches are random, so any length works).
    """

    def __init__(self, images, patch_size: int, *, sigma: float | tuple[float, float] | None = None,
                 augment: bool | str = True, length: int = 100_000, seed: int = 0, channels: int | None = 1,
                 transform=None) -> None:
        if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__"):
            images = load_folder(images, channels)
        images = [im if im.dim() == 3 else im[0] for im in images]
        if not images or any(im.dim() != 3 for im in images):
            raise ValueError("PatchDataset: argument 'images' must be a folder or a non-empty list of (C, H, W) or "
                             "(1, C, H, W) tensors")
        if int(patch_size) < 1 or any(min(im.shape[-2:]) < patch_size for im in images):
            small = min(min(im.shape[-2:]) for im in images)
            raise ValueError(f"PatchDataset: argument 'patch_size' must be between 1 and the smallest image side "
                             f"({small}), got {patch_size}")
        if len({im.shape[0] for im in images}) != 1:
            raise ValueError("PatchDataset: all images must have the same number of channels")
        if sigma is not None:
            low, high = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else map(float, sigma)
            if not 0 <= low <= high < float("inf"):
                raise ValueError(f"PatchDataset: argument 'sigma' must be >= 0 or a pair 0 <= min <= max, got {sigma}")
            sigma = (low, high)
        if int(length) < 1:
            raise ValueError(f"PatchDataset: argument 'length' must be positive, got {length}")
        if augment not in (True, False, "flip"):
            raise ValueError(f"PatchDataset: argument 'augment' must be True, False or 'flip', got {augment!r}")
        self.images = [im.float().contiguous() for im in images]
        self.patch_size, self.sigma, self.augment = int(patch_size), sigma, augment
        self.length, self.seed, self.transform = int(length), int(seed), transform
        self._areas = torch.tensor([float(im.shape[-1] * im.shape[-2]) for im in self.images])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"PatchDataset: index {index} out of range for length {self.length}")
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index % self.length) % (2 ** 63))
        image = self.images[int(torch.multinomial(self._areas, 1, generator=generator))]
        p = self.patch_size
        i = int(torch.randint(image.shape[-2] - p + 1, (1,), generator=generator))
        j = int(torch.randint(image.shape[-1] - p + 1, (1,), generator=generator))
        crop = image[:, i:i + p, j:j + p]
        if self.augment is True:
            crop = torch.rot90(crop, int(torch.randint(4, (1,), generator=generator)), dims=(-2, -1))
        if self.augment and bool(torch.randint(2, (1,), generator=generator)):
            crop = crop.flip(-1)
        item = {"clean": crop.contiguous()}
        if self.sigma is not None:
            low, high = self.sigma
            sigma = low + (high - low) * torch.rand((), generator=generator)
            item["sigma"] = sigma
            item["noisy"] = crop + sigma * torch.randn(crop.shape, generator=generator)
        if self.transform is not None:
            item = self.transform(item, generator)
        return item


def save_folder_atomically(folder, write) -> None:
    """Call write(temporary_folder) on a fresh folder next to `folder`, then swap it in by renames: an existing
    folder is replaced only once the new one is complete, and a failure leaves it untouched."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        write(temporary)
        for path in [temporary, *temporary.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
            os.replace(folder, old / folder.name)
        os.replace(temporary, folder)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
