"""tools/zoo_manifest.py: a folder of shipped weights checked against its sha256 manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from zoo_manifest import check, install, main, read_manifest, write


def test_check_catches_changed_missing_and_unlisted_files(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "weights"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "one.pt").write_bytes(b"one")
    (folder / "two.ts").write_bytes(b"two")
    (folder / "MANIFEST").write_text("# regenerate: make it\n")
    write(folder)
    assert read_manifest(folder)[0] == ["# regenerate: make it"]
    assert check(folder) == [] and main(["--check", str(folder)]) == 0

    (folder / "a" / "one.pt").write_bytes(b"One")  # same size, other bytes
    (folder / "three.pt").write_bytes(b"3")
    shutil.move(folder / "two.ts", tmp_path / "two.ts")
    assert check(folder) == [
        "a/one.pt: sha256 differs from the manifest",
        "two.ts: missing",
        "three.pt: not in the manifest",
    ]
    assert main(["--check", str(folder)]) == 1
    assert "regenerate with the command" in capsys.readouterr().err


def test_malformed_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "MANIFEST").write_text("# ok\nnot a line\n")
    with pytest.raises(ValueError, match="MANIFEST:2"):
        read_manifest(tmp_path)


def test_install_copies_only_what_is_absent(tmp_path: Path, capsys) -> None:
    folder, dest = tmp_path / "weights", tmp_path / "zoo"
    (folder / "q").mkdir(parents=True)
    (folder / "q" / "a.pt").write_bytes(b"a")
    (folder / "q" / "b.ts").write_bytes(b"b")
    write(folder)
    (dest / "q").mkdir(parents=True)
    (dest / "q" / "b.ts").write_bytes(b"retrained")  # a user's own file is never overwritten
    assert install(folder, dest) == (["q/a.pt"], ["q/b.ts"], [])
    assert (dest / "q" / "a.pt").read_bytes() == b"a" and (dest / "q" / "b.ts").read_bytes() == b"retrained"
    (folder / "q" / "a.pt").write_bytes(b"A")  # a changed shipped file is not installed; the others are
    (dest / "q" / "a.pt").unlink()
    (dest / "q" / "b.ts").unlink()
    assert main(["--install", str(folder), str(dest)]) == 1 and not (dest / "q" / "a.pt").exists()
    assert (dest / "q" / "b.ts").read_bytes() == b"b"
    assert "not installed (missing or changed): q/a.pt" in capsys.readouterr().err


def test_install_says_a_kept_file_that_is_not_the_shipped_one(tmp_path: Path, capsys) -> None:
    # stop 43 widened the quickstart student's encoder: a checkout's older items-resnet.pt was kept without a word
    folder, dest = tmp_path / "weights", tmp_path / "zoo"
    (folder / "q").mkdir(parents=True)
    (folder / "q" / "a.pt").write_bytes(b"new")
    write(folder)
    (dest / "q").mkdir(parents=True)
    (dest / "q" / "a.pt").write_bytes(b"old")
    assert main(["--install", str(folder), str(dest)]) == 0 and (dest / "q" / "a.pt").read_bytes() == b"old"
    assert "kept, though not the shipped file: q/a.pt (remove it and run make zoo again" in capsys.readouterr().err
