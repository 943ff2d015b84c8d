"""Put Fashion-MNIST where ``torchvision.datasets.FashionMNIST`` finds it.

torchvision (0.29) looks for the *decompressed* idx files in
``ROOT/FashionMNIST/raw/`` and only checks that they exist, so a local copy
(e.g. from the Debian package ``dataset-fashion-mnist``) can be decompressed
there and then loaded with ``download=False`` without any network access.

Usage::

    python tools/get_data.py --root data/fashion [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
from pathlib import Path

DEBIAN_SOURCE = Path("/usr/share/datasets/fashion-mnist")
RAW_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Magic numbers of idx files: 0x0803 = uint8 3-d (images), 0x0801 = uint8 1-d (labels).
_MAGIC = {"images-idx3": 2051, "labels-idx1": 2049}


def raw_folder(root: Path) -> Path:
    """Return the folder torchvision's FashionMNIST reads raw idx files from.

    Args:
        root: Dataset root passed to ``FashionMNIST(root, ...)``.

    Returns:
        ``root / "FashionMNIST" / "raw"``.
    """
    return Path(root) / "FashionMNIST" / "raw"


def is_present(root: Path) -> bool:
    """Tell whether all four decompressed idx files exist under ``root``.

    Args:
        root: Dataset root.

    Returns:
        True when torchvision's existence check would pass.
    """
    raw = raw_folder(root)
    return all((raw / name).is_file() for name in RAW_NAMES)


def _source_file(source: Path, name: str) -> Path | None:
    """Find ``name`` in ``source`` either gzipped or plain."""
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    return None


def _check_magic(path: Path, name: str) -> None:
    """Raise ValueError when ``path`` does not start with the idx magic for ``name``."""
    expected = next(magic for key, magic in _MAGIC.items() if key in name)
    with path.open("rb") as handle:
        magic = int.from_bytes(handle.read(4), "big")
    if magic != expected:
        raise ValueError(f"{path}: idx magic {magic}, expected {expected}")


def _copy_decompressed(src: Path, dst: Path, name: str) -> None:
    """Decompress (or copy) ``src`` to ``dst`` atomically.

    Writing to a temporary name first means an interrupted run never leaves a
    truncated file that the existence check would accept.
    """
    tmp = dst.with_name(dst.name + ".part")
    opener = gzip.open if src.suffix == ".gz" else open
    try:
        with opener(src, "rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 20)
        _check_magic(tmp, name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)


def _download(root: Path) -> None:
    """Download through torchvision (both splits share one raw folder)."""
    from torchvision.datasets import FashionMNIST  # Imported lazily: slow, only needed here.

    FashionMNIST(str(root), train=True, download=True)


def ensure_fashion_mnist(root: Path, source: Path | None = None) -> str:
    """Make Fashion-MNIST loadable with ``FashionMNIST(root, download=False)``.

    Args:
        root: Dataset root (the files go to ``root/FashionMNIST/raw``).
        source: Folder holding the four idx files (``.gz`` or plain). When
            None, the Debian copy in ``/usr/share/datasets/fashion-mnist`` is
            used if complete, otherwise the data is downloaded.

    Returns:
        A one-line message saying what was done.

    Raises:
        FileNotFoundError: When an explicit ``source`` lacks some idx file.
    """
    root = Path(root)
    raw = raw_folder(root)
    if is_present(root):
        return f"fashion-mnist: already present in {raw}"
    explicit = source is not None
    source = Path(source) if explicit else DEBIAN_SOURCE
    found = {name: _source_file(source, name) for name in RAW_NAMES}
    missing = [name for name, path in found.items() if path is None]
    if missing and explicit:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)} (.gz or plain)")
    if missing:
        _download(root)
        return f"fashion-mnist: downloaded to {raw}"
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        assert path is not None  # For type checkers: missing is empty here.
        _copy_decompressed(path, raw / name, name)
    return f"fashion-mnist: copied from {source} to {raw}"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/fashion"), help="dataset root")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help=f"folder with the idx(.gz) files (default: {DEBIAN_SOURCE} if present, else download)",
    )
    args = parser.parse_args(argv)
    print(ensure_fashion_mnist(args.root, args.source))


if __name__ == "__main__":
    main()
