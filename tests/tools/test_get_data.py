"""Tests for tools/get_data.py using tiny fake idx files (no network, no real data)."""

from __future__ import annotations

from pathlib import Path

import get_data
import numpy as np
import pytest
from fake_fashion import fake_glyphs, write_fake_split
from torchvision.datasets import FashionMNIST


@pytest.fixture
def fake_source(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A folder laid out like the Debian package: four gzipped idx files."""
    source = tmp_path / "source"
    train, test = fake_glyphs(10, 3), fake_glyphs(6, 4)
    write_fake_split(source, "train", train, np.arange(10) % 10, gz=True)
    write_fake_split(source, "t10k", test, np.arange(6) % 10, gz=True)
    return source, train, test


def test_copy_path_is_loadable_by_torchvision(tmp_path: Path, fake_source) -> None:
    source, train, test = fake_source
    root = tmp_path / "root"
    message = get_data.ensure_fashion_mnist(root, source)
    assert message == f"fashion-mnist: copied from {source} to {root / 'FashionMNIST' / 'raw'}"
    for is_train, glyphs in ((True, train), (False, test)):
        data = FashionMNIST(str(root), train=is_train, download=False)
        assert len(data) == len(glyphs)
        np.testing.assert_array_equal(data.data.numpy(), glyphs)
        np.testing.assert_array_equal(data.targets.numpy(), np.arange(len(glyphs)) % 10)
    assert not list((root / "FashionMNIST" / "raw").glob("*.part"))


def test_idempotent(tmp_path: Path, fake_source) -> None:
    source, _, _ = fake_source
    root = tmp_path / "root"
    get_data.ensure_fashion_mnist(root, source)
    raw = root / "FashionMNIST" / "raw"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in raw.iterdir()}
    assert get_data.ensure_fashion_mnist(root, source) == f"fashion-mnist: already present in {raw}"
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in raw.iterdir()} == before


def test_explicit_source_missing_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_data, "_download", lambda root: pytest.fail("must not download"))
    with pytest.raises(FileNotFoundError):
        get_data.ensure_fashion_mnist(tmp_path / "root", tmp_path / "nowhere")


def test_falls_back_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(get_data, "DEBIAN_SOURCE", tmp_path / "no-debian-copy")
    monkeypatch.setattr(get_data, "_download", calls.append)
    root = tmp_path / "root"
    assert get_data.ensure_fashion_mnist(root) == f"fashion-mnist: downloaded to {root / 'FashionMNIST' / 'raw'}"
    assert calls == [root]


def test_bad_file_is_rejected(tmp_path: Path, fake_source) -> None:
    source, _, _ = fake_source
    (source / "train-labels-idx1-ubyte.gz").unlink()
    (source / "train-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="magic"):
        get_data.ensure_fashion_mnist(tmp_path / "root", source)
    assert not get_data.is_present(tmp_path / "root")
    assert not list((tmp_path / "root" / "FashionMNIST" / "raw").glob("*.part"))


@pytest.mark.skipif(not get_data.DEBIAN_SOURCE.is_dir(), reason="Debian fashion-mnist package not installed")
def test_debian_copy(tmp_path: Path) -> None:
    message = get_data.ensure_fashion_mnist(tmp_path)
    assert message.startswith(f"fashion-mnist: copied from {get_data.DEBIAN_SOURCE}")
    data = FashionMNIST(str(tmp_path), train=False, download=False)
    assert tuple(data.data.shape) == (10000, 28, 28)
