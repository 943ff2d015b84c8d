"""Image files: discovery, integrity checks, decoding and conversion to tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from amalgam.errors import AmalgamError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder``, sorted (so sample order never depends on the file system)."""
    if not folder.is_dir():
        raise AmalgamError(f"image folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def verify_image(path: Path, modes: tuple[str, ...] | None = None, what: str = "image") -> None:
    """Fails with the file's name if it is not a readable image (or not of one of ``modes``)."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AmalgamError(f"corrupt {what} {path}: {exc}") from None
    if modes is not None and mode not in modes:
        raise AmalgamError(f"{what} {path} has PIL mode {mode}, expected one of {', '.join(modes)}")


def read_rgb(path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB array (grey and palette images are converted)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise AmalgamError(f"corrupt image {path}: {exc}") from None


def read_array(path: Path) -> np.ndarray:
    """The raw pixel values of a single-channel PNG (uint8 labels, uint16 depth)."""
    with Image.open(path) as img:
        return np.array(img)


def pil_to_rgb(img) -> np.ndarray:
    """A PIL image (or array) from a third-party dataset as ``H x W x 3`` uint8."""
    if isinstance(img, torch.Tensor):
        img = img.numpy()
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    return np.asarray(img.convert("RGB"))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``[3, H, W]`` float in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)
